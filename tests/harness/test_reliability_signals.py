"""Issue 18 (Deliver, distributed failure / signals): SIGTERM and SIGINT during a trial end it
after the current step with a resumable checkpoint, one line, exit 143 / 130; resuming
continues to exactly the rows an uninterrupted run writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# Runs `algoperf run` on digits with an eval (and checkpoint) after every step, so the rows
# of an interrupted-and-resumed run can be compared one by one with an uninterrupted run.
DRIVER = '''
import dataclasses, sys
from algoperf import cli, registry
from workloads.digits.spec import DIGITS
registry.register(dataclasses.replace(DIGITS, name='digits_every_step', eval_period_time_sec=0), overwrite=True)
sys.exit(cli.main(sys.argv[1:]))
'''

# The baseline, signalling its own process from inside update_params at step KILL_AT: the
# signal lands mid-step at a known step, so the expected stopping point is exact.
SELF_SIGNALLING = '''
import os, signal
from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection, get_batch_size, init_optimizer_state, prepare_for_eval)
from submissions.baselines.nadamw.submission import update_params as _update_params


def update_params(**kwargs):
    if os.environ.get('KILL_AT') == str(kwargs['global_step']):
        os.kill(os.getpid(), getattr(signal, os.environ['KILL_SIGNAL']))
    return _update_params(**kwargs)
'''


def _run(tmp_path, name, *flags, env_extra=None):
    driver, sub = tmp_path / 'driver.py', tmp_path / 'self_signalling.py'
    driver.write_text(DRIVER)
    sub.write_text(SELF_SIGNALLING)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.getcwd(), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(driver), 'run', '--workload=digits_every_step', f'--submission_path={sub}',
         '--tuning_ruleset=self', f'--experiment_dir={tmp_path}', f'--experiment_name={name}', '--rng_seed=5',
         '--max_global_steps=12', '--noprogress', *flags],
        capture_output=True, text=True, timeout=300, env=env,
    )


def _trial(tmp_path, name):
    return tmp_path / name / 'digits_every_step_pytorch' / 'trial_1'


@pytest.mark.parametrize('sig, code', [('SIGTERM', 143), pytest.param('SIGINT', 130, marks=pytest.mark.slow)])
def test_signal_stops_after_the_step_and_resume_matches_uninterrupted(tmp_path, sig, code):
    full = _run(tmp_path, 'full')
    assert full.returncode == 0, full.stderr[-2000:]
    cut = _run(tmp_path, 'cut', env_extra={'KILL_AT': '5', 'KILL_SIGNAL': sig})
    assert cut.returncode == code, cut.stderr[-2000:]
    d = _trial(tmp_path, 'cut')
    # The signal came during the update of step index 5; that step finished (global_step 6).
    lines = [line for line in cut.stderr.splitlines() if line.startswith(f'{sig}:')]
    assert lines == [f'{sig}: trial_1 stopped after step 6; checkpoint {d}/checkpoint_6; '
                     'continue with --resume_last_run.'], cut.stderr[-2000:]
    assert 'Traceback' not in cut.stderr
    result = json.loads((d / 'result.json').read_text())
    assert result['status'] == 'interrupted' and result['global_step'] == 6
    assert (d / 'checkpoint_6').exists() and not [p for p in d.iterdir() if '.tmp.' in p.name]

    resumed = _run(tmp_path, 'cut', '--resume_last_run')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((d / 'result.json').read_text())
    assert result['status'] == 'max_global_steps' and result['global_step'] == 12
    assert result['preemption_count'] == 1
    want = pd.read_csv(_trial(tmp_path, 'full') / 'eval_measurements.csv')
    got = pd.read_csv(d / 'eval_measurements.csv')
    assert got['global_step'].tolist() == list(range(1, 13))
    assert got['preemption_count'].tolist() == [0] * 6 + [1] * 6
    metrics = [c for c in want.columns if c.split('/')[0] in ('train', 'validation', 'test')]
    pd.testing.assert_frame_equal(got[metrics], want[metrics])


@pytest.mark.slow
def test_external_sigterm_to_a_running_cli(tmp_path):
    """A real `python -m algoperf run` process, signalled from outside while it trains."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    argv = [sys.executable, '-m', 'algoperf', 'run', '--workload=digits',
            '--submission_path=submissions/baselines/nadamw/submission.py', '--tuning_ruleset=self',
            f'--experiment_dir={tmp_path}', '--experiment_name=exp', '--rng_seed=0', '--noprogress',
            '--max_global_steps=1000000']
    d = tmp_path / 'exp' / 'digits_pytorch' / 'trial_1'
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(d.glob('checkpoint_*')) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith('SIGTERM: trial_1 stopped after step')]
    assert len(line) == 1 and 'Traceback' not in err
    result = json.loads((d / 'result.json').read_text())
    assert result['status'] == 'interrupted'
    step = result['global_step']
    assert (d / f'checkpoint_{step}').exists()
    resumed = subprocess.run(argv[:-1] + [f'--max_global_steps={step + 5}', '--resume_last_run'],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((d / 'result.json').read_text())
    assert result['global_step'] == step + 5 and result['preemption_count'] == 1
