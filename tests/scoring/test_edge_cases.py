"""Scorer behaviour on small synthetic log trees, one edge case per test.

Each tree is written into tmp_path in upstream's layout,

    <root>/<submission>/study_<s>/<workload>_<framework>/trial_<k>/eval_measurements.csv

and every expectation is worked out from the rules (see scoring/performance_profile.py),
not read off the scorer. Most trees use one base workload, so a submission's score is
simple: with ratio 1 to the best time its profile is 1 on all of [1, 4] (score 1), with a
ratio above 4 or no solve it is 0.
"""

import json
import math
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from scoring import logs, score, targets
from scoring.targets import Target, Targets

ACC_TARGET = 0.5
HIT, MISS = 0.6, 0.4  # validation/accuracy values that do and do not reach ACC_TARGET
INF = math.inf


def accuracy_targets(
    base: Sequence[str] = ('imagenet',), held_out: Sequence[str] = (), extra: Sequence[str] = ()
) -> Targets:
    """Targets with every workload on validation/accuracy >= ACC_TARGET."""
    names = list(base) + list(held_out) + list(extra)
    return Targets(
        by_workload={w: Target(w, 'accuracy', ACC_TARGET, True) for w in names},
        base_workloads=tuple(base),
        held_out_workloads=tuple(held_out),
    )


def write_csv(
    path: pathlib.Path, header: Sequence[str], rows: Sequence[Sequence[object]]
) -> pathlib.Path:
    """Writes one eval_measurements.csv (creating its directories); None is an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [','.join(header)] + [
        ','.join('' if v is None else str(v) for v in row) for row in rows
    ]
    path.write_text('\n'.join(lines) + '\n')
    return path


def write_trial(
    root: pathlib.Path,
    submission: str,
    study: int,
    workload: str,
    trial: int,
    evals: Sequence[tuple[float, float | None]],
    metric: str = 'accuracy',
    framework: str = 'jax',
) -> pathlib.Path:
    """Writes one trial's evals, given as (score time, validation metric) pairs in order."""
    trial_dir = root.joinpath(
        submission, f'study_{study}', f'{workload}_{framework}', f'trial_{trial}'
    )
    rows = [(100 * (i + 1), t, v) for i, (t, v) in enumerate(evals)]
    return write_csv(
        trial_dir / logs.EVAL_CSV, ('global_step', 'score', f'validation/{metric}'), rows
    )


def solve(
    root: pathlib.Path,
    submission: str,
    time: float,
    workload: str = 'imagenet',
    study: int = 0,
    trial: int = 1,
) -> pathlib.Path:
    """A trial whose second eval reaches the target at `time`."""
    return write_trial(root, submission, study, workload, trial, [(time / 2, MISS), (time, HIT)])


def fail(
    root: pathlib.Path, submission: str, workload: str = 'imagenet', study: int = 0, trial: int = 1
) -> pathlib.Path:
    """A trial that never reaches the target."""
    return write_trial(root, submission, study, workload, trial, [(10.0, MISS), (20.0, MISS)])


def run(root: pathlib.Path, tgts: Targets, **kwargs) -> score.ScoreResult:
    kwargs = {'num_studies': 1, 'num_trials': 1, **kwargs}
    return score.score_tree(str(root), tgts, **kwargs)


def test_trial_without_csv_is_skipped_and_counted(tmp_path):
    solve(tmp_path, 'sub', 30.0, trial=1)
    no_csv = tmp_path / 'sub' / 'study_0' / 'imagenet_jax' / 'trial_2'
    no_csv.mkdir()
    (no_csv / 'meta_data_0.json').write_text('{}')  # A run that started but never evaluated.
    result = run(tmp_path, accuracy_targets())
    assert result.load_report.missing_csv == [str(no_csv)]
    assert result.load_report.trials_read == 1
    assert result.times.loc['sub', 'imagenet'] == 30.0
    assert result.scores['sub'] == pytest.approx(1.0)


def test_stray_trial_dirs_under_a_study_are_skipped(tmp_path):
    solve(tmp_path, 'sub', 30.0)
    # A trial logged without its workload dir; were it read, its 1 s would be the study's time.
    stray = write_csv(
        tmp_path / 'sub' / 'study_0' / 'trial_1' / logs.EVAL_CSV,
        ('global_step', 'score', 'validation/accuracy'),
        [(1, 1.0, HIT)],
    ).parent
    result = run(tmp_path, accuracy_targets())
    assert result.load_report.stray_dirs == [str(stray)]
    assert result.times.loc['sub', 'imagenet'] == 30.0
    assert result.scores['sub'] == pytest.approx(1.0)


def test_timestamped_sibling_directory_is_merged(tmp_path):
    solve(tmp_path, 'sub', 10.0, study=0)
    sibling = 'sub-2024-05-01-12-00-00'  # Written by a resumed run with --append_timestamp.
    solve(tmp_path, sibling, 20.0, study=1)
    solve(tmp_path, sibling, 90.0, study=2)
    # Three studies in all, so --strict with num_studies=3 has nothing to complain about.
    result = run(tmp_path, accuracy_targets(), num_studies=3, strict=True)
    assert list(result.scores.index) == ['sub']
    assert result.times.loc['sub', 'imagenet'] == 20.0  # median(10, 20, 90)
    assert {t.study for t in result.trials['sub']} == {'study_0', 'study_1', 'study_2'}


@pytest.mark.parametrize('nan_text', ['', 'nan', 'NaN'])
def test_nan_metric_never_reaches(tmp_path, nan_text):
    # Diverged runs log NaN (or nothing); with a minimised metric NaN <= target must not
    # count either, so both directions are checked.
    tgts = Targets(
        by_workload={
            'imagenet': Target('imagenet', 'accuracy', ACC_TARGET, True),
            'criteo': Target('criteo', 'loss', 0.2, False),
        },
        base_workloads=('imagenet', 'criteo'),
    )
    header = ('global_step', 'score')
    write_csv(
        tmp_path / 'diverged' / 'study_0' / 'imagenet_jax' / 'trial_1' / logs.EVAL_CSV,
        header + ('validation/accuracy',),
        [(1, 10.0, MISS), (2, 20.0, nan_text)],
    )
    write_csv(
        tmp_path / 'diverged' / 'study_0' / 'criteo_jax' / 'trial_1' / logs.EVAL_CSV,
        header + ('validation/loss',),
        [(1, 10.0, 0.9), (2, 20.0, nan_text)],
    )
    # A NaN before the first reaching eval does not stop a later eval from counting.
    write_csv(
        tmp_path / 'recovers' / 'study_0' / 'imagenet_jax' / 'trial_1' / logs.EVAL_CSV,
        header + ('validation/accuracy',),
        [(1, 10.0, nan_text), (2, 20.0, HIT)],
    )
    write_csv(
        tmp_path / 'recovers' / 'study_0' / 'criteo_jax' / 'trial_1' / logs.EVAL_CSV,
        header + ('validation/loss',),
        [(1, 10.0, nan_text), (2, 20.0, 0.1)],
    )
    result = run(tmp_path, tgts)
    assert result.times.loc['diverged'].tolist() == [INF, INF]
    assert result.times.loc['recovers'].tolist() == [20.0, 20.0]
    assert result.scores['diverged'] == 0.0


def test_unscored_variant_dirs_do_not_change_the_score(tmp_path):
    # imagenet_silu has a target but is not held out; failing it must not gate imagenet.
    tgts = accuracy_targets(base=('imagenet',), held_out=(), extra=('imagenet_silu',))
    solve(tmp_path / 'plain', 'a', 10.0)
    solve(tmp_path / 'plain', 'b', 20.0)
    solve(tmp_path / 'variant', 'a', 10.0)
    solve(tmp_path / 'variant', 'b', 20.0)
    fail(tmp_path / 'variant', 'a', workload='imagenet_silu')
    solve(tmp_path / 'variant', 'b', 1.0, workload='imagenet_silu')
    plain, variant = run(tmp_path / 'plain', tgts), run(tmp_path / 'variant', tgts)
    assert variant.times.loc['a', 'imagenet_silu'] == INF  # Loaded and timed, just not scored.
    pd.testing.assert_series_equal(variant.scores, plain.scores)
    pd.testing.assert_frame_equal(variant.gated, plain.gated)


def test_per_study_rule_takes_smallest_first_reaching_index_not_fastest(tmp_path):
    # trial_1 reaches at its 2nd eval (index 1) but only at 300 s (slow evals); trial_2
    # needs 4 evals (index 3) yet gets there at 100 s. Upstream's rule picks the smallest
    # index, so the study's time is 300 s, not the faster 100 s.
    write_trial(tmp_path, 'sub', 0, 'imagenet', 1, [(150.0, MISS), (300.0, HIT)])
    write_trial(
        tmp_path, 'sub', 0, 'imagenet', 2, [(25.0, MISS), (50.0, MISS), (75.0, MISS), (100.0, HIT)]
    )
    # Equal indices: the smallest time wins (scoring/time_to_target.py), whatever the order.
    write_trial(tmp_path, 'tie', 0, 'imagenet', 1, [(40.0, MISS), (80.0, HIT)])
    write_trial(tmp_path, 'tie', 0, 'imagenet', 2, [(20.0, MISS), (60.0, HIT)])
    result = run(tmp_path, accuracy_targets(), num_trials=2)
    assert result.times.loc['sub', 'imagenet'] == 300.0
    assert result.times.loc['tie', 'imagenet'] == 60.0


@pytest.mark.parametrize(
    'study_times,expected',
    [
        ((10.0, 20.0, 90.0), 20.0),
        ((10.0, 20.0, None), 20.0),  # 1 of 3 inf: median of (10, 20, inf) is 20.
        ((10.0, None, None), INF),  # 2 of 3 inf: inf.
        ((10.0, 30.0), 20.0),  # Even count: mean of the middle two.
        ((10.0, None), INF),  # ... and with one inf among them, inf.
    ],
)
def test_median_over_studies(tmp_path, study_times, expected):
    for study, time in enumerate(study_times):
        if time is None:
            fail(tmp_path, 'sub', study=study)
        else:
            solve(tmp_path, 'sub', time, study=study)
    result = run(tmp_path, accuracy_targets(), num_studies=len(study_times))
    assert result.times.loc['sub', 'imagenet'] == expected


def test_four_times_rule(tmp_path):
    solve(tmp_path, 'best', 100.0)
    solve(tmp_path, 'exactly_4x', 400.0)  # t > 4 * best is the rule, so 4x itself stays.
    solve(tmp_path, 'over_4x', 401.0)
    result = run(tmp_path, accuracy_targets())
    assert result.times['imagenet'].tolist() == [100.0, 400.0, 401.0]  # Before the rules.
    assert result.gated.loc[['best', 'exactly_4x', 'over_4x'], 'imagenet'].tolist() == [
        100.0,
        400.0,
        INF,
    ]
    # Ratio 4 enters the profile only at the last tau (4.0): half of the last trapezoid,
    # (3 / 99) / 2, normalised by the width 3 of [1, 4].
    assert result.scores['best'] == pytest.approx(1.0)
    assert result.scores['exactly_4x'] == pytest.approx(1 / 198)
    assert result.scores['over_4x'] == 0.0


def test_held_out_variant_not_solved_removes_the_base(tmp_path):
    tgts = accuracy_targets(base=('imagenet',), held_out=('imagenet_tanh',))
    for name in ('solves_both', 'fails_variant', 'slow_variant', 'no_variant_logs'):
        solve(tmp_path, name, 10.0)
    solve(tmp_path, 'solves_both', 10.0, workload='imagenet_tanh')
    fail(tmp_path, 'fails_variant', workload='imagenet_tanh')
    # More than 4x the best variant time: the 4x rule makes the variant inf, then the base.
    solve(tmp_path, 'slow_variant', 50.0, workload='imagenet_tanh')
    result = run(tmp_path, tgts)
    assert list(result.gated.columns) == ['imagenet']  # Variants gate but are not scored.
    assert result.gated['imagenet'].to_dict() == {
        'fails_variant': INF,
        'no_variant_logs': INF,
        'slow_variant': INF,
        'solves_both': 10.0,
    }
    assert result.scores.to_dict() == pytest.approx(
        {'fails_variant': 0.0, 'no_variant_logs': 0.0, 'slow_variant': 0.0, 'solves_both': 1.0}
    )


def test_held_out_variant_ignored_when_base_not_solved(tmp_path):
    tgts = accuracy_targets(base=('imagenet',), held_out=('imagenet_tanh',))
    # 'a' fails the base but solves the variant in 10 s. That time must leave the variant
    # column before the 4x rule: otherwise b's 100 s variant would be > 4 x 10 s, become
    # inf, and take b's base with it.
    fail(tmp_path, 'a')
    solve(tmp_path, 'a', 10.0, workload='imagenet_tanh')
    solve(tmp_path, 'b', 100.0)
    solve(tmp_path, 'b', 100.0, workload='imagenet_tanh')
    result = run(tmp_path, tgts)
    assert result.gated['imagenet'].to_dict() == {'a': INF, 'b': 100.0}
    assert result.scores.to_dict() == pytest.approx({'a': 0.0, 'b': 1.0})


def test_rho_denominator_counts_base_workloads_nobody_logged(tmp_path):
    # Three base workloads; only imagenet has logs from anyone. Solving it at the best time
    # is one workload out of three, so rho = 1/3 everywhere and the score is 1/3.
    tgts = accuracy_targets(base=('criteo', 'imagenet', 'wmt'))
    solve(tmp_path, 'sub', 10.0)
    result = run(tmp_path, tgts)
    assert list(result.gated.columns) == ['criteo', 'imagenet', 'wmt']
    assert result.gated.loc['sub'].isna().tolist() == [True, False, True]
    np.testing.assert_allclose(result.rho.loc['sub'].to_numpy(), 1 / 3)
    assert result.scores['sub'] == pytest.approx(1 / 3)


def test_metric_direction_and_exact_equality(tmp_path):
    # The direction comes from the metric name in the targets file (upstream's rule), and
    # reaching is non-strict: an eval exactly at the target counts. The CSV cells and the
    # JSON values are the same decimal text, so they parse to the same double.
    path = tmp_path / 'targets.json'
    path.write_text(
        json.dumps(
            {
                'base_workloads': ['criteo1tb', 'imagenet_resnet'],
                'workloads': {
                    'criteo1tb': {
                        'target_metric_name': 'loss',
                        'validation_target_value': 0.123735,
                    },
                    'imagenet_resnet': {
                        'target_metric_name': 'accuracy',
                        'validation_target_value': 0.77431,
                    },
                },
            }
        )
    )
    tgts = targets.from_json(str(path))
    assert not tgts.get('criteo1tb').higher_is_better
    assert tgts.get('imagenet_resnet').higher_is_better
    logs_dir = tmp_path / 'logs'
    # Loss: 0.2 and 0.13 are above the target (not reached), 0.123735 equals it.
    write_trial(
        logs_dir,
        'sub',
        0,
        'criteo1tb',
        1,
        [(10.0, 0.2), (20.0, 0.13), (30.0, 0.123735), (40.0, 0.1)],
        metric='loss',
    )
    # Accuracy: 0.9 would reach it, but only from the 4th eval on; 0.77431 at the 3rd equals it.
    write_trial(
        logs_dir,
        'sub',
        0,
        'imagenet_resnet',
        1,
        [(10.0, 0.1), (20.0, 0.7743), (30.0, 0.77431), (40.0, 0.9)],
    )
    # Reaching is decided per eval, not from a trend: a first eval already past the target
    # counts, whatever the curve does after it.
    write_trial(logs_dir, 'reversed', 0, 'criteo1tb', 1, [(10.0, 0.1), (20.0, 0.2)], metric='loss')
    write_trial(logs_dir, 'reversed', 0, 'imagenet_resnet', 1, [(10.0, 0.9), (20.0, 0.1)])
    result = run(logs_dir, tgts)
    assert result.times.loc['sub'].to_dict() == {'criteo1tb': 30.0, 'imagenet_resnet': 30.0}
    assert result.times.loc['reversed'].to_dict() == {'criteo1tb': 10.0, 'imagenet_resnet': 10.0}


def test_malformed_csv_is_excluded_naming_file_and_line(tmp_path):
    solve(tmp_path, 'sub', 30.0, trial=1)
    path = write_csv(
        tmp_path / 'sub' / 'study_0' / 'imagenet_jax' / 'trial_2' / logs.EVAL_CSV,
        ('global_step', 'score', 'validation/accuracy'),
        [(1, 10.0, MISS), (2, 20.0, HIT, 'extra')],
    )
    result = run(tmp_path, accuracy_targets(), num_trials=2)
    # The bad trial's 20 s would have been the study's time; it is excluded instead.
    assert result.times.loc['sub', 'imagenet'] == 30.0
    [excluded] = result.load_report.excluded
    assert excluded.path == str(path) and excluded.line == 3
    assert f'{path}: line 3 has 4 fields, the header has 3' in excluded.reason
    with pytest.raises(score.ScoringError, match=re.escape(str(path))):
        run(tmp_path, accuracy_targets(), num_trials=2, strict=True)


def test_missing_submission_directory_raises_naming_it(tmp_path):
    missing = tmp_path / 'no_such_dir'
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        run(missing, accuracy_targets())


def test_strict_checks_study_and_trial_counts(tmp_path):
    tgts = accuracy_targets()
    for study in range(3):
        for trial in (1, 2):
            solve(tmp_path, 'sub', 10.0 * (study + 1), study=study, trial=trial)
    # Counts as logged: 3 studies of 2 trials each.
    assert run(tmp_path, tgts, num_studies=3, num_trials=2, strict=True).warnings == []
    with pytest.raises(score.ScoringError, match='studies'):
        run(tmp_path, tgts, num_studies=5, num_trials=2, strict=True)
    with pytest.raises(score.ScoringError, match='trials'):
        run(tmp_path, tgts, num_studies=3, num_trials=5, strict=True)
    # Self-tuning runs one trial per study by construction, so only studies are counted.
    assert (
        run(tmp_path, tgts, num_studies=3, num_trials=5, strict=True, self_tuning=True).warnings
        == []
    )
    # Without --strict the same problems are warnings and the tree is still scored.
    lenient = run(tmp_path, tgts, num_studies=5, num_trials=5)
    assert len(lenient.warnings) == 4  # 1 study count + 3 per-study trial counts.
    assert lenient.scores['sub'] == pytest.approx(1.0)


def test_strict_counts_a_trial_without_csv_as_missing(tmp_path):
    solve(tmp_path, 'sub', 10.0, trial=1)
    (tmp_path / 'sub' / 'study_0' / 'imagenet_jax' / 'trial_2').mkdir()
    with pytest.raises(score.ScoringError, match='1 trials'):
        run(tmp_path, accuracy_targets(), num_trials=2, strict=True)
