"""Parity of kernels/fused_linear_cross_entropy.py with upstream's lm_head + F.cross_entropy.

The fused head is compared, loss and both gradients, with ``..._reference`` (full logits)
over odd shapes, fp64/fp32 and bf16 autocast, label smoothing 0 and 0.1, zero-weight
rows, ignore_index rows, uniform upstream gradients (the precomputed fast path) and
non-uniform ones (the recompute path), and one chunk, several chunks, one row per chunk.
"""

import pytest
import torch

from kernels import fused_linear_cross_entropy as flce
from kernels.fused_linear_cross_entropy import (
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)
from tests.tolerances import tolerance

CASES = [
    # (N, D, V, chunk_size)
    (1, 24, 101, None),
    (7, 24, 101, 3),
    (123, 96, 1000, 50),
    (1000, 24, 257, 333),
    (4, 24, 50257, 1),  # full vocabulary, one row per chunk
]


def _inputs(n, d, v, dtype, seed, masked=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    weight = (0.3 * torch.randn(v, d, generator=g, dtype=torch.float64)).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    weights = None
    if masked:
        weights = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
        weights[torch.rand(n, generator=g) < 0.3] = 0.0
        if n > 2:
            targets[1] = -100  # ignore_index
    return hidden, weight, targets, weights


def _grad_output(n, kind, dtype, seed):
    if kind == 'uniform':
        return torch.full((n,), 0.37, dtype=dtype)
    return torch.randn(
        n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    ).to(dtype)


def _run(fn, hidden, weight, targets, weights, alpha, chunk, grad_out, autocast=False):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        loss = fn(h, w, targets, weights, alpha, chunk)
    gh, gw = torch.autograd.grad(loss, (h, w), grad_out.to(loss.dtype))
    return loss, gh, gw


def _close_rel_to_max(actual, expected, kind, dtype):
    """assert_close with atol given as a fraction of max|expected| (tolerances.py says why)."""
    tol = tolerance(kind, dtype)
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=tol['rtol'], atol=tol['atol'] * scale
    )


@pytest.mark.parametrize('grad_kind', ['uniform', 'random'])
@pytest.mark.parametrize('alpha', [0.0, 0.1])
@pytest.mark.parametrize('case', CASES, ids=str)
def test_matches_reference_fp64(case, alpha, grad_kind):
    """fp64 in, fp64 math on both paths: differences are reduction order only."""
    n, d, v, chunk = case
    inputs = _inputs(n, d, v, torch.float64, seed=n + v)
    g = _grad_output(n, grad_kind, torch.float64, seed=n)
    got = _run(fused_linear_cross_entropy, *inputs, alpha, chunk, g)
    ref = _run(fused_linear_cross_entropy_reference, *inputs, alpha, chunk, g)
    assert got[0].dtype == torch.float64
    for a, b in zip(got, ref):
        _close_rel_to_max(a, b, 'fused_linear_ce', torch.float64)


@pytest.mark.parametrize('grad_kind', ['uniform', 'random'])
@pytest.mark.parametrize('alpha', [0.0, 0.1])
@pytest.mark.parametrize('case', CASES[:4], ids=str)
def test_matches_reference_fp32(case, alpha, grad_kind):
    n, d, v, chunk = case
    inputs = _inputs(n, d, v, torch.float32, seed=n + v)
    g = _grad_output(n, grad_kind, torch.float32, seed=n)
    got = _run(fused_linear_cross_entropy, *inputs, alpha, chunk, g)
    ref = _run(fused_linear_cross_entropy_reference, *inputs, alpha, chunk, g)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.float32
    for a, b in zip(got, ref):
        _close_rel_to_max(a, b, 'fused_linear_ce', torch.float32)


@pytest.mark.parametrize('grad_kind', ['uniform', 'random'])
@pytest.mark.parametrize('alpha', [0.0, 0.1])
@pytest.mark.parametrize('case', [CASES[1], CASES[2], CASES[4]], ids=str)
def test_bf16_autocast_matches_reference(case, alpha, grad_kind):
    """fp32 hidden and weight under bf16 autocast (the LM's setting): bf16 matmuls."""
    n, d, v, chunk = case
    inputs = _inputs(n, d, v, torch.float32, seed=n + v)
    g = _grad_output(n, grad_kind, torch.float32, seed=n)
    got = _run(fused_linear_cross_entropy, *inputs, alpha, chunk, g, autocast=True)
    ref = _run(fused_linear_cross_entropy_reference, *inputs, alpha, chunk, g, autocast=True)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.float32
    _close_rel_to_max(got[0], ref[0], 'fused_linear_ce', torch.float32)  # same bf16 logits
    for a, b in zip(got[1:], ref[1:]):
        _close_rel_to_max(a, b, 'fused_linear_ce_grad', torch.bfloat16)


def test_bf16_hidden_gives_bf16_grad():
    hidden, weight, targets, weights = _inputs(7, 24, 101, torch.float32, seed=3)
    g = _grad_output(7, 'random', torch.float32, seed=3)
    got = _run(fused_linear_cross_entropy, hidden.bfloat16(), weight, targets, weights, 0.1, 2, g)
    ref = _run(
        fused_linear_cross_entropy_reference, hidden.bfloat16(), weight, targets, weights, 0.1, 2, g
    )
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.float32
    _close_rel_to_max(got[0], ref[0], 'fused_linear_ce', torch.float32)
    for a, b in zip(got[1:], ref[1:]):
        _close_rel_to_max(a, b, 'fused_linear_ce_grad', torch.bfloat16)


def test_zero_weight_and_ignored_rows_have_zero_loss_and_grad():
    hidden, weight, targets, weights = _inputs(9, 24, 101, torch.float32, seed=5)
    weights[2] = 0.0
    targets[4] = -100
    loss, gh, _ = _run(fused_linear_cross_entropy, hidden, weight, targets, weights, 0.1, 4,
                       _grad_output(9, 'random', torch.float32, seed=5))  # fmt: skip
    for row in (2, 4):
        assert loss[row] == 0 and torch.count_nonzero(gh[row]) == 0
    assert torch.count_nonzero(loss) >= 1


def test_row_shapes_and_no_grad():
    """(B, L, D) hidden gives (B, L) losses; under no_grad no gradient is precomputed."""
    hidden, weight, targets, _ = _inputs(12, 24, 101, torch.float32, seed=7)
    loss = fused_linear_cross_entropy(hidden.view(3, 4, 24), weight, targets.view(3, 4))
    assert loss.shape == (3, 4)
    with torch.no_grad():
        h = hidden.clone().requires_grad_()
        out = fused_linear_cross_entropy(h, weight, targets)
    assert not out.requires_grad
    torch.testing.assert_close(out, loss.reshape(-1), rtol=0, atol=0)


def test_default_chunk_rows():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert flce._default_chunk_rows(65536, 50257, cuda) == 256 * 2**20 // (4 * 50257) == 1335
    assert flce._default_chunk_rows(2048, 50257, cpu) == 64 * 2**20 // (4 * 50257) == 333
    assert flce._default_chunk_rows(5, 50257, cpu) == 5


@pytest.mark.parametrize('bad', ['targets', 'weight', 'weights', 'chunk'])
def test_bad_shapes_raise(bad):
    hidden, weight, targets, weights = _inputs(5, 24, 101, torch.float32, seed=9)
    kwargs = {'hidden': hidden, 'weight': weight, 'targets': targets, 'weights': weights}
    if bad == 'targets':
        kwargs['targets'] = targets[:4]
    elif bad == 'weight':
        kwargs['weight'] = weight[:, :23]
    elif bad == 'weights':
        kwargs['weights'] = weights[:3]
    else:
        kwargs['chunk_size'] = 0
    with pytest.raises(ValueError, match='fused_linear_cross_entropy'):
        fused_linear_cross_entropy(**kwargs)


def test_uniform_grad_does_not_recompute(monkeypatch):
    """The fast path: a uniform upstream gradient never recomputes logits in backward."""
    hidden, weight, targets, weights = _inputs(7, 24, 101, torch.float32, seed=11)
    calls = []
    real = flce._chunk_probs_
    monkeypatch.setattr(flce, '_chunk_probs_', lambda *a: calls.append(1) or real(*a))
    _run(fused_linear_cross_entropy, hidden, weight, targets, weights, 0.1, 3,
         _grad_output(7, 'uniform', torch.float32, seed=0))  # fmt: skip
    assert not calls
    _run(fused_linear_cross_entropy, hidden, weight, targets, weights, 0.1, 3,
         _grad_output(7, 'random', torch.float32, seed=0))  # fmt: skip
    assert len(calls) == 3  # ceil(7 / 3) chunks recomputed


def test_aot_configs_is_empty():
    """No Triton kernel here (the chunked path is cuBLAS/CPU BLAS + torch elementwise)."""
    assert flce.AOT_CONFIGS == []
