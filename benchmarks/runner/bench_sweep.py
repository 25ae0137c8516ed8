"""Sweep overhead per trial: `algoperf sweep` (local executor) vs the same trials run directly.

Both providers run the same N short `digits` trials as separate `python -m algoperf run`
processes, one after another: `direct` is a shell loop over the job list's command lines (the
unavoidable cost), `sweep_local` is `algoperf sweep run` (grid expansion, job list, status
reads, process management, the summary table). The difference divided by N is the sweep's
overhead per trial; target < 1 s. Each `algoperf run` process itself costs ~3-6 s here (Python
+ torch import, workload setup, 5 steps, 2 evals): that start-up is the trial's, not the sweep's.

The SLURM latency (sbatch returning -> the array task's first log line, on the localhost test
cluster of tests/sweep/slurm_cluster.py) is recorded in `report`, not targeted; it is skipped
where the SLURM packages are absent.

    python -m algoperf bench --suite sweep
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from _harness import quick, rounds

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUB = os.path.join(REPO, 'submissions', 'baselines', 'nadamw', 'submission.py')
SPACE = os.path.join(REPO, 'submissions', 'baselines', 'nadamw', 'tuning_search_space.json')
RUN_FLAGS = ['--max_global_steps=5', '--noprogress', '--nouse_tensorboard', '--nosave_checkpoints']


def _trials() -> int:
    return 2 if quick() else 4


def _sweep_argv(root):
    return [sys.executable, '-m', 'algoperf', 'sweep', 'run', f'--submission_path={SUB}', f'--experiment_dir={root}',
            f'--tuning_search_space={SPACE}', '--workloads=digits', '--num_studies=1',
            f'--num_tuning_trials={_trials()}', '--', *RUN_FLAGS]


def _sweep_local():
    root = tempfile.mkdtemp(prefix='bench-sweep-')
    try:
        subprocess.run(_sweep_argv(root), cwd=REPO, check=True, capture_output=True)
    finally:
        shutil.rmtree(root)


def _direct():
    from algoperf.sweep import grid  # noqa: PLC0415

    root = tempfile.mkdtemp(prefix='bench-direct-')
    try:
        config = grid.SweepConfig(submission_path=SUB, experiment_dir=root, submission_name='nadamw',
                                  tuning_search_space=SPACE, workloads=('digits',), num_studies=1,
                                  num_tuning_trials=_trials(), run_flags=tuple(RUN_FLAGS))
        for job in grid.expand(config):
            subprocess.run([sys.executable, '-m', 'algoperf', 'run', *job.argv], cwd=REPO, check=True,
                           capture_output=True)
    finally:
        shutil.rmtree(root)


PROVIDERS = {'sweep_local': _sweep_local, 'direct': _direct}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_sweep_overhead(benchmark, provider):
    benchmark.group = f'{_trials()} digits trials (5 steps each), one after another'
    benchmark.extra_info.update(device='cpu', items=_trials(), item_unit='trial', peer='direct')
    benchmark.pedantic(PROVIDERS[provider], rounds=rounds(3), iterations=1, warmup_rounds=0)


def test_slurm_submit_to_start_latency(benchmark):
    sys.path.insert(0, REPO)
    from tests.sweep.slurm_cluster import LocalSlurm, missing_reason  # noqa: PLC0415

    if missing_reason():
        pytest.skip(missing_reason())
    cluster_root = tempfile.mkdtemp(prefix='slurm-', dir='/tmp')
    cluster = LocalSlurm(cluster_root).start()
    latencies = []

    def submit_and_wait():
        root = tempfile.mkdtemp(prefix='bench-slurm-')
        env = {**cluster.env, 'PYTHONPATH': REPO}
        argv = _sweep_argv(root)
        argv[argv.index('--'):argv.index('--')] = ['--executor=slurm']
        argv[argv.index(f'--num_tuning_trials={_trials()}')] = '--num_tuning_trials=1'
        t0 = time.time()
        subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
        log = os.path.join(root, 'nadamw', '.sweep', 'logs', 'job_0.log')
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(log) and ' at ' in open(log).read():
                line = next(li for li in open(log) if li.startswith('[sweep] array task 0 start'))
                latencies.append(float(line.rsplit(' at ', 1)[1]) - t0)
                break
            time.sleep(0.05)
        subprocess.run(['scancel', '--full', '-u', 'root'], env=cluster.env, check=False)
        shutil.rmtree(root, ignore_errors=True)

    try:
        benchmark.group = 'SLURM (localhost cluster): sbatch -> array task start'
        benchmark.extra_info.update(device='cpu')
        benchmark.pedantic(submit_and_wait, rounds=rounds(3), iterations=1, warmup_rounds=0)
        assert latencies, 'no array task started'
        benchmark.extra_info['report'] = {'submit->start s (median)': f'{sorted(latencies)[len(latencies) // 2]:.2f}'}
    finally:
        cluster.stop()
        shutil.rmtree(cluster_root, ignore_errors=True)
