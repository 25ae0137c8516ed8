"""Checkpoints: upstream keys, weights-only loading, restore of all state."""

import pytest
import torch

from algoperf import checkpoint_utils


def _model_and_opt(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=10)
    return model, {'optimizer': opt, 'scheduler': sched}


def _train(model, state, steps):
    for _ in range(steps):
        state['optimizer'].zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        state['optimizer'].step()
        state['scheduler'].step()


def test_save_has_upstream_keys_and_loads_weights_only(tmp_path):
    model, opt_state = _model_and_opt(0)
    _train(model, opt_state, 3)
    train_state = {
        'accumulated_submission_time': 1.5,
        'last_eval_time': 2.0,
        'training_complete': False,
    }
    evals = [(3, {'validation/loss': 0.5, 'score': 1.5})]
    path = checkpoint_utils.save_checkpoint(
        opt_state, model, None, train_state, evals, 3, 0, str(tmp_path), True
    )
    ckpt = torch.load(path, weights_only=True)  # Must not need full unpickling.
    assert set(ckpt) == {
        'model_params',
        'optimizer_state',
        'model_state',
        'train_state',
        'eval_results',
        'global_step',
        'preemption_count',
    }
    assert set(ckpt['optimizer_state']) == {'optimizer', 'scheduler'}
    assert ckpt['eval_results'] == tuple(evals) and ckpt['global_step'] == 3


def test_restore_roundtrip_and_preemption_count(tmp_path):
    model, opt_state = _model_and_opt(0)
    _train(model, opt_state, 4)
    checkpoint_utils.save_checkpoint(
        opt_state, model, None, {'x': 1.0}, [(4, {'a': 1.0})], 4, 0, str(tmp_path), True
    )
    _train(model, opt_state, 2)
    checkpoint_utils.save_checkpoint(
        opt_state, model, None, {'x': 2.0}, [(6, {'a': 2.0})], 6, 0, str(tmp_path), True
    )
    fresh, fresh_state = _model_and_opt(1)
    out = checkpoint_utils.maybe_restore_checkpoint(
        fresh_state, fresh, None, {'x': 0.0, 'y': 5}, [], 0, 0, str(tmp_path), torch.device('cpu')
    )
    _, restored, _, train_state, evals, step, preemption = out
    assert step == 6 and preemption == 1 and evals == [(6, {'a': 2.0})]
    assert train_state == {'x': 2.0, 'y': 5}
    for a, b in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fresh_state['scheduler'].state_dict() == opt_state['scheduler'].state_dict()
    torch.testing.assert_close(
        fresh_state['optimizer'].state_dict()['state'][0]['exp_avg'],
        opt_state['optimizer'].state_dict()['state'][0]['exp_avg'],
        rtol=0,
        atol=0,
    )


def test_only_latest_kept_without_intermediate(tmp_path):
    model, opt_state = _model_and_opt(0)
    for step in (1, 2, 3):
        checkpoint_utils.save_checkpoint(
            opt_state, model, None, {}, [], step, 0, str(tmp_path), False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint_3']


def test_latest_checkpoint_uses_numeric_order(tmp_path):
    for step in (9, 10, 100):
        (tmp_path / f'checkpoint_{step}').write_bytes(b'')
    assert checkpoint_utils.latest_checkpoint(str(tmp_path)).endswith('checkpoint_100')


class _Custom:
    def __init__(self):
        self.value = 3


def test_non_tensor_content_is_refused_never_unpickled(tmp_path):
    # Was: a warning and a weights_only=False retry, which runs code from the file (issue 18).
    from algoperf.errors import CheckpointError

    path = tmp_path / 'checkpoint_1'
    torch.save({'global_step': 1, 'thing': _Custom()}, path)
    with pytest.raises(CheckpointError, match='checkpoint_1: refusing to load'):
        checkpoint_utils.load_checkpoint_file(str(path), torch.device('cpu'))
