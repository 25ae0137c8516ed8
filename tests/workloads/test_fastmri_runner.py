"""A few baseline training steps on the fastMRI h5 fixture through `algoperf run`."""

import json

import pandas as pd

from algoperf import cli
from workloads.fastmri.fixture import write_fastmri_fixture

# Batch 2: a 320 x 320 U-Net step at upstream-like batch 64 takes minutes on two CPU cores.
SUBMISSION = 'tests/data/submissions/tiny_batch_nadamw.py'


def test_baseline_trains_on_the_h5_fixture_through_the_runner(tmp_path):
    data = tmp_path / 'fastmri'
    write_fastmri_fixture(str(data), seed=5)
    code = cli.main([
        'run', '--workload=fastmri', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={data}', f'--experiment_dir={tmp_path}', '--experiment_name=fastmri', '--noprogress',
        '--max_global_steps=3', '--skip_evals=true', '--save_checkpoints=false', '--rng_seed=1',
        # fastMRI is compiled by default (as upstream); compiling the U-Net takes ~90 s on 2 CPU
        # cores, which this test of the data path does not need.
        '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'fastmri' / 'fastmri_pytorch' / 'trial_1'
    result = json.loads((trial / 'result.json').read_text())
    assert result['status'] == 'max_global_steps'
    train = pd.read_csv(trial / 'measurements.csv')
    losses = train['loss'].dropna().astype(float)
    assert len(losses) == 3 and (losses > 0).all()
