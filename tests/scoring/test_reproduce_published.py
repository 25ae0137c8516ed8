"""The published AlgoPerf v0.5 leaderboard scores, reproduced from the real logs.

tests/scoring/data/algoperf_v05_extract.tar.gz is a compact extract of the v0.5 logs
(scripts/make_scoring_extract.py: only the rows and columns the scores depend on), scored
here with upstream's frozen targets file shipped beside it. Where the full logs are
present, the extract is also checked against them, so a change to the extraction cannot
quietly change what these tests mean.
"""

import os
import pathlib
import tarfile

import pandas as pd
import pytest

from scoring import score, targets

DATA = pathlib.Path(__file__).parent / 'data'
ARCHIVE = DATA / 'algoperf_v05_extract.tar.gz'
TARGETS_JSON = DATA / 'workload_targets_v05.json'
HELD_OUT_JSON = DATA / 'held_out_workloads_algoperf_v05.json'
# The full logs (upstream's submissions_algorithms logs, ~140 MB); most users do not have them.
# Default: the `shared/` folder beside this checkout (where CI has it).
_DEFAULT_LOGS = pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'algoperf_logs'
REAL_LOGS = pathlib.Path(os.environ.get('ALGOPERF_LOGS_DIR', _DEFAULT_LOGS)) / 'algoperf_v05'

RULESETS = {'external_tuning': False, 'self_tuning': True}  # ruleset -> self_tuning flag
# v0.5 ran 5 studies per workload (the scorer's default of 3 is upstream's later value).
NUM_STUDIES = 5

# Published scores: MLCommons AlgoPerf leaderboard v0.5 (the first competition, announced
# 2024-08), github.com/mlcommons/submissions_algorithms,
# previous_leaderboards/algoperf_v05/README.md.
PUBLISHED = {
    'external_tuning': {
        'shampoo_submission': 0.7784,
        'schedule_free_adamw': 0.7077,
        'generalized_adam': 0.6383,
        'cyclic_lr': 0.6301,
        'nadamp': 0.5909,
        'baseline': 0.5707,
        'amos': 0.4918,
        'caspr_adaptive': 0.4722,
        'lawa_queue': 0.3699,
        'lawa_ema': 0.3384,
        'schedule_free_prodigy': 0.0,
    },
    'self_tuning': {
        'schedule_free_adamw': 0.8542,
        'baseline': 0.8194,
        'nadamw_sequential': 0.3308,
        'sinv6_75': 0.1420,
        'sinv6': 0.0903,
        'adamg': 0.0,
    },
}


@pytest.fixture(scope='module')
def v05_targets():
    return targets.from_json(str(TARGETS_JSON))


@pytest.fixture(scope='module')
def extract_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('algoperf_v05_extract')
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter='data')
    return root / 'algoperf_v05'


@pytest.fixture(scope='module')
def extract_results(extract_dir, v05_targets):
    """ruleset -> ScoreResult on the extract (scored once for all tests of this module)."""
    return {
        ruleset: score.score_tree(
            str(extract_dir / ruleset),
            v05_targets,
            self_tuning=self_tuning,
            num_studies=NUM_STUDIES,
        )
        for ruleset, self_tuning in RULESETS.items()
    }


def test_shipped_targets_match_held_out_list(v05_targets):
    # The scorer takes the held-out workloads from the targets JSON; the separate upstream
    # list must agree, or the published numbers would be reproduced against the wrong rule.
    assert sorted(v05_targets.held_out_workloads) == sorted(
        targets.read_held_out(str(HELD_OUT_JSON))
    )
    assert len(v05_targets.base_workloads) == 8


@pytest.mark.parametrize('ruleset', sorted(RULESETS))
def test_scores_every_published_submission(extract_results, ruleset):
    assert sorted(extract_results[ruleset].scores.index) == sorted(PUBLISHED[ruleset])


@pytest.mark.parametrize(
    'ruleset,submission,published',
    [(r, s, p) for r, table in PUBLISHED.items() for s, p in table.items()],
)
def test_reproduces_published_score(extract_results, ruleset, submission, published):
    assert round(extract_results[ruleset].scores[submission], 4) == published


@pytest.fixture(scope='module')
def real_results(v05_targets):
    if not REAL_LOGS.is_dir():
        pytest.skip(f'{REAL_LOGS} not present (the full v0.5 logs are not shipped)')
    return {
        ruleset: score.score_tree(
            str(REAL_LOGS / ruleset), v05_targets, self_tuning=self_tuning, num_studies=NUM_STUDIES
        )
        for ruleset, self_tuning in RULESETS.items()
    }


@pytest.mark.parametrize('ruleset', sorted(RULESETS))
def test_extract_agrees_with_real_logs(extract_results, real_results, ruleset, v05_targets):
    ext, real = extract_results[ruleset], real_results[ruleset]
    pd.testing.assert_series_equal(ext.scores, real.scores, check_exact=True)
    # The real tree also holds unscored variant dirs (e.g. wmt_post_ln), which the extract
    # leaves out; on the scored workloads the times-to-target, inf and NaN included, match.
    scored = set(v05_targets.base_workloads) | set(v05_targets.held_out_workloads)
    assert set(ext.times.columns) == scored & set(real.times.columns)
    pd.testing.assert_frame_equal(ext.times, real.times[ext.times.columns], check_exact=True)
    pd.testing.assert_frame_equal(ext.gated, real.gated, check_exact=True)
    # Same missing studies and trials, so the same count warnings.
    assert ext.warnings == real.warnings
