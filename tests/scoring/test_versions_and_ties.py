"""Benchmark versions in the scorer (#15), the tie rule, ignored workloads and upstream's files (#16).

Expected values are worked out from the rules in the test (or are the published leaderboard),
never read off the scorer.
"""

import json
import math
import os
import pathlib
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest

from algoperf import benchmark_versions, registry
from scoring import cli, logs, plots, report, score, targets

DATA = pathlib.Path(__file__).parent / 'data'
V06_TARGETS = DATA / 'workload_targets_v06_leaderboard_8workloads.json'
_SHARED = pathlib.Path(os.environ.get('ALGOPERF_LOGS_DIR',
                                      pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'algoperf_logs'))
# Published v0.6 external-tuning leaderboard (github.com/mlcommons/submissions_algorithms README,
# "Leaderboard Version: 0.6", 2025-03-24). No v0.6 self-tuning scores were published.
PUBLISHED_V06_EXTERNAL = {'shampoo': 0.6244, 'baseline': 0.4590}


def write_trial(root, sub, study, workload, trial, rows, header=('global_step', 'score', 'validation/accuracy')):
    d = pathlib.Path(root, sub, f'study_{study}', f'{workload}_pytorch', f'trial_{trial}')
    d.mkdir(parents=True, exist_ok=True)
    lines = [','.join(header)] + [','.join(str(v) for v in r) for r in rows]
    (d / logs.EVAL_CSV).write_text('\n'.join(lines) + '\n')
    return d / logs.EVAL_CSV


# --- v0.6: published external scores, independent of listing order -------------------------------

@pytest.fixture(scope='module')
def v06_external(tmp_path_factory):
    root = tmp_path_factory.mktemp('v06')
    with tarfile.open(DATA / 'algoperf_v06_extract.tar.gz') as tar:
        tar.extractall(root, filter='data')
    return root / 'algoperf_v06' / 'external_tuning'


def _v06_scores(tree):
    return score.score_tree(str(tree), targets.from_json(str(V06_TARGETS))).scores


def test_v06_external_published_scores(v06_external):
    scores = _v06_scores(v06_external)
    assert {k: round(v, 4) for k, v in scores.items()} == PUBLISHED_V06_EXTERNAL


def _tied_studies_with_different_times(tree, tgts):
    """(submission, workload, study) where two reaching trials first reach at the same eval index
    with different times: read with pandas here, independently of the scorer."""
    found = []
    for study_dir in sorted(tree.glob('*/study_*/*_*')):
        workload = study_dir.name.rsplit('_', 1)[0]
        target = tgts.get(workload)
        if target is None or workload not in tgts.base_workloads:
            continue
        firsts = {}
        for f in study_dir.glob(f'trial_*/{logs.EVAL_CSV}'):
            df = pd.read_csv(f)
            hit = df[target.column] >= target.validation_target if target.higher_is_better \
                else df[target.column] <= target.validation_target
            if hit.any():
                i = int(np.argmax(hit.to_numpy()))
                firsts.setdefault(i, set()).add(float(df['score'].iloc[i]))
        if firsts and len(firsts[min(firsts)]) > 1:
            found.append(study_dir)
    return found


def test_v06_ties_do_not_depend_on_listing_or_trial_numbers(tmp_path, v06_external, monkeypatch):
    # The extract holds ties that decide the published number (else this test would be empty).
    tgts = targets.from_json(str(V06_TARGETS))
    tied = _tied_studies_with_different_times(v06_external, tgts)
    assert tied, 'no tie with different times in the v0.6 extract'
    expected = _v06_scores(v06_external)
    # 1. Trial numbers reversed (trial_k -> trial_(6-k)): "first trial wins" would change.
    renamed = tmp_path / 'renamed'
    shutil.copytree(v06_external, renamed)
    for wl_dir in renamed.glob('*/study_*/*_*'):
        names = sorted(p.name for p in wl_dir.glob('trial_*'))
        for n in names:
            (wl_dir / n).rename(wl_dir / f'tmp_{n}')
        for n in names:
            k = int(n.split('_')[1])
            (wl_dir / f'tmp_{n}').rename(wl_dir / f'trial_{6 - k}')
    pd.testing.assert_series_equal(_v06_scores(renamed), expected, check_exact=True)
    # 2. os.listdir in reverse order everywhere the loader looks.
    real_listdir = os.listdir
    monkeypatch.setattr(logs.os, 'listdir', lambda p: sorted(real_listdir(p), reverse=True))
    pd.testing.assert_series_equal(_v06_scores(v06_external), expected, check_exact=True)


def test_v06_extract_agrees_with_real_logs(v06_external):
    real = _SHARED / 'algoperf_v06' / 'external_tuning'
    if not real.is_dir():
        pytest.skip(f'{real} not present (the full logs are not shipped)')
    pd.testing.assert_series_equal(_v06_scores(v06_external), _v06_scores(real), check_exact=True)


@pytest.mark.parametrize('order', [(1, 2, 3), (3, 2, 1), (2, 3, 1)])
def test_tie_goes_to_smallest_time_whatever_the_creation_order(tmp_path, order, monkeypatch):
    # Three trials first reach at index 1; trial_2 is the fastest there. Created in different
    # orders and listed in creation order (what a filesystem without sorting may do).
    times = {1: 90.0, 2: 60.0, 3: 75.0}
    created = []
    for k in order:
        write_trial(tmp_path, 'sub', 0, 'mnist', k, [(1, times[k] / 3, 0.1), (2, times[k], 0.99)])
        created.append(f'trial_{k}')
    real_listdir = os.listdir

    def listdir(path):
        names = real_listdir(path)
        if str(path).endswith('mnist_pytorch'):
            return [n for n in created if n in names]
        return names

    monkeypatch.setattr(logs.os, 'listdir', listdir)
    tgts = targets.from_specs(workloads=('mnist',))
    result = score.score_tree(str(tmp_path), tgts, num_studies=1, num_trials=3)
    assert result.times.loc['sub', 'mnist'] == 60.0


# --- workloads outside the targets ------------------------------------------------------------------

def test_digits_only_tree_names_ignored_workloads_and_scores_with_workloads_flag(tmp_path):
    for sub, t in (('a', 10.0), ('b', 20.0)):
        write_trial(tmp_path, sub, 0, 'digits', 1, [(1, t, 0.99)])
    default = score.score_tree(str(tmp_path), targets.from_specs(), self_tuning=True, num_studies=1)
    assert (default.scores == 0).all()
    assert default.ignored == {'digits': 'dev workload of v1.0, 2 trials'}
    assert default.ignored_line == ('Ignored workloads (not scored here): digits (dev workload of v1.0, 2 trials); '
                                    'to score them: --workloads=digits.')
    asked = score.score_tree(str(tmp_path), targets.from_specs(workloads=('digits',)), self_tuning=True,
                             num_studies=1)
    assert asked.ignored == {}
    # Ratio 2: rho is 0 below tau = 2 and 1 from it on, on the 100-point tau grid.
    taus = np.linspace(1, 4, 100)
    area = np.trapezoid if hasattr(np, 'trapezoid') else np.trapz
    assert asked.scores.to_dict() == pytest.approx({'a': 1.0, 'b': area(np.where(taus >= 2, 1.0, 0.0), taus) / 3})


def test_unknown_workload_is_ignored_as_having_no_target(tmp_path):
    write_trial(tmp_path, 'a', 0, 'my_new_task', 1, [(1, 10.0, 0.9)])
    result = score.score_tree(str(tmp_path), targets.from_specs(), self_tuning=True, num_studies=1)
    assert result.ignored == {'my_new_task': 'no target known, 1 trial'}
    assert 'to score them' not in result.ignored_line


# --- v1.0 trees -------------------------------------------------------------------------------------

PPL = 22.2995  # finewebedu_lm's target (workloads/finewebedu_lm/spec.py), minimised.


def _lm_tree(root):
    header = ('accumulated_submission_time', 'global_step', 'score', 'validation/ppl')
    # 'fast' reaches exactly at the target (non-strict <=) at its 3rd eval, 1,000 s; 'slow'
    # reaches at 2,500 s; 'close' ends at 22.3 (> target); 'diverged' logs NaN then inf.
    for sub, rows in {
        'fast': [(100, 100, 100, 80.0), (400, 300, 400, 30.0), (1000, 400, 1000, PPL)],
        'slow': [(500, 100, 500, 60.0), (2500, 500, 2500, 20.0)],
        'close': [(500, 100, 500, 60.0), (2500, 500, 2500, 22.3)],
        'diverged': [(500, 100, 500, 'nan'), (900, 200, 900, 'inf')],
    }.items():
        for study in range(3):
            write_trial(root, sub, study, 'finewebedu_lm', 1, rows, header)
    return root


def test_v10_tree_with_finewebedu_lm(tmp_path):
    tree = _lm_tree(tmp_path / 'logs')
    result = score.score_tree(str(tree), targets.from_specs(), self_tuning=True)
    assert result.version.name == '1.0'
    assert list(result.gated.columns) == list(benchmark_versions.get('1.0').base_workloads)
    assert len(result.gated.columns) == 9 and 'finewebedu_lm' in result.gated.columns
    assert result.times['finewebedu_lm'].to_dict() == {'close': math.inf, 'diverged': math.inf, 'fast': 1000.0,
                                                      'slow': 2500.0}
    # One of nine workloads: rho = 1/9 from tau = 1 (fast) or from tau = 2.5 (slow) on.
    taus = np.linspace(1, 4, 100)
    area = np.trapezoid if hasattr(np, 'trapezoid') else np.trapz
    slow = area(np.where(taus >= 2.5, 1 / 9, 0.0), taus) / 3
    assert result.scores['fast'] == pytest.approx(1 / 9)
    assert result.scores['slow'] == pytest.approx(slow)
    assert result.scores['close'] == 0.0 and result.scores['diverged'] == 0.0
    assert result.load_report.excluded == []  # NaN and +inf ppl are diverged runs, not bad files.


def test_v06_rules_ignore_finewebedu_lm(tmp_path):
    tree = _lm_tree(tmp_path / 'logs')
    result = score.score_tree(str(tree), targets.from_specs('0.6'), self_tuning=True)
    assert 'finewebedu_lm' not in result.gated.columns and len(result.gated.columns) == 8
    assert (result.scores == 0).all()
    assert result.ignored['finewebedu_lm'] == 'not a base workload of v0.6, 12 trials'


def test_v10_summaries_use_the_median_step_time_rule(tmp_path):
    tree = _lm_tree(tmp_path / 'logs')
    out = tmp_path / 'out'
    assert cli.main([f'--submission_directory={tree}', f'--output_dir={out}', '--no_plots',
                     '--self_tuning_ruleset']) == 0
    up = pd.read_csv(out / 'fast_summary.csv', index_col=0)
    # 'fast': Δtime / Δstep = 100/100, 300/200, 600/100 -> median 1.5 (last/last would be 2.5),
    # the same in its three identical trials, so the pooled median is 1.5.
    assert up['step_time (s)'].tolist() == [1.5] * 3
    assert up['step_hint'].tolist() == [registry.get_spec('finewebedu_lm').step_hint] * 3
    assert 'test target reached' not in up.columns
    assert up['val target reached'].all() and up['time to target on val (s)'].tolist() == [1000.0] * 3
    ours = pd.read_csv(out / 'fast_study_summary.csv')
    assert ours['step_time_s'].tolist() == [1.5] * 3
    # The same tree under 0.6 rules: last/last (1000 / 400).
    out6 = tmp_path / 'out6'
    assert cli.main([f'--submission_directory={tree}', f'--output_dir={out6}', '--no_plots', '--self_tuning_ruleset',
                     '--benchmark_version=0.6', '--workloads=finewebedu_lm']) == 0
    up6 = pd.read_csv(out6 / 'fast_summary.csv', index_col=0)
    assert up6['step_time (s)'].tolist() == [2.5] * 3
    assert 'step_hint' not in up6.columns and 'test target metric name' in up6.columns


def test_pooled_median_step_time_matches_upstream_formula():
    # Upstream: per trial np.diff(x, prepend=0) of accumulated_submission_time and global_step,
    # all trials' ratios concatenated, then nanmedian (0/0 = NaN skipped; x/0 = inf counts).
    def trial(steps, times):
        return logs.TrialLog('s', 'study_0', 'w', 'jax', 't', 'p', {
            'global_step': np.array(steps, float), 'accumulated_submission_time': np.array(times, float)})

    a = trial([100, 200, 400], [10, 30, 50])  # ratios 0.1, 0.2, 0.1
    b = trial([100, 100, 300], [20, 20, 80])  # ratios 0.2, NaN (0/0), 0.3
    assert report.trial_step_times([a, b], 'median') == pytest.approx(np.median([0.1, 0.2, 0.1, 0.2, 0.3]))
    assert report.trial_step_times([a], 'last') == pytest.approx(50 / 400)


# --- targets files and version resolution -----------------------------------------------------------

def test_shipped_v1_targets_json_is_generated_from_specs():
    with open(targets.V1_TARGETS_JSON) as f:
        shipped = json.load(f)
    assert shipped == targets.spec_targets_json('1.0')
    rules = benchmark_versions.get('1.0')
    assert shipped['benchmark_version'] == '1.0'
    assert tuple(shipped['base_workloads']) == rules.base_workloads and shipped['held_out_workloads'] == []
    for name, entry in shipped['workloads'].items():
        spec = benchmark_versions.apply(registry.get_spec(name), '1.0')
        assert entry['validation_target_value'] == spec.validation_target_value
        assert entry['target_metric_name'] == spec.target_metric_name and entry['step_hint'] == spec.step_hint
        assert entry['target_metric_goal'] == ('maximize' if spec.higher_is_better else 'minimize')
    assert shipped['workloads']['finewebedu_lm'] == {'target_metric_name': 'ppl', 'target_metric_goal': 'minimize',
                                                     'validation_target_value': 22.2995, 'step_hint': 72000}
    # It reads back as the same targets the specs give.
    from_file, from_specs = targets.from_json(targets.V1_TARGETS_JSON), targets.from_specs('1.0')
    assert from_file.base_workloads == from_specs.base_workloads
    for name, t in from_specs.by_workload.items():
        got = from_file.get(name)
        assert (got.column, got.validation_target, got.higher_is_better) == (t.column, t.validation_target,
                                                                             t.higher_is_better)


def test_v1_targets_agree_with_upstreams_file():
    upstream = _SHARED / 'targets' / 'workload_targets.json'
    if not upstream.is_file():
        pytest.skip(f'{upstream} not present')
    theirs = json.loads(upstream.read_text())
    ours = targets.spec_targets_json('1.0')
    assert theirs['base_workloads'] == ours['base_workloads']
    for name, entry in theirs['workloads'].items():
        assert {k: ours['workloads'][name][k] for k in entry} == entry, name


def _tiny_tree(root):
    write_trial(root, 'a', 0, 'mnist', 1, [(1, 10.0, 0.99)])
    return root


@pytest.mark.parametrize('declared,flag,expected', [
    ('0.5', None, '0.5'), ('0.6', None, '0.6'), (None, None, '1.0'), ('0.5', '1.0', '1.0'), ('0.6', '0.5', '0.5')])
def test_targets_file_version_is_implied_unless_flag_given(tmp_path, declared, flag, expected):
    raw = {'base_workloads': ['mnist'], 'workloads': {'mnist': {'target_metric_name': 'accuracy',
                                                                'validation_target_value': 0.9}}}
    if declared:
        raw['benchmark_version'] = declared
    path = tmp_path / 't.json'
    path.write_text(json.dumps(raw))
    args = cli.add_arguments(__import__('argparse').ArgumentParser()).parse_args(
        ['--submission_directory=x', '--output_dir=y', f'--workload_targets={path}']
        + ([f'--benchmark_version={flag}'] if flag else []))
    tgts, version = cli.resolve_targets(args)
    assert version.name == expected and tgts.base_workloads == ('mnist',)


@pytest.mark.parametrize('extra,fragment', [
    (['--benchmark_version=2.0'], "--benchmark_version='2.0': unknown version"),
    (['--workloads=digits,nosuch'], '--workloads: no workload spec named nosuch'),
])
def test_bad_version_or_workloads_flag_one_line_exit_2(tmp_path, capsys, extra, fragment):
    argv = [f'--submission_directory={_tiny_tree(tmp_path / "logs")}', f'--output_dir={tmp_path / "o"}', '--no_plots']
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err
    assert not (tmp_path / 'o').exists()  # Nothing half-written.


def test_unknown_declared_version_names_the_file(tmp_path, capsys):
    path = tmp_path / 't.json'
    path.write_text(json.dumps({'benchmark_version': 'test', 'base_workloads': ['mnist'], 'workloads': {
        'mnist': {'target_metric_name': 'accuracy', 'validation_target_value': 0.9}}}))
    argv = [f'--submission_directory={_tiny_tree(tmp_path / "logs")}', f'--output_dir={tmp_path / "o"}', '--no_plots',
            f'--workload_targets={path}']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{path}: benchmark_version 'test' is not one of 1.0, 0.6, 0.5; pass --benchmark_version" in err
    assert cli.main(argv + ['--benchmark_version=1.0']) == 0


@pytest.mark.parametrize('version,factor', [('1.0', 1.5), ('0.6', 1.5), ('0.5', 3.0)])
def test_speedups_use_the_versions_budgets_and_self_tuning_factor(tmp_path, version, factor):
    # The reference never reaches fastmri: its time counts as budget x factor + 1 s.
    write_trial(tmp_path / 'logs', 'ref', 0, 'fastmri', 1, [(1, 100.0, 0.1)], ('global_step', 'score', 'validation/ssim'))
    write_trial(tmp_path / 'logs', 'fast', 0, 'fastmri', 1, [(1, 100.0, 0.9)], ('global_step', 'score', 'validation/ssim'))
    out = tmp_path / 'out'
    assert cli.main([f'--submission_directory={tmp_path / "logs"}', f'--output_dir={out}', '--no_plots',
                     '--self_tuning_ruleset', f'--benchmark_version={version}', '--reference_submission=ref']) == 0
    speed = pd.read_csv(out / 'speedups.csv', index_col=0)
    budget = benchmark_versions.get(version).budget('fastmri')
    assert speed.loc['fast', 'fastmri'] == pytest.approx((budget * factor + 1) / 100.0)


# --- upstream's output files and the plots ----------------------------------------------------------

def test_upstream_profile_file_and_v06_summary_layout(tmp_path):
    write_trial(tmp_path / 'logs', 'a', 0, 'mnist', 1, [(100, 10.0, 0.5, 0.4), (400, 50.0, 0.98, 0.99)],
                ('global_step', 'score', 'validation/accuracy', 'test/accuracy'))
    write_trial(tmp_path / 'logs', 'a', 0, 'mnist', 2, [(100, 20.0, 0.5, 0.4)],
                ('global_step', 'score', 'validation/accuracy', 'test/accuracy'))
    out = tmp_path / 'out'
    assert cli.main([f'--submission_directory={tmp_path / "logs"}', f'--output_dir={out}', '--no_plots',
                     '--benchmark_version=0.6', '--workloads=mnist', '--num_studies=1', '--num_trials=2']) == 0
    profile = pd.read_csv(out / 'performance_profile_score.csv', index_col=0)
    ours = pd.read_csv(out / 'performance_profiles.csv', index_col=0)
    np.testing.assert_array_equal(profile.to_numpy(), ours.to_numpy())
    np.testing.assert_allclose([float(c) for c in profile.columns], np.linspace(1, 4, 100), rtol=0, atol=0)
    up = pd.read_csv(out / 'a_summary.csv', index_col=0)
    assert list(up.columns) == [
        'workload', 'trial', 'val target metric name', 'val target metric value', 'val target reached',
        'best metric value on val', 'time to best eval on val (s)', 'time to target on val (s)', 'step_time (s)',
        'test target metric name', 'test target metric value', 'test target reached', 'best metric value on test',
        'time to best eval on test (s)', 'time to target on test (s)']
    mnist = registry.get_spec('mnist')
    first, second = up.iloc[0], up.iloc[1]
    assert (first['workload'], first['trial'], first['val target metric name']) == ('mnist_pytorch', 'trial_1',
                                                                                  'validation/accuracy')
    assert first['val target metric value'] == mnist.validation_target_value and bool(first['val target reached'])
    assert first['time to target on val (s)'] == 50.0 and first['step_time (s)'] == 50.0 / 400
    assert first['test target metric value'] == mnist.test_target_value and bool(first['test target reached'])
    assert not bool(second['val target reached']) and math.isinf(second['time to target on val (s)'])
    assert second['best metric value on val'] == 0.5 and second['time to best eval on val (s)'] == 20.0


@pytest.mark.parametrize('seconds,unit', [(30, 'seconds'), (120, 'seconds'), (121, 'minutes'), (7_200, 'minutes'),
                                          (7_201, 'hours'), (60_000, 'hours')])
def test_time_unit_by_range(seconds, unit):
    divisor, name = plots.time_unit(seconds)
    assert name == unit and divisor == {'seconds': 1, 'minutes': 60, 'hours': 3600}[unit]


def test_time_to_target_chart_axes_pick_their_unit(tmp_path):
    tgts = targets.from_specs(workloads=('digits', 'mnist', 'cifar'))
    for w, t in (('digits', 30.0), ('mnist', 900.0), ('cifar', 30_000.0)):
        write_trial(tmp_path, 'a', 0, w, 1, [(1, t, 0.99)])
    result = score.score_tree(str(tmp_path), tgts, self_tuning=True, num_studies=1)
    fig = plots.time_to_target_figure(result)
    labels = {ax.get_title(): ax.get_xlabel() for ax in fig.axes}
    assert labels == {'digits': 'seconds to target', 'mnist': 'minutes to target', 'cifar': 'hours to target'}
    # Bars are drawn in the axis' unit: 900 s is 15 minutes.
    mnist_ax = next(ax for ax in fig.axes if ax.get_title() == 'mnist')
    assert mnist_ax.patches[0].get_width() == pytest.approx(15.0)
