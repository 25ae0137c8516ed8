"""What `algoperf run` prints (issue #16 item 6).

One short line per eval (the full dict only at DEBUG and in the CSV), steps/s and ETA in
the progress bar, `--quiet`, the end-of-run table, and trial counts that agree between
the lines (a list-valued space caps --num_tuning_trials, said once).
"""

import io
import logging
import re

import pandas as pd
import pytest

from algoperf import cli, progress
from algoperf import runtime as runtime_lib
from algoperf.experiment import TrialResult, results_table
from algoperf.progress import Progress, eval_summary, format_duration

BASELINE = 'submissions/baselines/nadamw/submission.py'
SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'  # 5 listed points
EVAL_LINE = re.compile(r'step (\d+)  validation/accuracy [0-9.e-]+ \(target 0\.975(, reached)?\)  '
                       r'[0-9.,]+s / (20|30)s \(\d+%\)$')  # external 20 s, self-tuning 1.5x
# Trial 2 of SPACE (label_smoothing 0.2) fails at its third step; trial 1 trains.
FAILING_SUBMISSION = '''
from submissions.baselines.nadamw.submission import data_selection, get_batch_size, init_optimizer_state
from submissions.baselines.nadamw.submission import update_params as _update_params


def update_params(*args, **kwargs):
    if kwargs['hyperparameters'].label_smoothing == 0.2 and kwargs['global_step'] >= 2:
        raise RuntimeError('boom at step 2: ' + 'a long explanation ' * 10)
    return _update_params(*args, **kwargs)
'''


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """No busy-machine warnings from this shared box in the output under test."""
    monkeypatch.setattr(runtime_lib, 'load_average', lambda: [0.0, 0.0, 0.0])


def _run(tmp_path, capsys, *flags, submission=BASELINE):
    code = cli.main(['run', '--workload=digits', f'--submission_path={submission}', f'--experiment_dir={tmp_path}',
                     '--experiment_name=exp', '--rng_seed=0', '--save_checkpoints=false', '--num_threads=1',
                     *flags])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def _message(line):
    """A log record's text without its '12:00:00 I name] ' prefix."""
    return re.sub(r'^\d\d:\d\d:\d\d [A-Z] [\w.]+\] ', '', line)


# ---- the per-eval line -----------------------------------------------------------------------------
def test_eval_summary_format():
    line = eval_summary(240, 'validation/accuracy', 0.96123, 0.975, False, 12.34, 20)
    assert line == 'step 240  validation/accuracy 0.9612 (target 0.975)  12.3s / 20s (62%)'
    assert eval_summary(3, 'validation/ctc_loss', None, 0.08, False, 0.042, 7200) == (
        'step 3  validation/ctc_loss n/a (target 0.08)  0.04s / 7,200s (0%)')
    assert '(target 0.975, reached)' in eval_summary(9, 'validation/accuracy', 0.98, 0.975, True, 1, 20)


def test_one_short_line_per_eval_and_the_full_dict_at_debug(tmp_path, capsys):
    debug = []

    class Keep(logging.Handler):
        def emit(self, record):
            debug.append(record)

    runner_log = logging.getLogger('algoperf.runner')
    handler, level = Keep(logging.DEBUG), runner_log.level
    runner_log.addHandler(handler)
    runner_log.setLevel(logging.DEBUG)
    try:
        code, err, _ = _run(tmp_path, capsys, '--tuning_ruleset=self', '--max_global_steps=40', '--noprogress')
    finally:
        runner_log.removeHandler(handler)
        runner_log.setLevel(level)
    assert code == 0
    evals = pd.read_csv(tmp_path / 'exp' / 'digits_pytorch' / 'trial_1' / 'eval_measurements.csv')
    short = [_message(line) for line in err if EVAL_LINE.search(_message(line))]
    assert [int(EVAL_LINE.search(m).group(1)) for m in short] == evals['global_step'].tolist()
    infos = [r.getMessage() for r in debug if r.levelno == logging.INFO]
    assert not any("'train/loss'" in m for m in infos)  # no metrics dict at INFO
    full = [r.getMessage() for r in debug if r.levelno == logging.DEBUG and "'train/loss'" in r.getMessage()]
    assert len(full) == len(evals)


# ---- the progress bar ------------------------------------------------------------------------------
def test_progress_shows_steps_per_second_and_eta(monkeypatch):
    clock = iter([100.0, 140.0, 180.0])
    monkeypatch.setattr(progress.time, 'monotonic', lambda: next(clock))
    out = io.StringIO()
    bar = Progress(stream=out)
    bar.start('digits trial 1/1')
    bar.update(10, 1.0, 20.0)  # origin: no interval measured yet
    assert 'steps/s' not in out.getvalue()
    # 100 steps in 10 s of submission time -> 10 steps/s; 40 s of wall per 10 s of it -> x4;
    # 9 s of budget left -> 36 s.
    bar.update(110, 11.0, 20.0)
    assert out.getvalue().splitlines()[-1].endswith('11.0/20s submission time | 10.0 steps/s | ETA 36s')
    # --max_global_steps=130: 20 steps at 10/s = 2 s of submission time, now 80 s of wall per
    # 10 s of it -> 16 s (sooner than the budget's 9 x 8 = 72 s).
    bar.max_steps = 130
    bar.update(110, 11.0, 20.0, force=True)
    assert out.getvalue().splitlines()[-1].endswith('| ETA 16s')


def test_progress_draws_nothing_between_intervals(monkeypatch):
    """Per step (inside the timed interval) update() is one monotonic() call and a compare."""
    bar = Progress(stream=io.StringIO())
    bar.start('x')
    bar.update(1, 0.1, 20.0)
    monkeypatch.setattr(bar, '_line', lambda *a: pytest.fail('formatted a line between intervals'))
    for step in range(2, 50):
        bar.update(step, 0.1 * step, 20.0)


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 425, 3 * 3600 + 12 * 60 + 5, float('inf'))] == [
        '0s', '42s', '7m05s', '3h12m', '?']


# ---- --quiet, the table, trial counts ----------------------------------------------------------------
def test_quiet_prints_only_summaries_table_and_errors(tmp_path, capsys):
    sub = tmp_path / 'failing.py'
    sub.write_text(FAILING_SUBMISSION)
    code, err, out = _run(tmp_path, capsys, f'--tuning_search_space={SPACE}', '--num_tuning_trials=2',
                          '--max_global_steps=4', '--quiet', submission=str(sub))
    assert code == 1  # trial 2 failed
    table_start = next(i for i, line in enumerate(err) if line.startswith('trial  status'))
    before, table = err[:table_start], err[table_start:]
    summaries = [line for line in before if line.startswith('trial_')]
    assert [s.split(':')[0] for s in summaries] == ['trial_1', 'trial_2']
    assert summaries[1].startswith('trial_2: failed after 2 steps') and 'boom at step 2' in summaries[1]
    # Besides the summaries only the failure's error record (with its traceback) may appear.
    others = [line for line in before if line not in summaries]
    assert all(' I ' not in line[:12] for line in others), others
    assert not any('Tuning run' in line or 'Hyperparameters' in line or EVAL_LINE.search(_message(line))
                   or 'submission time |' in line for line in err)
    assert any(' E algoperf.experiment] Trial 2 failed' in line for line in others)
    assert len(table) == 3 and out.startswith('Logs: ')


def test_end_of_run_table_lists_every_trial(tmp_path, capsys):
    sub = tmp_path / 'failing.py'
    sub.write_text(FAILING_SUBMISSION)
    code, err, _ = _run(tmp_path, capsys, f'--tuning_search_space={SPACE}', '--num_tuning_trials=2',
                        '--max_global_steps=4', '--noprogress', submission=str(sub))
    assert code == 1
    start = err.index(next(line for line in err if line.startswith('trial  status')))
    head, rows = err[start], err[start + 1:start + 3]
    assert head.split() == ['trial', 'status', 'steps', 'submission', 's', 'to', 'target', 's', 'error']
    assert rows[0].split()[:3] == ['1', 'max_global_steps', '4'] and rows[0].split()[4] == '-'
    assert rows[1].split()[:3] == ['2', 'failed', '2']
    assert 'RuntimeError: boom at step 2' in rows[1] and rows[1].endswith('…') and len(rows[1]) < 130


def test_results_table_columns():
    rows = [TrialResult(trial=1, trial_dir='t1', status='targets_reached', rng_seed=0, hyperparameters=None,
                        global_step=1234, accumulated_submission_time=12.345, time_to_validation_target=9.8),
            TrialResult(trial=2, trial_dir='t2', status='failed', rng_seed=1, hyperparameters=None,
                        error='ValueError: bad\nsecond line')]
    lines = results_table(rows).splitlines()
    assert lines[1].split() == ['1', 'targets_reached', '1,234', '12.35', '9.80']
    assert lines[2].split() == ['2', 'failed', '0', '0.00', '-', 'ValueError:', 'bad', 'second', 'line']


def test_trial_counts_agree_when_the_list_space_is_shorter(tmp_path, capsys):
    code, err, _ = _run(tmp_path, capsys, f'--tuning_search_space={SPACE}', '--num_tuning_trials=9',
                        '--hparam_end_index=2', '--max_global_steps=2')
    assert code == 0
    said = [line for line in err if 'lists 5 points' in line]
    assert len(said) == 1 and 'running 5 trials, not 9' in said[0] and 'trial(s) 1-2' in said[0]
    assert [line for line in err if line.startswith('--- Tuning run')] == [
        '--- Tuning run 1/5 ---', '--- Tuning run 2/5 ---']
    labels = {m.group(0) for line in err for m in [re.match(r'digits trial \d+/\d+', line)] if m}
    assert labels == {'digits trial 1/5', 'digits trial 2/5'}
    assert not any(re.search(r'\b\d/9\b|/2 ', line) for line in err)
    assert not any('--num_tuning_trials=9 but' in line for line in err)  # said once, not twice


def test_halton_space_counts_are_the_requested_trials(tmp_path, capsys):
    space = tmp_path / 'space.json'
    space.write_text('{"learning_rate": {"min": 1e-3, "max": 1e-2, "scaling": "log"}, '
                     '"one_minus_beta1": {"feasible_points": [0.1]}, "beta2": {"feasible_points": [0.999]}, '
                     '"weight_decay": {"feasible_points": [0.0]}, "warmup_factor": {"feasible_points": [0.05]}, '
                     '"label_smoothing": {"feasible_points": [0.0]}, "dropout_rate": {"feasible_points": [0.0]}}')
    code, err, _ = _run(tmp_path, capsys, f'--tuning_search_space={space}', '--num_tuning_trials=3',
                        '--hparam_start_index=1', '--hparam_end_index=2', '--max_global_steps=2', '--noprogress')
    assert code == 0
    assert [line for line in err if line.startswith('--- Tuning run')] == ['--- Tuning run 2/3 ---']
    assert not any('points; running' in line for line in err)
