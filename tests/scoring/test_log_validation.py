"""Eval files are validated when read; a bad one is excluded and never sets a best time (#18).

The poisoned-tree test uses the shipped v0.5 extract: one submission's fastMRI logs get a bad
cell (the values the fault-injection pass used), and every *other* submission's score must
equal its score on the clean tree, computed in the same test. A control edit that is valid
(all of that submission's fastMRI times scaled down) shows the poison sits where it would move
the others if it were read.
"""

import csv
import logging
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest

from scoring import cli, logs, score, targets

DATA = pathlib.Path(__file__).parent / 'data'
VICTIM = 'sinv6'  # Self-tuning v0.5 submission whose fastMRI logs are edited (score 0.0903).


@pytest.fixture(scope='module')
def v05_self_tuning(tmp_path_factory):
    root = tmp_path_factory.mktemp('v05')
    with tarfile.open(DATA / 'algoperf_v05_extract.tar.gz') as tar:
        tar.extractall(root, filter='data')
    return root / 'algoperf_v05' / 'self_tuning'


@pytest.fixture(scope='module')
def v05_targets():
    return targets.from_json(str(DATA / 'workload_targets_v05.json'))


@pytest.fixture(scope='module')
def clean_scores(v05_self_tuning, v05_targets):
    return score.score_tree(str(v05_self_tuning), v05_targets, self_tuning=True, num_studies=5).scores


def _rewrite(path: pathlib.Path, edit) -> None:
    rows = list(csv.reader(path.open(newline='')))
    edit(rows[0], rows[1:])
    with path.open('w', newline='') as f:
        csv.writer(f, lineterminator='\n').writerows(rows)


def _victim_files(tree: pathlib.Path):
    return sorted(tree.glob(f'{VICTIM}/study_*/fastmri_[jp]*/trial_*/{logs.EVAL_CSV}'))


@pytest.mark.parametrize('column,row,value', [
    ('score', -1, '0'),
    ('score', -1, '-3.5'),
    ('score', -1, '-inf'),
    ('score', -1, 'True'),  # Was read as 1.0 s.
    ('score', -1, ''),  # An empty time (NaN).
    ('validation/ssim', 0, 'True'),  # Was read as ssim 1.0: the first eval "reaches" the target.
    ('validation/ssim', 0, 'inf'),
])
def test_poisoned_log_does_not_move_other_scores(tmp_path, v05_self_tuning, v05_targets, clean_scores,
                                                 column, row, value, caplog):
    tree = tmp_path / 'self_tuning'
    shutil.copytree(v05_self_tuning, tree)
    files = _victim_files(tree)
    assert len(files) == 5  # One trial per study (self-tuning), five studies.

    def poison(header, body):
        body[row][header.index(column)] = value

    for path in files:
        _rewrite(path, poison)
    with caplog.at_level(logging.WARNING, logger='scoring'):
        result = score.score_tree(str(tree), v05_targets, self_tuning=True, num_studies=5)
    others = clean_scores.drop(VICTIM)
    pd.testing.assert_series_equal(result.scores.drop(VICTIM), others, check_exact=True)
    # Each poisoned file is excluded, named with its line (header = line 1), in the log and the result.
    excluded = {e.path: e for e in result.load_report.excluded}
    assert sorted(excluded) == [str(p) for p in files]
    for path in files:
        num_rows = sum(1 for _ in path.open()) - 1
        line = (row % num_rows) + 2
        assert excluded[str(path)].line == line
        assert f'{path}: line {line}: {column} = ' in excluded[str(path)].reason
        assert excluded[str(path)].reason in caplog.text
    assert VICTIM in result.scores.index  # Its other workloads still count.


def test_control_valid_edit_does_move_other_scores(tmp_path, v05_self_tuning, v05_targets, clean_scores):
    # The same files with every time divided by 100 pass validation: then the victim is 100x
    # faster on fastMRI and the 4x rule takes fastMRI from the others. So the poisoned cells
    # above would have moved the others had they been read.
    tree = tmp_path / 'self_tuning'
    shutil.copytree(v05_self_tuning, tree)

    def scale(header, body):
        j = header.index('score')
        for r in body:
            r[j] = repr(float(r[j]) / 100)

    for path in _victim_files(tree):
        _rewrite(path, scale)
    result = score.score_tree(str(tree), v05_targets, self_tuning=True, num_studies=5)
    assert result.load_report.excluded == []
    moved = (result.scores.drop(VICTIM) - clean_scores.drop(VICTIM)).abs()
    assert moved.max() > 0.05


# --- one rule per case, on single synthetic files -------------------------------------------------

ACC = targets.Target('imagenet', 'accuracy', 0.5, True)
LOSS = targets.Target('criteo', 'loss', 0.2, False)


def _file(tmp_path, text: str) -> str:
    path = tmp_path / logs.EVAL_CSV
    path.write_text(text)
    return str(path)


def _schema(target=ACC):
    return score.schema_for(targets.Targets({target.workload: target}, (target.workload,)), target.workload)


@pytest.mark.parametrize('text,line,fragment', [
    ('global_step,score,validation/accuracy\n1,10,0.1\n2,True,0.6\n', 3, "score = 'True' is not a number"),
    ('global_step,score,validation/accuracy\n1,10,0.1\n2,20,True\n', 3, "validation/accuracy = 'True' is not a number"),
    ('global_step,score,validation/accuracy\n1,-inf,0.6\n', 2, 'score = -inf is not a finite, positive number'),
    ('global_step,score,validation/accuracy\n1,0,0.6\n', 2, 'score = 0.0 is not a finite, positive number'),
    ('global_step,score,validation/accuracy\n1,10,0.1\n2,,0.6\n', 3, 'score = nan is not a finite'),
    ('global_step,score,validation/accuracy\n-1,10,0.6\n', 2, 'global_step = -1.0 is not a finite, non-negative'),
    ('global_step,score,validation/accuracy\n1,10,0.1\n\n2,5,0.6\n', 4, 'score = 5.0 is below the row above (10.0)'),
    ('global_step,score,validation/accuracy\n5,10,0.1\n2,20,0.6\n', 3, 'global_step = 2.0 is below the row above'),
    ('accumulated_submission_time,global_step,score,validation/accuracy\n10,1,10,0.1\n20,2,12,0.6\n', 3,
     'score = 12.0 differs from accumulated_submission_time = 20.0'),
    ('global_step,score,validation/accuracy\n1,10,1.5\n', 2, 'validation/accuracy = 1.5 is outside its possible range'),
    ('global_step,score,validation/accuracy\n1,10,inf\n', 2, 'validation/accuracy = inf is outside'),
    ('global_step,score,validation/loss\n1,10,0.3\n', 1, 'no column validation/accuracy'),
    ('global_step,validation/accuracy\n1,0.6\n', 1, 'no column score'),
    ('global_step,score,score\n1,2,3\n', 1, 'duplicate column names'),
])
def test_bad_file_names_file_and_line(tmp_path, text, line, fragment):
    path = _file(tmp_path, text)
    with pytest.raises(logs.LogFormatError) as info:
        logs.read_eval_csv(path, _schema())
    assert info.value.line == line and info.value.path == path
    assert str(info.value).startswith(f'{path}: ')
    assert fragment in str(info.value)
    if line > 1 or 'no column' not in fragment:
        assert f'line {line}' in str(info.value)


def test_minimised_metric_bounds(tmp_path):
    # -inf loss would "reach" any target: excluded. +inf (an overflowed loss or ppl) is a
    # diverged run: kept, never reaching.
    with pytest.raises(logs.LogFormatError, match=r'validation/loss = -inf is outside'):
        logs.read_eval_csv(_file(tmp_path, 'global_step,score,validation/loss\n1,10,-inf\n'), _schema(LOSS))
    cols = logs.read_eval_csv(_file(tmp_path, 'global_step,score,validation/loss\n1,10,inf\n2,20,0.1\n'),
                              _schema(LOSS))
    assert cols['validation/loss'].tolist() == [math.inf, 0.1]


@pytest.mark.parametrize('cell', ['', 'nan', 'NaN'])
def test_nan_metric_is_kept_as_never_reached(tmp_path, cell):
    cols = logs.read_eval_csv(_file(tmp_path, f'global_step,score,validation/accuracy\n1,10,{cell}\n2,20,0.6\n'),
                              _schema())
    assert np.isnan(cols['validation/accuracy'][0]) and cols['score'].tolist() == [10.0, 20.0]


def test_only_needed_columns_are_converted(tmp_path):
    # Text in a column scoring never reads is not its business (train-side strings, paths ...).
    path = _file(tmp_path, 'global_step,note,score,validation/accuracy\n1,hello,10,0.1\n2,True,20,0.6\n')
    assert sorted(logs.read_eval_csv(path, _schema())) == ['global_step', 'score', 'validation/accuracy']


def test_size_cap_excludes_with_a_clear_message(tmp_path):
    path = _file(tmp_path, 'global_step,score,validation/accuracy\n' + '1,10,0.1\n' * 1000)
    size = os.path.getsize(path)
    with pytest.raises(logs.LogFormatError, match=re.escape(f'{path}: 0.0 MB is over the 0.001 MB cap per eval '
                                                            'file (--max_log_mb)')):
        logs.read_eval_csv(path, _schema(), max_bytes=1000)
    assert logs.read_eval_csv(path, _schema(), max_bytes=size)['score'].size == 1000


def _tree_with_one_bad_file(root: pathlib.Path) -> pathlib.Path:
    for sub, time in (('good', 30.0), ('bad', 1.0)):
        d = root / sub / 'study_0' / 'mnist_pytorch' / 'trial_1'
        d.mkdir(parents=True)
        cell = 'True' if sub == 'bad' else time
        (d / logs.EVAL_CSV).write_text(f'global_step,score,validation/accuracy\n1,{cell},0.99\n')
    return root / 'bad' / 'study_0' / 'mnist_pytorch' / 'trial_1' / logs.EVAL_CSV


def test_cli_warns_and_scores_the_rest(tmp_path, capsys, caplog):
    bad = _tree_with_one_bad_file(tmp_path / 'logs')
    out = tmp_path / 'out'
    argv = [f'--submission_directory={tmp_path / "logs"}', f'--output_dir={out}', '--no_plots', '--workloads=mnist',
            '--self_tuning_ruleset', '--num_studies=1']
    with caplog.at_level(logging.WARNING, logger='scoring'):  # stderr outside pytest (basicConfig)
        assert cli.main(argv) == 0
    assert f"{bad}: line 2: score = 'True' is not a number" in caplog.text
    assert '1 eval files excluded as invalid' in capsys.readouterr().out
    assert f"{bad}: line 2" in (out / 'warnings.txt').read_text()
    scores = pd.read_csv(out / 'scores.csv', index_col=0)['score']
    assert scores.to_dict() == {'good': 1.0, 'bad': 0.0}
    # --strict refuses instead: one line naming the file, exit 2.
    assert cli.main(argv + ['--strict']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and '--strict' in err


def test_cli_max_log_mb(tmp_path, capsys, caplog):
    _tree_with_one_bad_file(tmp_path / 'logs')
    argv = [f'--submission_directory={tmp_path / "logs"}', f'--output_dir={tmp_path / "out"}', '--no_plots',
            '--workloads=mnist', '--self_tuning_ruleset', '--num_studies=1']
    with caplog.at_level(logging.WARNING, logger='scoring'):
        assert cli.main(argv + ['--max_log_mb=0.00001']) == 0  # 10 bytes: both files excluded.
    assert caplog.text.count('cap per eval file (--max_log_mb)') == 2
    assert '2 eval files excluded as invalid' in capsys.readouterr().out
    assert cli.main(argv + ['--max_log_mb=-1']) == 2
    assert '--max_log_mb=-1: must be >= 0' in capsys.readouterr().err


_RSS_SCRIPT = r'''
import resource, sys, time
from scoring import logs, score, targets
t = targets.Target('imagenet', 'accuracy', 0.5, True)
schema = score.schema_for(targets.Targets({'imagenet': t}, ('imagenet',)), 'imagenet')
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
cols = logs.read_eval_csv(sys.argv[1], schema, max_bytes=None)
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(cols['score']), before // 1024, after // 1024, round(elapsed, 1))
'''


@pytest.mark.slow
def test_150_mb_file_streams_in_bounded_memory(tmp_path):
    # Upstream's 15 eval columns with long floats: ~270 bytes a row, ~560,000 rows in 150 MB.
    path = tmp_path / logs.EVAL_CSV
    header = ('accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,'
              'preemption_count,score,test/accuracy,test/loss,test/num_examples,total_duration,train/accuracy,'
              'train/loss,validation/accuracy,validation/loss,validation/num_examples\n')
    with path.open('w') as f:
        f.write(header)
        i, size = 0, len(header)
        while size < 150e6:
            t = 12.345678901234567 * (i + 1)
            row = (f'{t / 7:.15f},{t / 90:.15f},{t:.15f},{i + 1},0,{t:.15f},0.{i % 97:015d},1.{i % 89:015d},10000,'
                   f'{t * 1.2:.15f},0.{i % 83:015d},2.{i % 79:015d},0.{i % 71:015d},1.{i % 61:015d},50000\n')
            f.write(row)
            size += len(row)
            i += 1
    proc = subprocess.run([sys.executable, '-c', _RSS_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=600, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    rows, before_mb, peak_mb, _ = proc.stdout.split()
    assert int(rows) == i
    # Four kept columns of float64 (~18 MB at 560k rows, ~2x while arrays grow) over the
    # interpreter's baseline; reading the whole text would add > 1 GB.
    assert int(peak_mb) - int(before_mb) < 200, proc.stdout
