"""The Shampoo submission (submissions/shampoo) through the runner on the embedded digits workload."""

import json
import pathlib

import pandas as pd

from algoperf import cli

SUBMISSION = 'submissions/shampoo/submission.py'
SPACE = 'submissions/shampoo/tuning_search_space.json'


def _run(tmp_path, *flags):
    return cli.main([
        'run', '--workload=digits', f'--submission_path={SUBMISSION}', f'--experiment_dir={tmp_path}',
        '--experiment_name=sh', '--noprogress', '--rng_seed=3', *flags,
    ])  # fmt: skip


def test_search_space_is_the_entrys_five_points_in_order():
    points = json.loads(pathlib.Path(SPACE).read_text())
    assert len(points) == 5
    assert [p['grafting_type'] for p in points] == ['ADAM', 'ADAM', 'SGD', 'ADAM', 'ADAM']
    assert [p['inv_root_override'] for p in points] == [0, 0, 0, 2, 0]
    assert all(
        p['precondition_frequency'] == 100 and p['max_preconditioner_dim'] == 1024 for p in points
    )


def test_external_tuning_trial_preconditions_and_learns(tmp_path):
    # 250 steps: roots at steps 100 and 200, so the Shampoo direction is used for 150 steps.
    assert (
        _run(
            tmp_path,
            '--tuning_ruleset=external',
            f'--tuning_search_space={SPACE}',
            '--num_tuning_trials=1',
            '--max_global_steps=250',
            '--save_checkpoints=false',
        )
        == 0
    )
    trial = tmp_path / 'sh' / 'digits_pytorch' / 'trial_1'
    evals = pd.read_csv(trial / 'eval_measurements.csv')
    assert evals['global_step'].iloc[-1] >= 100
    assert evals['validation/accuracy'].iloc[-1] > 0.9 > evals['validation/accuracy'].iloc[0]
    assert json.loads((trial / 'hparams.json').read_text())['grafting_type'] == 'ADAM'


def test_sgd_grafting_point_runs(tmp_path):
    points = json.loads(pathlib.Path(SPACE).read_text())
    space = tmp_path / 'space.json'
    space.write_text(json.dumps([points[2]]))
    assert (
        _run(
            tmp_path,
            '--tuning_ruleset=external',
            f'--tuning_search_space={space}',
            '--num_tuning_trials=1',
            '--max_global_steps=120',
            '--save_checkpoints=false',
        )
        == 0
    )


def test_unknown_grafting_type_is_a_clear_error(tmp_path):
    points = json.loads(pathlib.Path(SPACE).read_text())
    space = tmp_path / 'space.json'
    space.write_text(json.dumps([dict(points[0], grafting_type='LION')]))
    code = _run(
        tmp_path,
        '--tuning_ruleset=external',
        f'--tuning_search_space={space}',
        '--num_tuning_trials=1',
        '--max_global_steps=5',
    )
    assert code != 0
    result = json.loads(
        (tmp_path / 'sh' / 'digits_pytorch' / 'trial_1' / 'result.json').read_text()
    )
    assert 'grafting_type' in json.dumps(result)
