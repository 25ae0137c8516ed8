"""Shampoo (submissions/optimizers/shampoo*.py): blocking, reductions, trajectory, state, DDP."""

import copy
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tolerances import tolerance

from submissions.optimizers import shampoo_blocks as blocks
from submissions.optimizers.nadamw import nadamw_reference
from submissions.optimizers.shampoo import Shampoo

# Odd sizes: a matrix that merges into one 600-dim factor, a bias, a conv kernel, a scalar,
# a matrix blocked into 1024 + 176 rows, an empty tensor, and a 3-d tensor kept order 3.
SHAPES = [(20, 30), (30,), (4, 5, 3, 3), (1,), (1200, 7), (0, 5), (40, 30, 50)]


def _params(dtype=torch.float64, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes
    ]


def _set_grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)


# ---- blocking -------------------------------------------------------------------------


def test_merge_dims_and_block_plans():
    assert blocks.merge_dims((64, 64, 3, 3), 1024) == (64, 576)
    assert blocks.merge_dims((2048, 512, 1, 1), 1024) == (2048, 512)
    assert blocks.merge_dims((20, 30), 1024) == (600,)
    assert blocks.merge_dims((), 1024) == ()
    plan = blocks.plan_blocks((2048, 512), 1024, 1_000_000, False)
    assert plan.preconditioned and plan.block_shapes() == [(1024, 512), (1024, 512)]
    plan = blocks.plan_blocks((1200, 7), 1024, 1_000_000, False)
    assert plan.block_shapes() == [(1024, 7), (176, 7)]
    assert not blocks.plan_blocks((512,), 1024, 1_000_000, False).preconditioned
    assert blocks.plan_blocks((512,), 1024, 1_000_000, True).preconditioned
    assert not blocks.plan_blocks(
        (1_000_000, 16), 1024, 1_000_000, False
    ).preconditioned  # Criteo's table
    assert not blocks.plan_blocks((0, 5), 1024, 1_000_000, False).preconditioned


def test_order3_contractions_match_einsum():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(blocks.factor_contraction(G, 1), torch.einsum('aib,ajb->ij', G, G))
    roots = [torch.randn(d, d, generator=g, dtype=torch.float64) for d in (3, 4, 5)]
    roots = [r + r.T for r in roots]
    want = torch.einsum('abc,ai,bj,ck->ijk', G, *roots)
    torch.testing.assert_close(blocks.precondition(G, roots), want)
    assert (
        blocks.root_order(2, 1.0, 0) == 4
        and blocks.root_order(2, 1.0, 2) == 2
        and blocks.root_order(3, 2.0, 0) == 3
    )


# ---- reductions to known optimizers ---------------------------------------------------


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_without_preconditioning_equals_torch_adamw(dtype):
    hp = dict(lr=1e-2, weight_decay=0.1)
    ours, theirs = _params(dtype), _params(dtype)
    opt = Shampoo(
        ours,
        betas=(0.9, 0.999),
        grafting_beta2=0.999,
        grafting_epsilon=1e-8,
        start_preconditioning_step=math.inf,
        **hp,
    )
    ref = torch.optim.AdamW(theirs, betas=(0.9, 0.999), eps=1e-8, **hp)
    for step in range(1, 31):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tolerance('optimizer_trajectory', dtype))
        if a.numel():
            torch.testing.assert_close(
                opt.state[a]['exp_avg_sq'],
                ref.state[b]['exp_avg_sq'],
                **tolerance('optimizer_trajectory', dtype),
            )


def test_without_preconditioning_use_nadam_equals_upstream_nadamw():
    ours, theirs = _params(), [p.detach().clone() for p in _params()]
    m = [torch.zeros_like(p) for p in theirs]
    v = [torch.zeros_like(p) for p in theirs]
    opt = Shampoo(
        ours,
        lr=3e-3,
        betas=(0.9, 0.98),
        grafting_beta2=0.98,
        weight_decay=0.05,
        start_preconditioning_step=math.inf,
        use_nadam=True,
    )
    for step in range(1, 31):
        _set_grads(ours, step)
        opt.step()
        nadamw_reference(theirs, [p.grad for p in ours], m, v, step, 3e-3, 0.9, 0.98, 1e-8, 0.05)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(
            a.detach(), b, **tolerance('optimizer_trajectory', torch.float64)
        )


def test_sgd_grafting_with_nesterov_momentum_equals_torch_sgd():
    # The entry's third point: beta1 = 0, SGD grafting, Nesterov momentum, decoupled decay
    # added to the direction before momentum = torch SGD's weight_decay.
    ours, theirs = _params(), _params()
    opt = Shampoo(
        ours,
        lr=0.05,
        betas=(0.0, 0.999),
        momentum=0.9,
        use_nesterov=True,
        weight_decay=1e-3,
        grafting='sgd',
        start_preconditioning_step=math.inf,
    )
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for step in range(1, 21):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tolerance('optimizer_trajectory', torch.float64))


# ---- the preconditioned trajectory against an independent reference --------------------


def _reference_shampoo(params, steps, lr, b1, b2, eps, wd, freq):
    """Single-block matrices only: the update in the module docstring, eigh in fp64."""
    ps = [p.detach().clone() for p in params]
    L = [torch.zeros(p.shape[0], p.shape[0], dtype=torch.float64) for p in ps]
    R = [torch.zeros(p.shape[1], p.shape[1], dtype=torch.float64) for p in ps]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    rl = [None] * len(ps)
    rr = [None] * len(ps)

    def root(A, t):
        lam, Q = torch.linalg.eigh(A / (1 - b2**t) + eps * torch.eye(A.shape[0], dtype=A.dtype))
        return (Q * lam.clamp_min(eps).pow(-0.25)) @ Q.T

    for t in range(1, steps + 1):
        g_all = torch.Generator().manual_seed(1000 + t)
        for i, p in enumerate(ps):
            g = torch.randn(p.shape, generator=g_all, dtype=torch.float64)
            L[i] = b2 * L[i] + (1 - b2) * g @ g.T
            R[i] = b2 * R[i] + (1 - b2) * g.T @ g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if t % freq == 0:
                rl[i], rr[i] = root(L[i], t), root(R[i], t)
            m[i] = b1 * m[i] + (1 - b1) * g
            mh = m[i] / (1 - b1**t)
            graft = mh / ((v[i] / (1 - b2**t)).sqrt() + 1e-8)
            if t >= freq:
                s = rl[i] @ mh @ rr[i]
                d = s * graft.norm() / (s.norm() + 1e-12)
            else:
                d = graft
            p -= lr * (d + wd * p)
    return ps


def test_preconditioned_trajectory_matches_independent_reference():
    shapes = [(6, 9), (33, 17)]  # one block each, and no merging (6 * 9 > 40)
    ours = _params(shapes=shapes)
    opt = Shampoo(
        ours,
        lr=1e-2,
        betas=(0.9, 0.99),
        grafting_beta2=0.99,
        epsilon=1e-6,
        weight_decay=0.01,
        precondition_frequency=5,
        max_preconditioner_dim=40,
        root_method='eigh',
    )
    for step in range(1, 26):
        _set_grads(ours, step)
        opt.step()
    want = _reference_shampoo(_params(shapes=shapes), 25, 1e-2, 0.9, 0.99, 1e-6, 0.01, 5)
    for a, b in zip(ours, want):
        torch.testing.assert_close(
            a.detach(), b, **tolerance('optimizer_trajectory', torch.float64)
        )
    assert opt.root_stats.eigh == 5 * 4 and opt.root_failures == 0


def test_blocked_and_merged_parameters_precondition_and_train():
    params = _params(torch.float32)
    opt = Shampoo(params, lr=1e-2, betas=(0.9, 0.999), precondition_frequency=3, epsilon=1e-8)
    for step in range(1, 10):
        _set_grads(params, step)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    st = opt.state[params[4]]  # (1200, 7): two row blocks
    assert [[f.shape[0] for f in fs] for fs in st['factors']] == [[1024, 7], [176, 7]]
    assert not torch.equal(st['roots'][0][0], torch.eye(1024))
    assert 'factors' not in opt.state[params[1]]  # the bias takes the grafting update alone
    assert opt.root_stats.eigh + opt.root_stats.warm > 0


def test_nonfinite_root_keeps_previous_root():
    (p,) = _params(torch.float32, shapes=[(8, 6)])
    opt = Shampoo([p], lr=1e-3, precondition_frequency=1, epsilon=1e-8, root_method='eigh')
    _set_grads([p], 1)
    opt.step()
    before = [r.clone() for r in opt.state[p]['roots'][0]]
    opt.state[p]['factors'][0][0][0, 0] = float('nan')
    _set_grads([p], 2)
    opt.step()
    assert opt.root_failures >= 1
    torch.testing.assert_close(opt.state[p]['roots'][0][0], before[0], rtol=0, atol=0)


# ---- state ----------------------------------------------------------------------------


@pytest.mark.parametrize('root_method', ['eigh', 'warm'])
def test_state_dict_round_trip_continues_the_same_trajectory(root_method):
    kw = dict(
        lr=1e-2,
        betas=(0.9, 0.99),
        momentum=0.5,
        use_nesterov=True,
        weight_decay=0.01,
        precondition_frequency=4,
        epsilon=1e-8,
        root_method=root_method,
    )
    a = _params(torch.float32)
    opt_a = Shampoo(a, **kw)
    for step in range(1, 11):
        _set_grads(a, step)
        opt_a.step()
    saved = copy.deepcopy(opt_a.state_dict())
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = Shampoo(b, **kw)
    opt_b.load_state_dict(saved)
    for step in range(11, 21):
        _set_grads(a, step)
        _set_grads(b, step)
        opt_a.step()
        opt_b.step()
    # eigh: the same ops in the same order, bit for bit. warm: the warm-start back-off is a
    # heuristic that is not checkpointed, so a resumed run may take eigh where the original
    # took the (certified, rtol 1e-4) warm path: roots then differ by <= 1e-4 relative,
    # and Adam grafting rescales each block to the same norm, so params differ by far less.
    tol = (
        tolerance('bitwise', torch.float32)
        if root_method == 'eigh'
        else {'rtol': 1e-4, 'atol': 1e-5}
    )
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


def test_bf16_params_keep_fp32_state_through_load_state_dict():
    p = torch.randn(12, 10).bfloat16().requires_grad_()
    opt = Shampoo([p], precondition_frequency=2)
    for step in range(1, 4):
        _set_grads([p], step)
        opt.step()
    q = p.detach().clone().requires_grad_()
    opt2 = Shampoo([q], precondition_frequency=2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[q]['factors'][0][0].dtype == torch.float32
    assert opt2.state[q]['exp_avg'].dtype == torch.float32
    torch.testing.assert_close(
        opt2.state[q]['factors'][0][0], opt.state[p]['factors'][0][0], rtol=0, atol=0
    )


def test_bad_hyperparameters_name_the_field():
    with pytest.raises(ValueError, match='betas\\[1\\]'):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], betas=(0.9, 1.5))
    with pytest.raises(ValueError, match='grafting'):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], grafting='lion')
    with pytest.raises(ValueError, match='grafting_beta2'):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], grafting='adam', grafting_beta2=1.0)
    with pytest.raises(ValueError, match='start_preconditioning_step'):
        Shampoo(
            [torch.zeros(2, 2, requires_grad=True)],
            precondition_frequency=10,
            start_preconditioning_step=5,
        )


# ---- distributed roots ----------------------------------------------------------------


DDP_SHAPES = [(20, 30), (30,), (4, 5, 3, 3), (70, 7), (40, 30, 50)]
DDP_KW = dict(
    lr=1e-2,
    betas=(0.9, 0.99),
    precondition_frequency=3,
    epsilon=1e-8,
    root_method='eigh',
    max_preconditioner_dim=32,
)


def _ddp_worker(rank, world, init_file, out_file, threads):
    # Same thread count as the single-process run: these factors are rank-deficient (9
    # gradients in up to 32 dimensions), so their roots amplify rounding noise in the ~0
    # eigenvalues (~1e-7 ||A|| against eps = 1e-8), and MKL's eigh rounds differently with
    # a different number of threads.
    torch.set_num_threads(threads)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        params = _params(torch.float32, shapes=DDP_SHAPES)
        opt = Shampoo(params, distribute_roots=True, **DDP_KW)
        for step in range(1, 10):
            _set_grads(params, step)  # what DDP's all-reduce hands every rank: the same grads
            opt.step()
        torch.save(
            {'params': [p.detach() for p in params], 'eigh': opt.root_stats.eigh},
            f'{out_file}.{rank}',
        )
    finally:
        dist.destroy_process_group()


def test_two_rank_gloo_roots_split_and_match_single_process(tmp_path):
    params = _params(torch.float32, shapes=DDP_SHAPES)
    opt = Shampoo(params, **DDP_KW)
    for step in range(1, 10):
        _set_grads(params, step)
        opt.step()
    args = (2, str(tmp_path / 'init'), str(tmp_path / 'out'), torch.get_num_threads())
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    results = [torch.load(tmp_path / f'out.{r}') for r in range(2)]
    # Not bit for bit: a rank stacks only its own blocks, and MKL's batched products round a
    # batch of 2 differently from a batch of 3 (1 ulp in the roots). Measured after 9 steps:
    # <= 1.2e-7 absolute (1 ulp); the trajectory tolerance leaves 8x headroom.
    for res in results:
        for got, want in zip(res['params'], params):
            torch.testing.assert_close(
                got, want.detach(), **tolerance('optimizer_trajectory', torch.float32)
            )
    torch.testing.assert_close(
        results[0]['params'], results[1]['params'], **tolerance('bitwise', torch.float32)
    )
    # Each rank computed only its share of the roots, together all of them.
    assert results[0]['eigh'] + results[1]['eigh'] == opt.root_stats.eigh
    assert 0 < results[0]['eigh'] < opt.root_stats.eigh
