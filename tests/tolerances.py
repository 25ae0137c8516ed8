"""The single table of numerical tolerances used by the test suite.

Every entry says why its numbers are what they are. Use them as
``torch.testing.assert_close(actual, expected, **tolerance(kind, dtype))``. Where results
must match bit for bit (a fallback that *is* the reference, a deterministic CPU path),
tests pass ``rtol=0, atol=0`` directly instead of taking an entry from here.

To add an op family: add a ``kind`` with one entry per input dtype it supports, each with
a comment deriving the numbers (the rounding of the output dtype, the accumulation order,
the longest reduction the tests use). Do not loosen an entry to make a test pass.
"""

import torch

# One unit in the last place of fp32 relative to the value: 2**-23 ~ 1.19e-7. For any
# value v, |ulp(v)| <= 2**-23 * |v|, so rtol=FP32_ULP admits one rounding step.
FP32_ULP = 2.0**-23

# Norms accumulated in fp64 and rounded once to an fp32 result, compared with another
# fp64 accumulation in a different order (kernels/multi_tensor_l2norm.py against its
# reference, torch.linalg.vector_norm in fp64).
#
# The input dtype does not matter for these: every fp32, bf16 and fp16 value, and its
# square, is exact in fp64 (at most 24 mantissa bits, squared 48 <= 53). The terms are
# non-negative, so reordering the fp64 sum changes it by at most n * 2**-53 relative,
# ~3e-9 for the 25.6M-element ResNet-50 list, and the square root halves that. The two
# fp64 results therefore round to the same fp32 value or to adjacent ones: at most one
# fp32 ulp apart. atol=0 because exact zeros (empty tensors) are exactly zero on every
# path.
_FP64_ACCUM_TO_FP32 = {
    # fp32 inputs: exact in fp64; only the fp32 rounding of the result can differ.
    torch.float32: {'rtol': FP32_ULP, 'atol': 0.0},
    # fp64 inputs: squares round at 2**-53 relative (identically on every path unless a
    # compiler fuses them into FMAs), which adds nothing visible at fp32 precision.
    torch.float64: {'rtol': FP32_ULP, 'atol': 0.0},
    # bf16 inputs: 8-bit mantissas, exact in fp64 and squared exactly.
    torch.bfloat16: {'rtol': FP32_ULP, 'atol': 0.0},
    # fp16 inputs: 11-bit mantissas, exact in fp64 and squared exactly.
    torch.float16: {'rtol': FP32_ULP, 'atol': 0.0},
}

# Optimizer trajectories (submissions/optimizers vs their *_reference), 20-30 steps on
# O(1) parameters with lr ~3e-3. The paths compute the same formula with different op
# orders (foreach lerp vs mul+add for the first moment, look-ahead folded into one
# addcdiv), so each step's update differs by a few ulps of the update (~lr * 1e-7 in
# fp32) and the moments by a few ulps of themselves. Over 30 steps that accumulates to
# <= 3e-7 absolute in fp32 (measured: 3.0e-7 on the test's shapes); atol=1e-6 gives 3x
# headroom, rtol=1e-5 covers the large-magnitude entries. fp64: the same argument at
# 2**-52, measured 1.3e-12 relative at worst on near-zero entries.
_OPTIMIZER_TRAJECTORY = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-6},
    torch.float64: {'rtol': 1e-10, 'atol': 1e-13},
}

TOLERANCES: dict[str, dict[torch.dtype, dict[str, float]]] = {
    'fp64_accum_norm': _FP64_ACCUM_TO_FP32,
    'optimizer_trajectory': _OPTIMIZER_TRAJECTORY,
}


def tolerance(kind: str, dtype: torch.dtype) -> dict[str, float]:
    """Returns ``{'rtol': ..., 'atol': ...}`` for ``assert_close``.

    Args:
        kind: An op family, a key of ``TOLERANCES``.
        dtype: The input dtype of the op under test.

    Raises:
        KeyError: No tolerance is defined for ``(kind, dtype)``; the message lists the
            defined ones.
    """
    try:
        return dict(TOLERANCES[kind][dtype])
    except KeyError:
        known = {k: [str(d) for d in v] for k, v in TOLERANCES.items()}
        raise KeyError(f'no tolerance for ({kind!r}, {dtype}); defined: {known}') from None
