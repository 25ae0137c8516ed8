"""Scoring a leaderboard tree: our csv-module loader vs upstream's pandas-per-file loading.

Data: the real v0.5 external-tuning tree (11 submissions, 4,582 trial dirs, 3,700 eval
files) when `../shared/algoperf_logs` (or $ALGOPERF_LOGS_DIR) exists; otherwise the
compact extract shipped with the tests. Both providers then run the same scoring rules,
so the ratio isolates the loading strategy; both must give identical scores.

    python -m algoperf bench --suite score_tree

Peer (the report's "vs" column): ``upstream_pandas_read_csv``.
"""

import os
import tarfile

import pandas as pd
import pytest
from _harness import rounds

from scoring import logs, score, targets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, 'tests', 'scoring', 'data')
REAL = os.path.join(os.environ.get('ALGOPERF_LOGS_DIR', os.path.join(ROOT, '..', 'shared', 'algoperf_logs')),
                    'algoperf_v05', 'external_tuning')


@pytest.fixture(scope='module')
def tree_dir(tmp_path_factory):
    if os.path.isdir(REAL):
        return REAL
    out = tmp_path_factory.mktemp('extract')
    with tarfile.open(os.path.join(DATA, 'algoperf_v05_extract.tar.gz')) as tar:
        tar.extractall(out, filter='data')
    return str(out / 'external_tuning')


@pytest.fixture(scope='module')
def v05_targets():
    return targets.from_json(os.path.join(DATA, 'workload_targets_v05.json'))


def _pandas_read(path, usecols=None):
    """Upstream's way: pandas.read_csv of the whole file, every column to numpy."""
    df = pd.read_csv(path)
    return {c: df[c].to_numpy(dtype=float) for c in df.columns}


@pytest.mark.parametrize('provider', ['ours_csv_module', 'upstream_pandas_read_csv'])
def test_score_v05_external_tree(benchmark, provider, tree_dir, v05_targets, monkeypatch):
    if provider == 'upstream_pandas_read_csv':
        monkeypatch.setattr(logs, 'read_eval_csv', _pandas_read)
    benchmark.group = 'score v0.5 external tree'
    benchmark.extra_info['tree'] = 'real' if tree_dir == REAL else 'extract'
    benchmark.extra_info['peer'] = 'upstream_pandas_read_csv'
    result = benchmark.pedantic(lambda: score.score_tree(tree_dir, v05_targets, num_studies=5),
                                rounds=rounds(3), warmup_rounds=1)
    assert round(result.scores['shampoo_submission'], 4) == 0.7784
    assert round(result.scores['lawa_ema'], 4) == 0.3384
