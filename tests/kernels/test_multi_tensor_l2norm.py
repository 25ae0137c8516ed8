"""Parity tests for kernels.multi_tensor_l2norm against its reference and fp64 vector_norm.

Tests marked ``ext`` need kernels._C and are skipped without it (tests/kernels/conftest.py);
the rest exercise whichever path the op takes on this machine, plus the forced fallback.
"""

import importlib
import math
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable

import pytest
import torch
from tolerances import FP32_ULP, tolerance

import kernels
from kernels import _ext
from kernels.multi_tensor_l2norm import multi_tensor_l2norm, multi_tensor_l2norm_reference

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# `kernels.multi_tensor_l2norm` is the function (re-exported by kernels/__init__.py), which
# shadows the submodule of the same name for attribute access; fetch the module itself.
l2norm_module = importlib.import_module('kernels.multi_tensor_l2norm')
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def resnet50_like_shapes(width: int = 16) -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's ResNet-50 with stem width ``width`` (real: 64).

    At width 16 it keeps ResNet-50's 161 tensors and mix of 1x1/3x3/7x7 convs, norm
    vectors and the fc layer, at 2.0M elements instead of 25.6M to keep the test fast.
    """
    shapes = [(width, 3, 7, 7), (width,), (width,)]
    inplanes = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = width * 2**stage
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    return shapes + [(1000, inplanes), (1000,)]


def _randn(shape, dtype: torch.dtype, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


def _from_shapes(shapes: list[tuple[int, ...]]) -> Callable:
    def build(dtype, gen):
        # Gradient magnitudes differ by orders of magnitude across layers; 1e-3..1e2 stays
        # inside fp16's range (max 65504) while reaching into its subnormals (< 6.1e-5).
        scales = torch.logspace(-3, 2, len(shapes)).tolist()
        return [_randn(s, dtype, gen, scale) for s, scale in zip(shapes, scales)]

    return build


def _non_contiguous(dtype, gen):
    def r(*shape):
        return _randn(shape, dtype, gen)

    return [
        r(37, 53).t(),  # transpose: dense, read in place
        r(8, 3, 5, 5).to(memory_format=torch.channels_last),  # dense permutation
        r(50, 7)[3:],  # contiguous at a storage offset
        r(1000)[::3],  # gaps: copied
        r(20, 10)[:, 1:4],  # column slice: copied
        r(5, 1).expand(5, 7),  # stride 0: every element counts 7 times
        r(9, 11).t()[2:],  # transposed slice: not dense, copied
        r(6, 7, 8).permute(2, 0, 1),  # dense permutation of a 3-d tensor
        r(3, 3)[1, 1],  # 0-d view at an offset
    ]


CASES = {
    'single_278011': _from_shapes([(278011,)]),
    'weird': _from_shapes([(6, 42, 123), (431,), ()]),
    'resnet50_like': _from_shapes(resnet50_like_shapes()),
    'with_empty': _from_shapes([(0,), (17,), (3, 0, 5), (), (1,)]),
    # Around the kernel's 32768-element chunks and its 8-wide unrolled loop.
    'chunk_edges': _from_shapes([(32767,), (32768,), (32769,), (65537,), (7,), (9,), (1,)]),
    'non_contiguous': _non_contiguous,
}


def _make(case: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    return CASES[case](dtype, torch.Generator().manual_seed(seed))


def _mixed_dtypes(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 42, 123), (431,), (), (0,), (32769,), (17, 3)]
    return [_randn(s, DTYPES[i % len(DTYPES)], gen) for i, s in enumerate(shapes)]


def _fp64_vector_norms(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent oracle: torch.linalg.vector_norm over the values in float64."""
    flat = [t.reshape(-1).to(torch.float64) for t in tensors]
    total = (
        torch.linalg.vector_norm(torch.cat(flat)) if flat else torch.zeros((), dtype=torch.float64)
    )
    norms = torch.stack([torch.linalg.vector_norm(f) for f in flat]) if flat else torch.zeros(0)
    return total.to(torch.float32), norms.to(torch.float32)


def _loosest(tensors: list[torch.Tensor]) -> dict[str, float]:
    tols = [tolerance('fp64_accum_norm', t.dtype) for t in tensors] or [
        tolerance('fp64_accum_norm', torch.float32)
    ]
    return {'rtol': max(t['rtol'] for t in tols), 'atol': max(t['atol'] for t in tols)}


@pytest.fixture
def ext_unavailable(monkeypatch):
    """Makes the op behave as if kernels._C had failed to import, with a fresh warn-once."""
    monkeypatch.setattr(_ext, '_loaded', True)
    monkeypatch.setattr(_ext, '_module', None)
    monkeypatch.setattr(_ext, '_import_error', ImportError('forced by test'))
    monkeypatch.setattr(_ext, '_warned', False)


@pytest.mark.ext
@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('per_tensor', [False, True])
def test_ext_matches_reference(case, dtype, per_tensor):
    tensors = _make(case, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a fallback warning would mean the ext was not used
        total, norms = multi_tensor_l2norm(tensors, per_tensor=per_tensor)
    ref_total, ref_norms = multi_tensor_l2norm_reference(tensors, per_tensor=per_tensor)
    tol = tolerance('fp64_accum_norm', dtype)
    torch.testing.assert_close(total, ref_total, **tol)
    torch.testing.assert_close(norms, ref_norms, **tol)


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_matches_fp64_vector_norm(case, dtype):
    """Whatever path runs here (ext or reference) agrees with an independent computation."""
    tensors = _make(case, dtype, seed=1)
    expected_total, expected_norms = _fp64_vector_norms(tensors)
    tol = tolerance('fp64_accum_norm', dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # fallback notice, when not built
        total, norms = multi_tensor_l2norm(tensors, per_tensor=True)
    torch.testing.assert_close(total, expected_total, **tol)
    torch.testing.assert_close(norms, expected_norms, **tol)
    ref_total, ref_norms = multi_tensor_l2norm_reference(tensors, per_tensor=True)
    torch.testing.assert_close(ref_total, expected_total, **tol)
    torch.testing.assert_close(ref_norms, expected_norms, **tol)


@pytest.mark.ext
def test_ext_mixed_dtypes():
    tensors = _mixed_dtypes()
    total, norms = multi_tensor_l2norm(tensors, per_tensor=True)
    ref_total, ref_norms = multi_tensor_l2norm_reference(tensors, per_tensor=True)
    exp_total, exp_norms = _fp64_vector_norms(tensors)
    tol = _loosest(tensors)
    torch.testing.assert_close(total, ref_total, **tol)
    torch.testing.assert_close(norms, ref_norms, **tol)
    torch.testing.assert_close(total, exp_total, **tol)
    torch.testing.assert_close(norms, exp_norms, **tol)


@pytest.mark.ext
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
def test_ext_exhaustive_16bit_values(dtype):
    """Every one of the 65536 bit patterns, each as its own 0-d tensor.

    sqrt(x**2) is exact in fp64 for 16-bit inputs and |x| is exact in fp32, so each
    per-tensor norm must equal |x| bit for bit: this pins the kernel's fp16/bf16 widening
    (normals, subnormals, +-0, inf, nan).
    """
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    _, norms = multi_tensor_l2norm(list(values.unbind()), per_tensor=True)
    torch.testing.assert_close(norms, values.float().abs(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('bad', [math.inf, -math.inf, math.nan])
def test_non_finite_propagates(dtype, bad):
    tensors = _make('weird', dtype)
    tensors[1] = tensors[1].clone()
    tensors[1][17] = bad
    expected = math.nan if math.isnan(bad) else math.inf
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        for op in (multi_tensor_l2norm, multi_tensor_l2norm_reference):
            total, norms = op(tensors, per_tensor=True)
            torch.testing.assert_close(total, torch.tensor(expected), equal_nan=True)
            assert math.isfinite(norms[0]) and math.isfinite(norms[2])


@pytest.mark.ext
def test_ext_is_deterministic_across_thread_counts():
    tensors = _make('resnet50_like', torch.float32) + _make('single_278011', torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(multi_tensor_l2norm(tensors, per_tensor=True))
    finally:
        torch.set_num_threads(threads)
    for total, norms in results[1:]:
        torch.testing.assert_close(total, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(norms, results[0][1], rtol=0, atol=0)


@pytest.mark.ext
def test_ext_public_op_is_the_binding():
    """The public op on CPU returns exactly what the bare binding does."""
    tensors = _make('resnet50_like', torch.float32)
    total, norms = multi_tensor_l2norm(tensors, per_tensor=True)
    bind_total, bind_norms = _ext.load_ext().multi_tensor_l2norm(tensors, True)
    torch.testing.assert_close(total, bind_total, rtol=0, atol=0)
    torch.testing.assert_close(norms, bind_norms, rtol=0, atol=0)


@pytest.mark.ext
def test_ext_custom_op_opcheck_and_compile():
    tensors = _make('weird', torch.float32) + _make('with_empty', torch.bfloat16)
    multi_tensor_l2norm(tensors)  # registers algoperf::multi_tensor_l2norm
    op = torch.ops.algoperf.multi_tensor_l2norm.default
    torch.library.opcheck(op, (tensors, True))

    def log_grad_norm(grads):
        total, norms = multi_tensor_l2norm((g for g in grads), per_tensor=True)
        return total * 2, norms

    compiled = torch.compile(log_grad_norm, backend='aot_eager', fullgraph=True)
    for got, want in zip(compiled(tensors), log_grad_norm(tensors)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('case', ['weird', 'with_empty', 'non_contiguous', 'resnet50_like'])
def test_fallback_is_the_reference_and_warns_once(ext_unavailable, case):
    tensors = _make(case, torch.float32)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')  # count every warn() call, not Python's dedup
        total, norms = multi_tensor_l2norm(tensors, per_tensor=True)
        multi_tensor_l2norm(tensors)
        multi_tensor_l2norm(_mixed_dtypes())
    messages = [str(w.message) for w in record if 'kernels._C' in str(w.message)]
    assert len(messages) == 1, messages
    assert 'pip install --no-build-isolation -e .' in messages[0]
    ref_total, ref_norms = multi_tensor_l2norm_reference(tensors, per_tensor=True)
    torch.testing.assert_close(total, ref_total, rtol=0, atol=0)
    torch.testing.assert_close(norms, ref_norms, rtol=0, atol=0)


def test_compiled_fallback_is_the_reference(ext_unavailable):
    """Without the extension, torch.compile traces the reference without a graph break."""
    tensors = _make('weird', torch.float32) + _make('with_empty', torch.bfloat16)

    def log_grad_norm(grads):
        return multi_tensor_l2norm((g for g in grads), per_tensor=True)

    compiled = torch.compile(log_grad_norm, backend='aot_eager', fullgraph=True)
    for got, want in zip(compiled(tensors), multi_tensor_l2norm_reference(tensors, True)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('per_tensor', [False, True])
def test_foreach_path_on_cpu(per_tensor):
    """The CUDA route's code (torch._foreach_norm + fp64 combine), run on CPU tensors."""
    tensors = _mixed_dtypes() + _make('resnet50_like', torch.float32)
    total, norms = l2norm_module._multi_tensor_l2norm_foreach(tensors, per_tensor)
    ref_total, ref_norms = multi_tensor_l2norm_reference(tensors, per_tensor)
    tol = _loosest(tensors)
    torch.testing.assert_close(total, ref_total, **tol)
    torch.testing.assert_close(norms, ref_norms, **tol)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_cuda_uses_foreach_norm(dtype):
    tensors = [t.cuda() for t in _make('resnet50_like', dtype)]
    total, norms = multi_tensor_l2norm(tensors, per_tensor=True)
    assert total.is_cuda and norms.is_cuda
    ref_total, ref_norms = multi_tensor_l2norm_reference([t.cpu() for t in tensors], True)
    tol = tolerance('fp64_accum_norm', dtype)
    torch.testing.assert_close(total.cpu(), ref_total, **tol)
    torch.testing.assert_close(norms.cpu(), ref_norms, **tol)


@pytest.mark.parametrize('per_tensor', [False, True])
def test_output_contract(per_tensor):
    tensors = _make('weird', torch.bfloat16)
    for op in (multi_tensor_l2norm, multi_tensor_l2norm_reference):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            total, norms = op(iter(tensors), per_tensor=per_tensor)  # any iterable
        assert total.shape == () and total.dtype == torch.float32
        assert norms.shape == ((3,) if per_tensor else (0,)) and norms.dtype == torch.float32
        assert not total.requires_grad and not norms.requires_grad


def test_empty_list_is_zero():
    for op in (multi_tensor_l2norm, multi_tensor_l2norm_reference):
        total, norms = op([], per_tensor=True)
        torch.testing.assert_close(total, torch.tensor(0.0), rtol=0, atol=0)
        assert norms.shape == (0,) and norms.dtype == torch.float32


def test_requires_grad_inputs_give_detached_outputs():
    params = [torch.randn(4, 5, requires_grad=True), torch.randn(3, requires_grad=True)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        total, norms = multi_tensor_l2norm(params, per_tensor=True)
    assert not total.requires_grad and not norms.requires_grad


BAD_INPUTS = {
    'int_dtype': (2, torch.arange(4), TypeError, 'dtype'),
    'complex_dtype': (1, torch.randn(3, dtype=torch.complex64), TypeError, 'dtype'),
    'none_entry': (1, None, TypeError, 'not a Tensor'),
    'sparse': (2, torch.randn(3).to_sparse(), ValueError, 'layout'),
    'meta_device': (1, torch.randn(3, device='meta'), ValueError, 'meta'),
}


@pytest.mark.parametrize('name', list(BAD_INPUTS))
def test_bad_input_names_the_index(name):
    index, bad, error, what = BAD_INPUTS[name]
    tensors = [torch.randn(3), torch.randn(2, 2), torch.randn(5)]
    tensors[index] = bad
    for op in (multi_tensor_l2norm, multi_tensor_l2norm_reference):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            with pytest.raises(error, match=rf'tensors\[{index}\].*{what}'):
                op(tensors)


@pytest.mark.ext
@pytest.mark.parametrize('name', [n for n in BAD_INPUTS if n != 'none_entry'])
def test_ext_torch_check_names_the_index(name):
    """The C++ TORCH_CHECKs themselves, without the Python router in front."""
    index, bad, error, what = BAD_INPUTS[name]
    tensors = [torch.randn(3), torch.randn(2, 2), torch.randn(5)]
    tensors[index] = bad
    with pytest.raises(error, match=rf'tensors\[{index}\].*{what}'):
        _ext.load_ext().multi_tensor_l2norm(tensors, False)


def test_tolerance_rejects_two_ulp_error():
    """The named tolerance is tight enough to fail: a 2-ulp error in a norm is caught."""
    total, _ = multi_tensor_l2norm_reference(_make('weird', torch.float32))
    off_by_two = torch.nextafter(torch.nextafter(total, total * 2), total * 2)
    off_by_one = torch.nextafter(total, total * 2)
    tol = tolerance('fp64_accum_norm', torch.float32)
    assert tol['rtol'] == FP32_ULP
    torch.testing.assert_close(off_by_one, total, **tol)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(off_by_two, total, **tol)


def test_import_has_no_side_effects():
    code = textwrap.dedent(
        """
        import logging, os, sys, warnings
        import torch
        env = dict(os.environ)
        warnings.simplefilter('error')
        import kernels
        assert 'kernels._C' not in sys.modules, 'kernels._C imported'
        assert not torch.cuda.is_initialized(), 'CUDA initialised'
        assert dict(os.environ) == env, 'environment changed'
        assert not logging.getLogger().handlers, 'logging configured'
        assert not hasattr(torch.ops.algoperf, 'multi_tensor_l2norm'), 'op registered'
        assert {'ext_available', 'multi_tensor_l2norm', 'multi_tensor_l2norm_reference'} <= set(kernels.__all__)
        """
    )
    result = subprocess.run(
        [sys.executable, '-c', code],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_public_api():
    assert kernels.multi_tensor_l2norm is multi_tensor_l2norm
    assert kernels.multi_tensor_l2norm_reference is multi_tensor_l2norm_reference
    assert isinstance(kernels.ext_available(), bool)
