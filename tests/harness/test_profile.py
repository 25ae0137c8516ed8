"""`algoperf profile`: phases cover the step, agree with the runner's clock, outputs written."""

import json

import pytest

from algoperf import cli, profiling, registry, spec
from algoperf.registry import WorkloadNotAvailableError

BASELINE = 'submissions/baselines/nadamw/submission.py'


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp('profile')
    return profiling.profile_workload('digits', BASELINE, steps=60, warmup=5, output_dir=str(out)), out


def test_every_phase_reported_non_negative(report):
    r, _ = report
    assert set(r['phases']) == set(profiling.PHASES)
    for name, s in r['phases'].items():
        assert s['mean'] >= 0 and s['p50'] >= 0 and s['p90'] >= s['p50'] - 1e-12, name
    # A real training step spends time in each of these on CPU (h2d is CUDA-only).
    for name in ('data_selection', 'forward', 'backward', 'optimizer', 'submission_other', 'runner'):
        assert r['phases'][name]['mean'] > 0, name
    assert r['phases']['h2d']['mean'] == 0
    assert sum(s['share'] for s in r['phases'].values()) == pytest.approx(1.0)
    assert r['measured_steps'] == 60 and r['examples_per_second'] > 0


def test_phases_add_up_to_the_runners_own_clock(report):
    r, _ = report
    # The runner's accumulated submission time over the same steps is measured by its own
    # Clock, independently of the profiler's phase boundaries.
    assert r['phase_sum_seconds'] == pytest.approx(r['runner_clock_seconds'], rel=0.05)


def test_json_and_png_written(report):
    r, out = report
    data = json.loads((out / 'profile.json').read_text())
    assert data['workload'] == 'digits' and data['global_batch_size'] == 64
    assert len(data['per_step']['forward']) == 60
    assert (out / 'profile.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_profile_with_trace(tmp_path, capsys):
    trace = tmp_path / 'trace.json'
    code = cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=5', '--warmup=2',
                     f'--output_dir={tmp_path / "p"}', f'--trace={trace}', '--no_eval'])
    assert code == 0
    out = capsys.readouterr().out
    assert 'forward' in out and 'examples/s' in out
    events = json.loads(trace.read_text())['traceEvents']
    assert any(e.get('name') == 'phase:forward' for e in events)


def test_profile_unknown_workload_one_line_error(tmp_path, capsys):
    assert cli.main(['profile', '--workload=nope', f'--submission={BASELINE}', f'--output_dir={tmp_path}']) == 2
    assert "Unknown workload 'nope'" in capsys.readouterr().err


def _implemented(variants: bool = True):
    names = []
    for name in registry.list_workloads():
        if not variants and registry.get_spec(name).kind.value == 'variant':
            continue
        try:
            registry.get_workload_class(name)
        except WorkloadNotAvailableError:
            continue
        names.append(name)
    return names


def test_at_least_the_dev_workloads_are_implemented():
    assert {'digits', 'mnist'} <= set(_implemented())


# Variants share their base's synthetic source; their models are covered by their own tests.
@pytest.mark.parametrize('name', _implemented(variants=False))
def test_synthetic_source_batches_fit_the_model(name):
    workload = registry.get_workload(name)
    queue = workload._build_synthetic_input_queue([1, 2], 'train', 8)
    batch = next(queue)
    params, state = workload.init_model_fn([0, 0])
    logits, _ = workload.model_fn(params, batch, state, spec.ForwardPassMode.TRAIN, None, True, 0.0)
    loss = workload.loss_fn(batch['targets'], logits, batch.get('weights'))
    # LibriSpeech's targets are (ids, paddings), as upstream's.
    targets = batch['targets'][0] if isinstance(batch['targets'], tuple) else batch['targets']
    # One loss per row of the targets: 8 examples (OGBG adds its padding graph: 9).
    assert loss['summed'].isfinite() and loss['per_example'].shape[0] == targets.shape[0] >= 8
    eval_batch = next(workload._build_synthetic_input_queue([1, 2], 'validation', 8))
    # Eval weights mask padding: one per example, or per (graph, task) label for OGBG;
    # LibriSpeech marks padding with its paddings arrays instead.
    if 'weights' in eval_batch:
        assert eval_batch['weights'].shape[0] == eval_batch['targets'].shape[0] >= 8


def test_eval_is_timed_on_a_few_batches_and_extrapolated():
    # criteo1tb_test's full eval is 31,929 batches of 8,192 (hours on CPU): 1 per split runs.
    report = profiling.profile_workload('criteo1tb_test', BASELINE, steps=2, warmup=0, global_batch_size=64,
                                        eval_batches=1)
    assert report['eval_batches_measured'] == 3 and report['eval_batches_full'] == 31_929
    assert report['eval_seconds'] == pytest.approx(report['eval_seconds_measured'] * 31_929 / 3)
    small = profiling.profile_workload('digits', BASELINE, steps=2, warmup=0, eval_batches=1)
    assert small['eval_batches_measured'] == small['eval_batches_full'] == 3  # digits: one batch per split
    with pytest.raises(ValueError, match='eval_batches'):
        profiling.profile_workload('digits', BASELINE, steps=2, warmup=0, eval_batches=0)
