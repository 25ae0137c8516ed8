"""Parity of kernels/rms_norm.py: the Triton kernels (in Triton's interpreter on CPU, and
compiled for sm_90 ahead of time) and the dispatching ``rms_norm`` against the formula.

The interpreter tests call the launchers directly (dispatch sends CPU tensors to torch)
with ``TRITON_INTERPRET=1`` set per test by ``monkeypatch``; their expected values are
``rms_norm_reference`` evaluated in fp64 on the same (rounded) inputs, and the kernels'
outputs are rounded once from fp32, so the tolerances are one rounding of the output dtype
plus fp32 reduction noise (tests/tolerances.py, 'rms_norm').
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kernels import rms_norm as rn
from kernels.rms_norm import rms_norm, rms_norm_reference
from tests.tolerances import tolerance

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = [(1, 24), (7, 96), (3, 5, 1000), (123, 1024)]


@pytest.fixture
def interpreter(monkeypatch):
    pytest.importorskip('triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def _close_rel_to_max(actual, expected, dtype):
    tol = tolerance('rms_norm', dtype)
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=tol['rtol'], atol=tol['atol'] * scale
    )


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=g)).to(dtype)
    w = 1 + 0.5 * torch.randn(shape[-1], generator=g)
    dy = torch.randn(shape, generator=g).to(dtype)
    return x, w, dy


def _fp64_truth(x, w, dy, eps):
    xd = x.double().requires_grad_()
    wd = w.double().requires_grad_() if w is not None else None
    y = rms_norm_reference(xd, wd, eps)
    grads = torch.autograd.grad(y, [t for t in (xd, wd) if t is not None], dy.double())
    return y.detach(), grads


@pytest.mark.parametrize('with_weight', [True, False])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('shape', SHAPES[:3], ids=str)
def test_triton_kernels_match_reference(interpreter, shape, dtype, with_weight):
    x, w, dy = _inputs(shape, dtype, seed=len(shape) * 100 + shape[-1])
    w = w if with_weight else None
    x2d, dy2d = x.reshape(-1, shape[-1]), dy.reshape(-1, shape[-1])
    y, rstd = rn.launch_rms_norm_fwd(x2d, w, 1e-6, dtype)
    dx, dw = rn.launch_rms_norm_bwd(dy2d, x2d, w, rstd)
    y_ref, grads = _fp64_truth(x2d, w, dy2d, 1e-6)
    assert y.dtype == dx.dtype == dtype
    _close_rel_to_max(y, y_ref, dtype)
    _close_rel_to_max(dx, grads[0], dtype)
    if with_weight:
        assert dw.dtype == torch.float32
        _close_rel_to_max(dw, grads[1], torch.float32)
    else:
        assert dw is None


@pytest.mark.slow
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_triton_kernels_lm_width(interpreter, dtype):
    """The LM's D = 1024 with more rows than one backward program covers (123 > 8 x 4)."""
    x, w, dy = _inputs(SHAPES[3], dtype, seed=5)
    y, rstd = rn.launch_rms_norm_fwd(x, w, 1e-6, torch.float32)  # CUDA-autocast output
    dx, dw = rn.launch_rms_norm_bwd(dy.float(), x, w, rstd)
    y_ref, grads = _fp64_truth(x, w, dy.float(), 1e-6)
    _close_rel_to_max(y, y_ref, torch.float32)
    _close_rel_to_max(dx, grads[0], dtype)
    _close_rel_to_max(dw, grads[1], torch.float32)


def test_bf16_rounds_to_nearest_even(interpreter):
    """Interpreted kernels round bf16 like the GPU (RNE), not like the interpreter (truncation):
    y = 1 * w exactly in fp32, w = 1 + 0.75 ulp of bf16, so RNE gives 1 + 1 ulp, truncation 1."""
    w = torch.full((16,), 1.0 + 3 * 2.0**-9)
    y, _ = rn.launch_rms_norm_fwd(torch.ones(1, 16), w, 0.0, torch.bfloat16)
    torch.testing.assert_close(
        y, torch.full((1, 16), 1.0 + 2.0**-7, dtype=torch.bfloat16), rtol=0, atol=0
    )


@pytest.mark.parametrize('dtype', (torch.float32, torch.bfloat16, torch.float64), ids=str)
def test_dispatch_on_cpu_is_torch_and_matches_reference(dtype):
    x, w, dy = _inputs((4, 7, 96), dtype, seed=1)
    xr = x.clone().requires_grad_()
    wr = w.clone().requires_grad_()
    y = rms_norm(xr, wr, 1e-6)
    torch.testing.assert_close(y, F.rms_norm(x, (96,), w, 1e-6), rtol=0, atol=0)
    assert y.dtype == dtype  # nn.RMSNorm keeps x's dtype (one rounding), even with fp32 w
    ref = rms_norm_reference(x, w, 1e-6)
    tol = tolerance('rms_norm', dtype)
    torch.testing.assert_close(y.detach(), ref, rtol=tol['rtol'], atol=tol['atol'])
    gx, gw = torch.autograd.grad(y, (xr, wr), dy)
    assert gx.dtype == dtype and gw.dtype == torch.float32


def test_eps_none_is_finfo_eps():
    x, w, _ = _inputs((3, 24), torch.float32, seed=2)
    x = x * 1e-4  # eps matters here
    torch.testing.assert_close(
        rms_norm_reference(x, w, None), rms_norm_reference(x, w, torch.finfo(torch.float32).eps)
    )
    torch.testing.assert_close(rms_norm(x, w, None), F.rms_norm(x, (24,), w, None), rtol=0, atol=0)


def test_eligibility():
    x = torch.zeros(2, 8)
    assert not rn._eligible(x, torch.ones(8))  # CPU: torch's own implementation
    meta = torch.empty(2, 8, device='meta')
    assert not rn._eligible(meta, None)


def test_sm90_aot_compile():
    """Every (kernel, signature, constexprs) the CUDA launchers use compiles for sm_90."""
    triton = pytest.importorskip('triton')
    from triton.backends.compiler import GPUTarget

    configs = rn.AOT_CONFIGS
    assert len(configs) == 10
    for kernel, signature, constexprs, options in configs:
        assert list(signature) == list(kernel.arg_names)
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options).asm['ptx']
        assert '.target sm_90' in ptx


def test_import_has_no_side_effects_beyond_op_registration():
    code = (
        'import os, sys, torch; env = dict(os.environ); import kernels.rms_norm; '
        "assert 'triton' not in sys.modules, 'triton imported'; "
        'assert dict(os.environ) == env; assert not torch.cuda.is_initialized(); '
        "assert hasattr(torch.ops.algoperf, 'rms_norm_fwd')"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, '-c', code], cwd=root, check=True)
