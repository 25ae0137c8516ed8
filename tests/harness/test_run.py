"""End-to-end `algoperf run` on the embedded digits workload (CPU, in-process)."""

import dataclasses
import json
import os

import pandas as pd
import pytest

from algoperf import checkpoint_utils, cli, registry
from workloads.digits.spec import DIGITS

BASELINE = 'submissions/baselines/nadamw/submission.py'
SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'
DATA = os.path.join(os.path.dirname(__file__), '..', 'data', 'submissions')

# Upstream's eval_measurements.csv columns for an accuracy/loss workload with a test
# split (spec document §5.7, MNIST example), alphabetical.
UPSTREAM_EVAL_COLUMNS = [
    'accumulated_eval_time',
    'accumulated_logging_time',
    'accumulated_submission_time',
    'global_step',
    'preemption_count',
    'score',
    'test/accuracy',
    'test/loss',
    'test/num_examples',
    'total_duration',
    'train/accuracy',
    'train/loss',
    'validation/accuracy',
    'validation/loss',
    'validation/num_examples',
]


def run(tmp_path, *flags, workload='digits', submission=BASELINE, name='exp'):
    argv = [
        'run',
        f'--workload={workload}',
        f'--submission_path={submission}',
        f'--experiment_dir={tmp_path}',
        f'--experiment_name={name}',
        '--noprogress',
        *flags,
    ]
    return cli.main(argv)


def trial_dir(tmp_path, k=1, name='exp', workload='digits'):
    return tmp_path / name / f'{workload}_pytorch' / f'trial_{k}'


def result(tmp_path, k=1, **kw):
    return json.loads((trial_dir(tmp_path, k, **kw) / 'result.json').read_text())


def test_self_tuning_baseline_reaches_target_with_upstream_logs(tmp_path):
    assert run(tmp_path, '--tuning_ruleset=self', '--rng_seed=0') == 0
    r = result(tmp_path)
    assert r['status'] == 'targets_reached', r
    assert r['hyperparameters'] is None
    d = trial_dir(tmp_path)
    evals = pd.read_csv(d / 'eval_measurements.csv')
    assert list(evals.columns) == UPSTREAM_EVAL_COLUMNS
    assert evals['global_step'].iloc[0] == 1  # First eval right after step 1.
    assert evals['score'].is_monotonic_increasing
    assert (evals['score'] == evals['accumulated_submission_time']).all()
    assert (evals['total_duration'] >= evals['score'] + evals['accumulated_eval_time']).all()
    last = evals.iloc[-1]
    assert last['validation/accuracy'] > DIGITS.validation_target_value
    assert last['test/accuracy'] > DIGITS.test_target_value
    assert r['time_to_validation_target'] == pytest.approx(
        evals['score'][evals['validation/accuracy'] > DIGITS.validation_target_value].iloc[0]
    )
    # Self-tuning: no hparams.json; run artifacts with upstream names.
    assert not (d / 'hparams.json').exists()
    meta = json.loads((d / 'meta_data_0.json').read_text())
    assert meta['workload.validation_target_value'] == DIGITS.validation_target_value
    assert meta['rng_seed'] == 0
    flags = json.loads((d / 'flags_0.json').read_text())
    assert flags['workload'] == 'digits' and flags['tuning_ruleset'] == 'self'
    measurements = pd.read_csv(d / 'measurements.csv')
    assert {'loss', 'grad_norm', 'global_step', 'score'} <= set(measurements.columns)
    train_rows = measurements[measurements['loss'].notna()]
    assert train_rows['global_step'].tolist()[:3] == [0, 1, 2]
    final = measurements.iloc[-1]  # Upstream's closing {'score': ...} row.
    assert final['score'] == pytest.approx(r['accumulated_submission_time'])
    assert final['global_step'] == r['global_step']
    assert checkpoint_utils.latest_checkpoint(str(d)).endswith(f'checkpoint_{r["global_step"]}')


def test_external_ruleset_runs_list_points_in_order_with_distinct_seeds(tmp_path):
    assert (
        run(
            tmp_path,
            f'--tuning_search_space={SPACE}',
            '--num_tuning_trials=2',
            '--max_global_steps=15',
            '--rng_seed=7',
            '--save_checkpoints=false',
        )
        == 0
    )
    points = json.loads(open(SPACE).read())
    seeds = []
    for k in (1, 2):
        d = trial_dir(tmp_path, k)
        assert json.loads((d / 'hparams.json').read_text()) == points[k - 1]
        r = result(tmp_path, k)
        assert r['status'] == 'max_global_steps' and r['global_step'] == 15
        seeds.append(json.loads((d / 'meta_data_0.json').read_text())['rng_seed'])
        assert not list(d.glob('checkpoint_*'))
    assert seeds[0] == 7 and seeds[1] != 7


def test_hparam_slice_runs_only_selected_trials(tmp_path):
    assert (
        run(
            tmp_path,
            f'--tuning_search_space={SPACE}',
            '--num_tuning_trials=5',
            '--hparam_start_index=3',
            '--hparam_end_index=4',
            '--max_global_steps=3',
            '--save_checkpoints=false',
        )
        == 0
    )
    runs = sorted(p.name for p in (tmp_path / 'exp' / 'digits_pytorch').iterdir())
    assert runs == ['trial_4']
    assert (
        json.loads((trial_dir(tmp_path, 4) / 'hparams.json').read_text())['beta2']
        == 0.6291854735396584
    )


def test_training_complete_error_ends_trial_with_final_eval(tmp_path):
    sub = os.path.join(DATA, 'completes_early.py')
    assert run(tmp_path, '--tuning_ruleset=self', f'--submission_path={sub}', '--rng_seed=1') == 0
    r = result(tmp_path)
    assert r['status'] == 'training_complete' and r['global_step'] == 5
    evals = pd.read_csv(trial_dir(tmp_path) / 'eval_measurements.csv')
    assert evals['global_step'].iloc[-1] == 5  # The final eval after the raising step.


def test_upstream_style_submission_runs_unchanged(tmp_path):
    sub = os.path.join(DATA, 'upstream_style.py')
    space = os.path.join(DATA, 'upstream_style_space.json')
    assert (
        run(
            tmp_path,
            f'--submission_path={sub}',
            f'--tuning_search_space={space}',
            '--num_tuning_trials=2',
            '--max_global_steps=12',
            '--rng_seed=3',
            '--framework=pytorch',
        )
        == 0
    )
    for k in (1, 2):
        r = result(tmp_path, k)
        assert r['status'] == 'max_global_steps', r
        hp = json.loads((trial_dir(tmp_path, k) / 'hparams.json').read_text())
        assert 1e-3 <= hp['learning_rate'] <= 1e-2 and hp['weight_decay'] in (0.0, 0.01)
        m = pd.read_csv(trial_dir(tmp_path, k) / 'measurements.csv')
        assert m['loss'].notna().sum() == 3  # Steps 0, 5 and 10 logged floats.


@pytest.fixture
def every_step_digits():
    """digits with an eval after every step: a deterministic eval schedule."""
    spec = dataclasses.replace(DIGITS, name='digits_every_step', eval_period_time_sec=0)
    registry.register(spec, overwrite=True)
    yield spec.name
    registry.unregister(spec.name)


def _eval_rows(tmp_path, name, workload):
    df = pd.read_csv(trial_dir(tmp_path, name=name, workload=workload) / 'eval_measurements.csv')
    return df


def test_interrupted_run_resumes_without_duplicated_or_lost_rows(
    tmp_path, monkeypatch, every_step_digits
):
    wl = every_step_digits
    flags = ['--tuning_ruleset=self', '--rng_seed=5', '--max_global_steps=12']
    assert run(tmp_path, *flags, workload=wl, name='full') == 0
    full = _eval_rows(tmp_path, 'full', wl)

    # Crash after step 7's eval row is written but before its checkpoint exists.
    real_save = checkpoint_utils.save_checkpoint

    def crashing_save(*args, **kwargs):
        if args[5] == 7:  # global_step
            raise RuntimeError('simulated preemption')
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint_utils, 'save_checkpoint', crashing_save)
    assert run(tmp_path, *flags, workload=wl, name='cut') == 1  # The trial failed.
    cut = _eval_rows(tmp_path, 'cut', wl)
    assert cut['global_step'].tolist() == list(range(1, 8))
    monkeypatch.setattr(checkpoint_utils, 'save_checkpoint', real_save)

    assert run(tmp_path, *flags, '--resume_last_run', workload=wl, name='cut') == 0
    resumed = _eval_rows(tmp_path, 'cut', wl)
    assert resumed['global_step'].tolist() == list(range(1, 13))  # None duplicated, none lost.
    assert resumed['preemption_count'].tolist() == [0] * 6 + [1] * 6
    metrics = [c for c in full.columns if c.split('/')[0] in ('train', 'validation', 'test')]
    pd.testing.assert_frame_equal(resumed[metrics], full[metrics])  # Same rows as uninterrupted.
    d = trial_dir(tmp_path, name='cut', workload=wl)
    assert (d / 'meta_data_1.json').exists() and (d / 'flags_1.json').exists()
    assert result(tmp_path, name='cut', workload=wl)['preemption_count'] == 1
    # Resuming a finished experiment skips its trials.
    assert run(tmp_path, *flags, '--resume_last_run', workload=wl, name='cut') == 0
    assert len(_eval_rows(tmp_path, 'cut', wl)) == 12


def test_diverged_trial_is_recorded_and_next_trial_still_runs(tmp_path):
    space = tmp_path / 'space.json'
    # learning_rate 1e30 makes the first updates blow the weights up to inf/nan.
    space.write_text(
        json.dumps(
            [
                {
                    'learning_rate': 1e30,
                    'one_minus_beta1': 0.1,
                    'beta2': 0.999,
                    'weight_decay': 0.0,
                    'warmup_factor': 0.0,
                    'dropout_rate': 0.0,
                    'label_smoothing': 0.0,
                },
                {
                    'learning_rate': 1e-3,
                    'one_minus_beta1': 0.1,
                    'beta2': 0.999,
                    'weight_decay': 0.0,
                    'warmup_factor': 0.0,
                    'dropout_rate': 0.0,
                    'label_smoothing': 0.0,
                },
            ]
        )
    )
    assert (
        run(
            tmp_path,
            f'--tuning_search_space={space}',
            '--num_tuning_trials=2',
            '--max_global_steps=50',
            '--save_checkpoints=false',
            '--rng_seed=0',
        )
        == 0
    )
    first, second = result(tmp_path, 1), result(tmp_path, 2)
    assert first['status'] == 'diverged' and first['global_step'] < 50
    assert second['status'] == 'max_global_steps' and second['global_step'] == 50
    evals = pd.read_csv(trial_dir(tmp_path, 1) / 'eval_measurements.csv')
    assert evals['validation/loss'].isna().iloc[-1] or not evals['validation/loss'].iloc[
        -1
    ] < float('inf')
