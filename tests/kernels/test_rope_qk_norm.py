"""Parity of kernels/rope_qk_norm.py: the Triton kernels (in Triton's interpreter on CPU,
and compiled for sm_90 ahead of time) and the dispatching ``rope_qk_norm`` against
upstream's code (``rope_qk_norm_reference``) and an fp64 evaluation of it.

Forward: the kernels implement upstream's CUDA-autocast numerics (rotation in fp32,
rounded to q's dtype, then fp32), which ``rope_qk_norm_reference(..., norm_dtype=fp32)``
reproduces on CPU, so the outputs are compared with it. Gradients: upstream's autograd
rounds intermediate gradients to bf16 at several points while the kernels round once, so
both are compared with the fp64 gradient of the same math on the same inputs (the kernels
are the more accurate, measured). Shapes: Dh = 2, 24 and 128 (the LM), odd B, L and H,
cos/sin tables longer than L.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

from kernels import rope_qk_norm as rq
from kernels.rope_qk_norm import rope_qk_norm, rope_qk_norm_reference
from tests.tolerances import tolerance

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = [(1, 1, 1, 2), (2, 7, 3, 24), (1, 5, 2, 128)]
EPS = 1e-6
SCALE0 = math.log2(1024**2 - 1024)  # upstream's attn_scale init, 19.99859


@pytest.fixture
def interpreter(monkeypatch):
    pytest.importorskip('triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def _tables(length, head_dim, theta=500000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv)
    return freqs.cos(), freqs.sin()


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape, generator=g).to(dtype)
    k = torch.randn(shape, generator=g).to(dtype)
    gq = torch.randn(shape, generator=g)
    gk = torch.randn(shape, generator=g)
    cos, sin = _tables(shape[1] + 3, shape[-1])
    return q, k, cos, sin, torch.tensor(SCALE0), gq, gk


def _close_rel_to_max(actual, expected, kind, dtype):
    tol = tolerance(kind, dtype)
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=tol['rtol'], atol=tol['atol'] * scale
    )


def _fp64_grads(q, k, cos, sin, scale, gq, gk):
    leaves = [
        q.double().requires_grad_(),
        k.double().requires_grad_(),
        scale.double().requires_grad_(),
    ]
    outs = rope_qk_norm_reference(leaves[0], leaves[1], cos.double(), sin.double(), leaves[2], EPS)
    return torch.autograd.grad(outs, leaves, (gq.double(), gk.double()))


@pytest.mark.parametrize('out_kind', ['fp32', 'input'])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_triton_kernels_match_reference(interpreter, shape, dtype, out_kind):
    q, k, cos, sin, scale, gq, gk = _inputs(shape, dtype, seed=sum(shape))
    out_dtype = torch.float32 if out_kind == 'fp32' else dtype
    q_out, k_out = rq.launch_rope_qk_norm_fwd(q, k, cos, sin, scale.reshape(1), EPS, out_dtype)
    assert q_out.dtype == k_out.dtype == out_dtype
    ref_q, ref_k = rope_qk_norm_reference(q, k, cos, sin, scale, EPS, norm_dtype=torch.float32)
    tol_dtype = dtype if out_kind == 'fp32' else out_dtype
    _close_rel_to_max(q_out, ref_q, 'rope_qk_norm', tol_dtype)
    _close_rel_to_max(k_out, ref_k, 'rope_qk_norm', tol_dtype)

    gq, gk = gq.to(out_dtype), gk.to(out_dtype)
    dq, dk, dscale = rq.launch_rope_qk_norm_bwd(q, k, cos, sin, scale.reshape(1), EPS, gq, gk)
    assert dq.dtype == dk.dtype == dtype and dscale.dtype == torch.float32
    truth = _fp64_grads(q, k, cos, sin, scale, gq, gk)
    for got, want in zip((dq, dk, dscale), truth):
        _close_rel_to_max(got, want, 'rope_qk_norm_grad', dtype)


def test_qk_norm_is_x_over_norm_plus_eps():
    """Upstream's precedence: (x / ||x||) + eps, which differs from x / (||x|| + eps)."""
    q = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    q[..., 0] = 3.0
    q[..., 2] = 4.0  # ||q|| = 5 after a rotation by angle 0
    cos, sin = torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    q_out, k_out = rope_qk_norm_reference(
        q, q, cos, sin, torch.tensor(2.0, dtype=torch.float64), 0.25
    )
    want = torch.tensor([0.6 + 0.25, 0.25, 0.8 + 0.25, 0.25], dtype=torch.float64)
    torch.testing.assert_close(k_out.reshape(-1), want, rtol=0, atol=1e-15)
    torch.testing.assert_close(q_out.reshape(-1), 2 * want, rtol=0, atol=1e-15)


def test_rope_rotates_adjacent_pairs():
    """Pair (x[2i], x[2i+1]) at position t turns by t * theta_i; position 0 is unrotated."""
    cos, sin = _tables(3, 4)
    x = torch.zeros(1, 3, 1, 4, dtype=torch.float64)
    x[..., 0] = 1.0  # the first pair is (1, 0)
    out = rq._rope_reference(x, cos.double(), sin.double())
    angle = torch.arange(3, dtype=torch.float64)  # theta_0 = 1
    torch.testing.assert_close(out[0, :, 0, 0], angle.cos(), rtol=0, atol=1e-7)
    torch.testing.assert_close(out[0, :, 0, 1], angle.sin(), rtol=0, atol=1e-7)
    assert torch.count_nonzero(out[..., 2:]) == 0


@pytest.mark.parametrize('dtype', (torch.float32, torch.bfloat16), ids=str)
def test_dispatch_on_cpu_is_reference(dtype):
    q, k, cos, sin, scale, gq, gk = _inputs((2, 7, 3, 24), dtype, seed=3)
    leaves = [
        q.clone().requires_grad_(),
        k.clone().requires_grad_(),
        scale.clone().requires_grad_(),
    ]
    got = rope_qk_norm(*leaves[:2], cos, sin, leaves[2], EPS)
    want = rope_qk_norm_reference(q, k, cos, sin, scale, EPS)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    grads = torch.autograd.grad(got, leaves, (gq.to(dtype), gk.to(dtype)))
    assert grads[2].shape == () and grads[2].dtype == torch.float32
    truth = _fp64_grads(q, k, cos, sin, scale, gq.to(dtype), gk.to(dtype))
    # Upstream's own autograd vs fp64: its bf16 intermediates (tolerances.py says why).
    kind = 'rope_qk_norm_grad' if dtype == torch.float32 else 'rope_qk_norm_grad_upstream'
    for a, b in zip(grads, truth):
        _close_rel_to_max(a, b, kind, dtype)


def test_eligibility():
    q = torch.zeros(1, 2, 1, 4)
    cos = torch.zeros(2, 2)
    assert not rq._eligible(q, q, cos, cos, torch.tensor(1.0))  # CPU
    meta = torch.empty(1, 2, 1, 3, device='meta')
    assert not rq._eligible(meta, meta, cos, cos, torch.tensor(1.0))


@pytest.mark.parametrize('subset', ['lm', pytest.param('all', marks=pytest.mark.slow)])
def test_sm90_aot_compile(subset):
    """The kernels compile for sm_90 with the launchers' configs (all, or the LM's bf16 ones)."""
    triton = pytest.importorskip('triton')
    from triton.backends.compiler import GPUTarget

    configs = rq.AOT_CONFIGS
    assert len(configs) == 20
    if subset == 'lm':
        configs = [c for c in configs if c[1]['x_ptr'] == '*bf16']
    for kernel, signature, constexprs, options in configs:
        assert list(signature) == list(kernel.arg_names)
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options).asm['ptx']
        assert '.target sm_90' in ptx


def test_import_has_no_side_effects_beyond_op_registration():
    code = (
        'import os, sys, torch; env = dict(os.environ); import kernels.rope_qk_norm; '
        "assert 'triton' not in sys.modules, 'triton imported'; "
        'assert dict(os.environ) == env; assert not torch.cuda.is_initialized(); '
        "assert hasattr(torch.ops.algoperf, 'rope_qk_norm_fwd')"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, '-c', code], cwd=root, check=True)
