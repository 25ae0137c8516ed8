"""A few baseline training steps on the Criteo TSV fixture through `algoperf run`."""

import json

import pandas as pd

from algoperf import cli
from workloads.criteo1tb.fixture import write_criteo_fixture

SUBMISSION = 'tests/data/submissions/small_batch_nadamw.py'


def test_baseline_trains_on_the_tsv_fixture_through_the_runner(tmp_path):
    data = tmp_path / 'criteo'
    write_criteo_fixture(str(data), seed=5)
    code = cli.main([
        'run', '--workload=criteo1tb_test', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={data}', f'--experiment_dir={tmp_path}', '--experiment_name=criteo', '--noprogress',
        '--max_global_steps=6', '--skip_evals=true', '--save_checkpoints=false', '--rng_seed=1',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'criteo' / 'criteo1tb_test_pytorch' / 'trial_1'
    result = json.loads((trial / 'result.json').read_text())
    assert result['status'] == 'max_global_steps'
    train = pd.read_csv(trial / 'measurements.csv')
    losses = train['loss'].dropna().astype(float)
    assert len(losses) == 6 and losses.notna().all() and (losses > 0).all()
