"""Issue 18 case 4: one rank raising under torchrun (gloo, CPU) ends every rank, and
result.json records that rank's real error, not gloo's "Connection closed by peer"."""

import json
import os
import subprocess
import sys

import pytest

RAISING = '''
import torch.distributed as dist
from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection, get_batch_size, init_optimizer_state, prepare_for_eval)
from submissions.baselines.nadamw.submission import update_params as _update_params


def update_params(**kwargs):
    if dist.get_rank() == 1 and kwargs['global_step'] == 3:
        raise ValueError('boom')
    return _update_params(**kwargs)
'''

POINT = {'learning_rate': 1e-3, 'one_minus_beta1': 0.1, 'beta2': 0.999, 'weight_decay': 0.0,
         'warmup_factor': 0.0, 'dropout_rate': 0.0, 'label_smoothing': 0.0}


@pytest.mark.slow
def test_rank_raising_ends_all_ranks_with_its_error_recorded(tmp_path):
    sub = tmp_path / 'raising.py'
    sub.write_text(RAISING)
    space = tmp_path / 'space.json'
    space.write_text(json.dumps([POINT, POINT]))  # Two trials: the second cannot run.
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'algoperf',
         'run', '--workload=digits', f'--submission_path={sub}', f'--tuning_search_space={space}',
         '--num_tuning_trials=2', f'--experiment_dir={tmp_path}', '--experiment_name=exp', '--rng_seed=1',
         '--max_global_steps=20', '--noprogress'],
        capture_output=True, text=True, timeout=120, env=env,  # Deadlocked before the fix.
    )
    assert proc.returncode != 0
    trial = tmp_path / 'exp' / 'digits_pytorch' / 'trial_1'
    result = json.loads((trial / 'result.json').read_text())
    assert result['status'] == 'failed'
    assert result['error'] == 'rank 1: ValueError: boom', result['error']
    # What rank 0 reached: steps 0..2 completed, the eval after step 1 logged.
    assert result['global_step'] == 3 and result['num_evals'] >= 1
    assert result['accumulated_submission_time'] > 0
    assert not (tmp_path / 'exp' / 'digits_pytorch' / 'trial_2').exists()
    assert 'Not running trial_2: the process group is unusable' in proc.stderr
    assert not [p.name for p in trial.iterdir() if '.tmp.' in p.name]
