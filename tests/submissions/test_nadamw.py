"""NAdamW: foreach optimizer vs its reference over many steps, and its reductions."""

import copy

import pytest
import torch

from submissions.optimizers.nadamw import NAdamW, nadamw_reference
from tolerances import tolerance

SHAPES = [(6, 42, 123), (431,), (1,), (17, 3)]
HP = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


def _grads(step, dtype):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_matches_reference_over_30_steps(dtype):
    fast = [p.clone().requires_grad_(True) for p in _params(dtype)]
    ref = [p.clone() for p in _params(dtype)]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    opt = NAdamW(fast, **HP)
    for step in range(1, 31):
        grads = _grads(step, dtype)
        for p, g in zip(fast, grads):
            p.grad = g.clone()
        opt.step()
        nadamw_reference(
            ref, grads, m, v, step, HP['lr'], *HP['betas'], HP['eps'], HP['weight_decay']
        )
    tol = tolerance('optimizer_trajectory', dtype)
    for p, r, mm, vv in zip(fast, ref, m, v):
        torch.testing.assert_close(p.detach(), r, **tol)
        torch.testing.assert_close(opt.state[p]['exp_avg'], mm, **tol)
        torch.testing.assert_close(opt.state[p]['exp_avg_sq'], vv, **tol)
        assert opt.state[p]['step'].item() == 30


def test_reduces_to_adamw_when_beta1_is_zero():
    # With beta1 = 0 the Nesterov look-ahead is the gradient itself: NAdamW == AdamW.
    hp = dict(lr=1e-2, betas=(0.0, 0.99), eps=1e-8, weight_decay=0.05)
    ours = [p.clone().requires_grad_(True) for p in _params(torch.float64)]
    theirs = [p.clone().requires_grad_(True) for p in _params(torch.float64)]
    opt_a, opt_b = NAdamW(ours, **hp), torch.optim.AdamW(theirs, **hp)
    for step in range(1, 21):
        for a, b, g in zip(ours, theirs, _grads(step, torch.float64)):
            a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tolerance('optimizer_trajectory', torch.float64))


def test_parameters_without_grad_keep_their_own_step_count():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = NAdamW([a, b], **HP)
    a.grad = torch.ones(3)
    opt.step()
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    assert opt.state[a]['step'].item() == 2 and opt.state[b]['step'].item() == 1
    # b's first step has t = 1: its update equals a's first update.
    ref = [torch.zeros(3)]
    nadamw_reference(
        ref,
        [torch.ones(3)],
        [torch.zeros(3)],
        [torch.zeros(3)],
        1,
        HP['lr'],
        *HP['betas'],
        HP['eps'],
        HP['weight_decay'],
    )
    torch.testing.assert_close(b.detach(), ref[0], rtol=1e-6, atol=0)


def test_state_dict_roundtrip_continues_identically():
    p1 = [p.clone().requires_grad_(True) for p in _params(torch.float32)]
    opt1 = NAdamW(p1, **HP)
    for step in range(1, 6):
        for p, g in zip(p1, _grads(step, torch.float32)):
            p.grad = g
        opt1.step()
    p2 = [p.detach().clone().requires_grad_(True) for p in p1]
    opt2 = NAdamW(p2, **HP)
    opt2.load_state_dict(
        copy.deepcopy(opt1.state_dict())
    )  # As a checkpoint would: no shared tensors.
    for step in range(6, 9):
        for a, b, g in zip(p1, p2, _grads(step, torch.float32)):
            a.grad, b.grad = g.clone(), g.clone()
        opt1.step()
        opt2.step()
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
