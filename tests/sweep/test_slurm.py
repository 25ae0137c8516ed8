"""A sweep as a real SLURM job array on a localhost cluster: array, requeue mid-run, status, score."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from tests.sweep.slurm_cluster import LocalSlurm, missing_reason

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SUB = os.path.join(REPO, 'tests', 'data', 'submissions', 'slow_steps.py')
SPACE = os.path.join(REPO, 'submissions', 'baselines', 'nadamw', 'tuning_search_space.json')

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))]


@pytest.fixture(scope='module')
def cluster():
    root = tempfile.mkdtemp(prefix='slurm-', dir='/tmp')  # munge's socket path must stay short.
    slurm = LocalSlurm(root).start()
    yield slurm
    slurm.stop()


def algoperf(cluster, *args, timeout=120):
    env = {**cluster.env, 'ALGOPERF_TEST_STEP_SLEEP': '0.03', 'PYTHONPATH': REPO}
    return subprocess.run([sys.executable, '-m', 'algoperf', *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f'timed out waiting for {what}')


def test_array_job_with_a_requeued_task_finishes_and_scores(cluster, tmp_path):
    root = tmp_path / 'slow_steps_sub'
    proc = algoperf(cluster, 'sweep', 'run', f'--submission_path={SUB}', f'--experiment_dir={tmp_path}',
                    '--submission_name=slow_steps_sub', f'--tuning_search_space={SPACE}', '--workloads=digits',
                    '--num_studies=1', '--num_tuning_trials=3', '--executor=slurm', '--time=00:20:00',
                    '--sbatch_extra=--comment=algoperf-test', '--', '--max_global_steps=300', '--noprogress')
    assert proc.returncode == 0, proc.stderr
    job_id = (root / '.sweep' / 'slurm_job_id').read_text().strip()
    script = (root / '.sweep' / 'sweep.sbatch').read_text()
    assert '#SBATCH --array=0-2' in script and '#SBATCH --requeue' in script and '--comment=algoperf-test' in script

    # Interrupt task 0 once it has checkpointed, before it finishes: SLURM requeues it.
    trial_1 = tmp_path / 'slow_steps_sub' / 'study_0' / 'digits_pytorch' / 'trial_1'
    wait_for(lambda: len(glob.glob(str(trial_1 / 'checkpoint_*'))) >= 2, 240, 'task 0 to checkpoint')
    assert not (trial_1 / 'result.json').exists(), 'task 0 finished before it could be interrupted'
    status = algoperf(cluster, 'sweep', 'status', str(root)).stdout
    assert status.splitlines()[0].split()[1:3] == ['done', 'running'] and status.splitlines()[1].split()[2] != '0'
    cluster.scontrol('requeue', f'{job_id}_0')
    before = max(int(p.rsplit('_', 1)[1]) for p in glob.glob(str(trial_1 / 'checkpoint_*')) if p[-1].isdigit())
    time.sleep(2)
    cluster.scontrol('update', f'jobid={job_id}_0', 'StartTime=now')  # Skip SLURM's requeue delay.

    def all_done():
        out = algoperf(cluster, 'sweep', 'status', str(root)).stdout
        return out.splitlines()[-1].split()[1:2] == ['3']
    wait_for(all_done, 400, 'all three tasks to finish')

    result = json.loads((trial_1 / 'result.json').read_text())
    # The budget (digits: 20 s) may end it before step 300 on a loaded machine.
    assert result['status'] in ('max_global_steps', 'budget_exhausted'), result
    assert result['preemption_count'] >= 1 and result['error'] is None and result['global_step'] > before
    assert (trial_1 / 'meta_data_1.json').exists()  # Written by the resumed run.
    log = (root / '.sweep' / 'logs' / 'job_0.log').read_text()
    assert log.count('[sweep] array task 0 start') == 2
    for k in (2, 3):
        assert json.loads((root / 'study_0' / 'digits_pytorch' / f'trial_{k}' / 'result.json').read_text())[
            'preemption_count'] == 0
    scored = algoperf(cluster, 'sweep', 'score', str(root), f'--output_dir={tmp_path / "scores"}', '--no_plots')
    assert scored.returncode == 0, scored.stderr
    assert (tmp_path / 'scores').is_dir() and os.listdir(tmp_path / 'scores')
