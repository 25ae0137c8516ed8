"""Schedule-Free AdamW submission: runner trials, eval swap vs `schedulefree`, stall reset.

The package comparison spells out upstream's hyperparameters literally (not read from
the submission), so a wrong constant in the submission fails it as well.
"""

import collections
import copy
import json
import os
import pathlib

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tolerances import tolerance

from algoperf import checkpoint_utils, cli, registry
from submissions.optimizers.schedule_free import AdamWScheduleFree
from submissions.schedule_free_adamw import submission as sf

SUB = 'submissions/schedule_free_adamw/submission.py'
SPACE = 'submissions/schedule_free_adamw/tuning_search_space.json'
# Upstream's self-tuning constants (schedulefree/algoperf/self_tuning/schedule_free_adamw).
UPSTREAM_SELF = {
    'lr': 0.0025,
    'betas': (0.9, 0.9955159689799007),
    'eps': 1e-8,
    'weight_decay': 0.08121616522670176,
    'r': 0.75,
    'weight_lr_power': 2,
}
UPSTREAM_SELF_LABEL_SMOOTHING = 0.2
STEPS = 40  # Spans the self-tuning warmup on digits: int(0.02 * 2000 * 0.75) = 30 steps.


def _space():
    return json.loads(pathlib.Path(SPACE).read_text())


def _run(tmp_path, *flags):
    argv = [
        'run',
        '--workload=digits',
        f'--submission_path={SUB}',
        f'--experiment_dir={tmp_path}',
        '--experiment_name=exp',
        '--noprogress',
        '--rng_seed=0',
        *flags,
    ]
    return cli.main(argv)


def _check_trial(d, max_steps):
    """Logs written, training improved the score, the last checkpoint holds x."""
    r = json.loads((d / 'result.json').read_text())
    steps = r['global_step']
    # Evals come every 1 s of wall time: on a slow or busy machine one may reach the
    # targets (and end the trial) before max_steps.
    assert (r['status'], steps) == ('max_global_steps', max_steps) or (
        r['status'] == 'targets_reached' and steps <= max_steps
    ), r
    evals = pd.read_csv(d / 'eval_measurements.csv')
    first, last = evals.iloc[0], evals.iloc[-1]
    assert first['global_step'] == 1 and last['global_step'] == steps
    # From chance (~0.1) after one step to well above it: the optimizer trains.
    assert last['validation/accuracy'] > 0.9 > first['validation/accuracy'] + 0.5
    assert last['validation/loss'] < first['validation/loss'] - 1.0
    train = pd.read_csv(d / 'measurements.csv').dropna(subset=['loss'])
    assert (
        train['global_step'].tolist()[:3] == [0, 1, 2]
        and train['loss'].iloc[-1] < train['loss'].iloc[0]
    )
    ckpt = checkpoint_utils.load_checkpoint_file(
        checkpoint_utils.latest_checkpoint(str(d)), torch.device('cpu')
    )
    groups = ckpt['optimizer_state']['optimizer']['param_groups']
    assert [g['train_mode'] for g in groups] == [False] and groups[0]['k'] == steps
    return r


def test_self_tuning_trial_on_digits(tmp_path):
    assert _run(tmp_path, '--tuning_ruleset=self', '--max_global_steps=100') == 0
    d = tmp_path / 'exp' / 'digits_pytorch' / 'trial_1'
    assert _check_trial(d, 100)['hyperparameters'] is None
    assert not (d / 'hparams.json').exists()


def test_external_tuning_trial_on_digits(tmp_path):
    assert (
        _run(
            tmp_path,
            f'--tuning_search_space={SPACE}',
            '--num_tuning_trials=1',
            '--max_global_steps=100',
        )
        == 0
    )
    d = tmp_path / 'exp' / 'digits_pytorch' / 'trial_1'
    _check_trial(d, 100)
    point = json.loads((d / 'hparams.json').read_text())
    assert point == _space()[0] and point['learning_rate'] == 0.004


def _digits_setup():
    wl = registry.get_workload('digits')
    model, _ = wl.init_model_fn([0, 0])
    queue = wl._build_input_queue(
        [1, 1], 'train', data_dir=None, global_batch_size=sf.get_batch_size('digits')
    )
    return wl, model, [next(queue) for _ in range(STEPS + 1)]


def _update(wl, model, opt_state, batch, step, eval_results=()):
    opt_state, model, _ = sf.update_params(
        workload=wl,
        current_param_container=model,
        current_params_types=wl.model_params_types,
        model_state=None,
        hyperparameters=None,
        batch=batch,
        loss_type=wl.loss_type,
        optimizer_state=opt_state,
        eval_results=list(eval_results),
        global_step=step,
        rng=[0, step],
    )
    return opt_state, model


def _prepare(wl, model, opt_state):
    opt_state, model, _ = sf.prepare_for_eval(
        workload=wl,
        current_param_container=model,
        current_params_types=wl.model_params_types,
        model_state=None,
        hyperparameters=None,
        loss_type=wl.loss_type,
        optimizer_state=opt_state,
        eval_results=[],
        global_step=STEPS,
        rng=[0, 0],
    )
    return opt_state, model


def _package_step(model, opt, batch):
    opt.train()
    model.train()
    opt.zero_grad()
    logits = model(batch['inputs'])
    loss = F.cross_entropy(
        logits, batch['targets'], reduction='sum', label_smoothing=UPSTREAM_SELF_LABEL_SMOOTHING
    )
    (loss / len(logits)).backward()
    opt.step()


def _close(a, b, kind='submission_vs_schedulefree'):
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x.detach(), y.detach(), **tolerance(kind, torch.float32))


def test_eval_swap_and_trajectory_match_schedulefree_package():
    schedulefree = pytest.importorskip('schedulefree')
    wl, model, batches = _digits_setup()
    ref = copy.deepcopy(model)
    warmup = int(0.02 * wl.step_hint * 0.75)
    pkg = schedulefree.AdamWScheduleFree(
        ref.parameters(), warmup_steps=warmup, foreach=False, **UPSTREAM_SELF
    )
    opt_state = sf.init_optimizer_state(wl, model, None, None, [0, 0])
    opt = opt_state['optimizer']
    for step, batch in enumerate(batches[:STEPS]):
        opt_state, model = _update(wl, model, opt_state, batch, step)
        _package_step(ref, pkg, batch)
    _close(model, ref)  # y, train mode

    y = [p.detach().clone() for p in model.parameters()]
    opt_state, model = _prepare(wl, model, opt_state)
    pkg.eval()
    assert not opt.param_groups[0]['train_mode'] and opt.param_groups[0]['k'] == STEPS
    _close(model, ref)  # x, eval mode
    beta1 = UPSTREAM_SELF['betas'][0]
    for p, y_p in zip(model.parameters(), y):
        # The same single lerp the optimizer performs on CPU: bit for bit.
        torch.testing.assert_close(
            p.detach(),
            torch.lerp(y_p, opt.state[p]['z'], 1 - 1 / beta1),
            **tolerance('bitwise', torch.float32),
        )
    x = [p.detach().clone() for p in model.parameters()]
    opt_state, model = _prepare(wl, model, opt_state)  # A second prepare leaves x alone.
    assert all(torch.equal(p, x_p) for p, x_p in zip(model.parameters(), x))

    # The next update swaps back to y first (a step in eval mode would raise) and steps.
    opt_state, model = _update(wl, model, opt_state, batches[STEPS], STEPS)
    _package_step(ref, pkg, batches[STEPS])
    assert opt.param_groups[0]['train_mode'] and opt.param_groups[0]['k'] == STEPS + 1
    _close(model, ref)


def test_prepare_for_eval_is_needed_for_x():
    # Guards the test above: y and x differ by far more than its tolerance.
    wl, model, batches = _digits_setup()
    opt_state = sf.init_optimizer_state(wl, model, None, None, [0, 0])
    for step, batch in enumerate(batches[:STEPS]):
        opt_state, model = _update(wl, model, opt_state, batch, step)
    y = copy.deepcopy(model)
    _, model = _prepare(wl, model, opt_state)
    with pytest.raises(AssertionError):
        _close(model, y)


def _fake_evals(values):
    return [(10 * i, {'validation/accuracy': v}) for i, v in enumerate(values)]


def test_stall_reset_restarts_from_init_with_half_lr():
    wl, model, batches = _digits_setup()
    x0 = copy.deepcopy(model)
    opt_state = sf.init_optimizer_state(wl, model, None, None, [0, 0])
    for step, batch in enumerate(batches[:5]):
        opt_state, model = _update(wl, model, opt_state, batch, step)
    late = int(0.1 * wl.step_hint) + 1
    # Improving evals (and, below, any check before 10% of step_hint) leave training alone.
    opt_state, model = _update(
        wl, model, opt_state, batches[5], late, _fake_evals([0.1, 0.3, 0.5, 0.7])
    )
    stalled = _fake_evals([0.1, 0.105, 0.1, 0.108, 0.1])
    opt_state, model = _update(wl, model, opt_state, batches[6], late - 1, stalled)
    assert (
        opt_state['optimizer'].param_groups[0]['k'] == 7
        and not opt_state['stall_reset'].has_forced_reset
    )

    opt_state, model = _update(wl, model, opt_state, batches[7], late, stalled)
    group = opt_state['optimizer'].param_groups[0]
    assert (
        opt_state['stall_reset'].has_forced_reset and group['k'] == 1 and group['lr'] == 0.0025 / 2
    )
    # Equal to one fresh step from the initial parameters at half the learning rate.
    fresh = AdamWScheduleFree(
        x0.parameters(),
        **{**UPSTREAM_SELF, 'lr': 0.0025 / 2},
        warmup_steps=int(0.02 * wl.step_hint * 0.75),
    )
    fresh_state = {'optimizer': fresh}
    fresh.train()
    _, x0 = _update(wl, x0, fresh_state, batches[7], 0)
    _close(model, x0, kind='bitwise')
    # Checked once per eval: the same eval history does not halve the lr again.
    opt_state, model = _update(wl, model, opt_state, batches[8], late + 1, stalled)
    assert group['lr'] == 0.0025 / 2 and group['k'] == 2


@pytest.mark.parametrize('point', [None, 0, 3])
def test_hyperparameters_reach_the_optimizer_model_and_loss(point):
    wl, model, batches = _digits_setup()
    seen = {}
    model_fn, loss_fn = wl.model_fn, wl.loss_fn
    wl.model_fn = lambda **kw: (
        seen.update(dropout=kw.get('dropout_rate', 'default')),
        model_fn(**kw),
    )[1]
    wl.loss_fn = lambda **kw: (seen.update(label_smoothing=kw['label_smoothing']), loss_fn(**kw))[1]
    if point is None:  # Self-tuning: upstream's constants, the workload's default dropout.
        hp = None
        expected = {
            'dropout': 'default',
            'label_smoothing': 0.2,
            'lr': 0.0025,
            'beta2': 0.9955159689799007,
            'weight_decay': 0.08121616522670176,
            'warmup_steps': int(0.02 * wl.step_hint * 0.75),
        }
    else:
        raw = _space()[point]
        hp = collections.namedtuple('Hyperparameters', raw)(**raw)
        expected = {
            'dropout': raw['dropout_rate'],
            'label_smoothing': raw['label_smoothing'],
            'lr': raw['learning_rate'],
            'beta2': raw['beta2'],
            'weight_decay': raw['weight_decay'],
            'warmup_steps': int(0.02 * wl.step_hint),
        }
    opt_state = sf.init_optimizer_state(wl, model, None, hp, [0, 0])
    sf.update_params(
        workload=wl,
        current_param_container=model,
        current_params_types=wl.model_params_types,
        model_state=None,
        hyperparameters=hp,
        batch=batches[0],
        loss_type=wl.loss_type,
        optimizer_state=opt_state,
        eval_results=[],
        global_step=0,
        rng=[0, 0],
    )
    group = opt_state['optimizer'].param_groups[0]
    got = dict(
        seen,
        lr=group['lr'],
        beta2=group['betas'][1],
        weight_decay=group['weight_decay'],
        warmup_steps=group['warmup_steps'],
    )
    assert got == expected
    assert group['betas'][0] == 0.9 and group['r'] == 0.75 and group['weight_lr_power'] == 2
    assert ('stall_reset' in opt_state) == (hp is None)  # Upstream's reset is self-tuning only.


def test_batch_sizes_are_upstreams():
    assert sf.get_batch_size('digits') == 64
    assert sf.get_batch_size('librispeech_conformer') == 224
    assert sf.get_batch_size('fastmri') == 16
    with pytest.raises(ValueError, match='Unsupported workload name'):
        sf.get_batch_size('wmt_post_ln')  # The runner retries the base name.
    assert os.path.exists(SPACE)
