"""`torchrun --nproc_per_node=2 -m algoperf run ...` on CPU (gloo)."""

import json
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

BASELINE = 'submissions/baselines/nadamw/submission.py'


def _flags(tmp_path, name):
    return [
        'run',
        '--workload=digits',
        f'--submission_path={BASELINE}',
        '--tuning_ruleset=self',
        f'--experiment_dir={tmp_path}',
        f'--experiment_name={name}',
        '--rng_seed=11',
        '--max_global_steps=25',
        '--save_checkpoints=false',
        '--skip_evals=false',
        '--noprogress',
    ]


def _final_eval(tmp_path, name):
    d = tmp_path / name / 'digits_pytorch' / 'trial_1'
    evals = pd.read_csv(d / 'eval_measurements.csv')
    return d, evals.iloc[-1]


def test_two_rank_gloo_ddp_matches_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    ddp = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc_per_node=2',
            '-m',
            'algoperf',
            *_flags(tmp_path, 'ddp'),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, '-m', 'algoperf', *_flags(tmp_path, 'single')],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    d, ddp_row = _final_eval(tmp_path, 'ddp')
    _, single_row = _final_eval(tmp_path, 'single')
    assert ddp_row['global_step'] == single_row['global_step'] == 25
    # Same global batches, same init; only float summation order differs (2 shards of 32
    # vs one of 64 per step), which over 25 Adam steps stays far below 1e-4.
    for key in ('train/loss', 'validation/loss', 'test/loss'):
        assert ddp_row[key] == pytest.approx(single_row[key], rel=1e-4), key
    assert json.loads((d / 'result.json').read_text())['status'] == 'max_global_steps'
    # Only rank 0 wrote: one trial dir, one meta_data, at most one TensorBoard file, no leftover temp files.
    names = sorted(p.name for p in d.iterdir())
    assert len([n for n in names if n.startswith('events.out.tfevents.')]) <= 1
    assert [n for n in names if not n.startswith('events.out.tfevents.')] == [
        'eval_measurements.csv',
        'flags_0.json',
        'measurements.csv',
        'meta_data_0.json',
        'result.json',
    ]
    assert 'Joined gloo process group: rank 0 of 2' in ddp.stderr


def test_two_rank_gloo_shampoo_with_distributed_roots_matches_single_process(tmp_path):
    # The entry's point 1 with roots every 5 steps, so 25 steps use 5 root updates, each
    # split over the 2 ranks (distribute_roots is on under DDP) and all-gathered.
    points = json.loads(pathlib.Path('submissions/shampoo/tuning_search_space.json').read_text())
    space = tmp_path / 'space.json'
    space.write_text(json.dumps([dict(points[0], precondition_frequency=5)]))
    flags = [
        f
        if not f.startswith('--submission_path')
        else '--submission_path=submissions/shampoo/submission.py'
        for f in _flags(tmp_path, 'NAME')
        if f != '--tuning_ruleset=self'
    ] + ['--tuning_ruleset=external', f'--tuning_search_space={space}', '--num_tuning_trials=1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    runs = {}
    for name, launcher in (
        ('ddp', ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']),
        ('single', []),
    ):
        argv = [
            sys.executable,
            *launcher,
            '-m',
            'algoperf',
            *[f.replace('NAME', name) for f in flags],
        ]
        runs[name] = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    _, ddp_row = _final_eval(tmp_path, 'ddp')
    _, single_row = _final_eval(tmp_path, 'single')
    assert ddp_row['global_step'] == single_row['global_step'] == 25
    for key in ('train/loss', 'validation/loss', 'test/loss'):
        assert ddp_row[key] == pytest.approx(single_row[key], rel=1e-4), key
