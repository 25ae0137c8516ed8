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

# Fused optimizer updates (kernels/fused_optim.py): two implementations of one update
# formula that round differently, after 100 steps at lr 1e-2 on randn-initialised params
# (|p| < 8), keyed by the param dtype; optimizer state is fp32 and takes the fp32 entry.
# Uses: a fast path vs the reference as written (torch's CPU sqrt is one ulp off in ~20%
# of fp32 results where the C++ kernels use the IEEE instruction; a GPU kernel or an
# aarch64 build contracts into FMAs) and the references vs the optimizers they reduce to
# (torch.optim's FMAs, lerp and addcdiv; schedulefree's lerp). On x86-64 the C++ kernels
# equal the reference with an IEEE sqrt bit for bit, and tests assert rtol=0, atol=0 there.
_FUSED_OPTIM = {
    # A sub-ulp difference in an update makes the fp32 param round the other way (by one
    # ulp) with probability ~|difference| / ulp(p) per step, so over 100 steps a param
    # random-walks a few ulps; state that feeds back (Schedule-Free's z) likewise.
    # Measured maxima: 4.8e-7 (4 ulps in [1, 2)) for the C++ path vs the reference on
    # 278011 elements, 9.5e-7 for sgd_reference vs torch.optim.SGD with dampening. 32 ulps
    # of 1.0 (2**-18 ~ 3.8e-6) as rtol and atol gives 4x headroom; atol also covers
    # entries that shrank towards zero after their error accumulated.
    torch.float32: {'rtol': 2.0**-18, 'atol': 2.0**-18},
    # 16-bit params are rounded to their dtype after every step by both implementations,
    # at the same point, so sub-ulp fp32 differences vanish except where the two fp32
    # results straddle a rounding boundary (~lr * 2**-23 / ulp(p) per element and step:
    # 1-7 of 278011 elements over 100 steps, measured). Such a param is then exactly one
    # ulp off, and later steps move both copies alike, so the gap stays one ulp of the
    # magnitude it had when it arose, while |p| may shrink (measured: 2 ulps at the new
    # magnitude). rtol = one ulp (2**-7), atol = one ulp of |p| in [4, 8) (2**-5).
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 2.0**-5},
    # Same argument with fp16's 11-bit significand: one ulp is 2**-10 relative, 2**-8 in
    # [4, 8); fp16 subnormal steps (2**-24) are far below that.
    torch.float16: {'rtol': 2.0**-10, 'atol': 2.0**-8},
}

TOLERANCES: dict[str, dict[torch.dtype, dict[str, float]]] = {
    'fp64_accum_norm': _FP64_ACCUM_TO_FP32,
    'fused_optim': _FUSED_OPTIM,
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


# kernels/triton_optim.py vs the per-tensor references in tests/kernels/test_triton_optim.py:
# 6 steps of AdamW/NAdamW, SGD and Schedule-Free on O(1) params (|p| <= ~4, randn) with
# lr <= 5e-2, in the Triton interpreter (CPU) and compiled on CUDA. Keyed by PARAM dtype.
#
# Params. fp32: the kernel and the reference run the same fp32 ops except that the kernel
# forms the decay factor 1 - lr*wd in fp32 from the device lr (the reference in float64,
# rounded once), and on CUDA Triton contracts mul+add pairs into FMAs; each is a few ulps
# of a term per step. Measured in the interpreter: <= 2.4e-7 absolute (1 ulp at |p| ~ 3);
# the 'optimizer_trajectory' numbers (rtol=1e-5, atol=1e-6) leave >= 4x headroom.
# bf16/fp16: the fp32 result is rounded to nearest even on both paths, so the stored
# params agree unless the fp32 values straddle a rounding midpoint; such a flip is one
# ulp of the param dtype (<= 2**-7 relative for bf16, 2**-10 for fp16) and persists but
# does not grow (the updates depend on p only through weight decay and SF's lerp, which
# shrinks it). Measured bit-exact in the interpreter; rtol admits one flip, atol=1e-6
# only covers values that round to or from zero.
_TRITON_OPTIM_PARAMS = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-6},
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 1e-6},
    torch.float16: {'rtol': 2.0**-10, 'atol': 1e-6},
}
# fp32 state (m, v, momentum buffer, z). With fp32 params it sees the same few-ulp
# differences as above (measured <= 1.2e-7). With bf16/fp16 params a one-ulp flip of p
# (<= 2**-7 * 4 = 0.03 for bf16) enters the state only through weight decay: SGD's buffer
# gets wd * dp = 1.5e-4 per step (wd = 5e-3), <= 9e-4 over the 6 steps; SF's z gets
# lr * wd * dy = 3e-5 per step. Hence atol=1e-3 for bf16 and 2**-3 of it for fp16 (whose
# ulp is 8x smaller). Measured in the interpreter: <= 2.4e-7 (no flips there).
_TRITON_OPTIM_STATE = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-6},
    torch.bfloat16: {'rtol': 1e-5, 'atol': 1e-3},
    torch.float16: {'rtol': 1e-5, 'atol': 1.25e-4},
}
TOLERANCES['triton_optim_params'] = _TRITON_OPTIM_PARAMS
TOLERANCES['triton_optim_state'] = _TRITON_OPTIM_STATE

# Bit-for-bit: the same code path run twice on the same inputs (a resumed optimizer vs an
# uninterrupted one; a 0-d tensor lr vs the same float). Any difference is a bug.
TOLERANCES['bitwise'] = {
    dtype: {'rtol': 0.0, 'atol': 0.0} for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
}

# A submission's trajectory vs the optimizer package it reimplements, through a real model
# (tests/submissions/test_schedule_free_submission.py: Schedule-Free AdamW on the digits MLP,
# 41 steps, lr 2.5e-3, |p| <= 0.19, compared in train mode (y) and after the eval swap (x)).
# Per step the fused C++ update and the package's per-tensor ops differ by a few ulps of the
# update, as in 'optimizer_trajectory'; here those param differences also feed back through
# the next gradients, and Adam's normalisation keeps that feedback at the same order (a
# gradient a few ulps off moves the update by ~lr * 1e-7). Measured: 4.5e-8 absolute (3 ulps
# at |p| = 0.19), the same in both modes; atol=1e-6 leaves ~20x headroom and is far below the
# y-x gap the eval swap must produce (checked in that test), rtol=1e-5 as 'optimizer_trajectory'.
TOLERANCES['submission_vs_schedulefree'] = {torch.float32: {'rtol': 1e-5, 'atol': 1e-6}}

# --- LM kernels (kernels/fused_linear_cross_entropy.py, rms_norm.py, rope_qk_norm.py). In these
# four kinds `atol` is a FRACTION OF max|expected| (the tests multiply it in): gradients are
# sums of mixed-sign terms, so an element's error scales with the tensor's magnitude, not
# its own. rtol keeps its usual meaning.
#
# Fused linear + CE vs the full-logits reference. fp64: both paths in fp64, reduction order
# only (measured 4.2e-14 of max). fp32: logsumexp and gradient sums over V <= 50257 terms in
# another order and blocking (measured 1.9e-6 of max); 1e-5 gives 5x headroom.
TOLERANCES['fused_linear_ce'] = {
    torch.float64: {'rtol': 1e-12, 'atol': 1e-12},
    torch.float32: {'rtol': 1e-5, 'atol': 1e-5},
}
# Gradients under bf16 autocast (keyed bf16): both paths round dlogits to bf16 and each
# matmul output to bf16 (2**-9 relative each), but at different points: the fused head
# scales by the upstream gradient after the matmul and sums G_W over chunks of bf16
# products in fp32; the reference rounds one full-size product. Measured 7.5e-3 of max
# (~2 bf16 ulps); 2**-6 gives 2x headroom.
TOLERANCES['fused_linear_ce_grad'] = {torch.bfloat16: {'rtol': 2.0**-7, 'atol': 2.0**-6}}
# RMSNorm kernels vs the fp64 formula on the same inputs, and torch vs the formula: fp32 math
# (mean over D <= 1024 and the weight-gradient sum over <= 123 rows in fp32, ~1e-6) rounded
# once to the output dtype: half an ulp, or one where fp32 noise crosses a rounding midpoint
# (bf16 ulp <= 2**-7 relative, fp16 2**-10). atol (of max) covers dx's cancellation
# dxhat - xhat * mean(...), computed in fp32 (~1e-7 of max) before that rounding.
TOLERANCES['rms_norm'] = {
    torch.float64: {'rtol': 1e-12, 'atol': 1e-12},
    torch.float32: {'rtol': 1e-5, 'atol': 1e-5},
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 2.0**-16},
    torch.float16: {'rtol': 2.0**-10, 'atol': 2.0**-16},
}
# RoPE + QK-norm forward vs rope_qk_norm_reference(norm_dtype=fp32) (upstream's CUDA
# numerics), keyed by the dtype the output is rounded to last (input dtype for fp32 outputs:
# the rotated pair is rounded to it). Same math; fp32 noise (FMA contraction in the
# rotation, sum order) can flip a rotated element's rounding by one ulp, which moves that
# output element by <= 1 ulp relative (bf16 2**-7, fp16 2**-10) and the row's others by
# ~|y_j|^2 of that. fp32: ~1e-7 measured.
TOLERANCES['rope_qk_norm'] = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-5},
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 2.0**-16},
    torch.float16: {'rtol': 2.0**-10, 'atol': 2.0**-16},
}
# RoPE + QK-norm gradients (kernels, or torch's autograd in fp32) vs the fp64 gradient of the
# same math on the same inputs. The kernels round the rotated pair to the input dtype in the
# forward (upstream's type_as) where fp64 does not: 2**-9 relative per element, which the
# projection (dy - yhat (yhat.dy)) / ||u|| turns into ~2**-9 of the row's |dy| / ||u||
# (measured 2.0e-3 of max for bf16); the one rounding of dx adds 2**-9. atol 2**-7 of max
# (4x headroom); fp16 scaled by its 8x smaller ulp.
TOLERANCES['rope_qk_norm_grad'] = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-5},
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 2.0**-7},
    torch.float16: {'rtol': 2.0**-10, 'atol': 2.0**-10},
}
# Upstream's own bf16 autograd (CPU, no autocast) vs fp64: the norm, the quotient, `+ eps` and
# the scale are each rounded to bf16 in the forward and the gradients of u's two uses (the
# quotient and the norm) are rounded and summed in bf16: measured 5.3e-3 of max, so 2**-6
# (3x). Documents how far upstream itself is from exact; the kernels meet the tighter entry.
TOLERANCES['rope_qk_norm_grad_upstream'] = {torch.bfloat16: {'rtol': 2.0**-6, 'atol': 2.0**-6}}
