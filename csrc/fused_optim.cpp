// Fused optimizer updates on CPU: AdamW/NAdamW, SGD with momentum, Schedule-Free AdamW.
//
// Spec: kernels/fused_optim.py::{adam,sgd,schedule_free_adamw}_reference. Each op updates
// a whole parameter list in one call and one pass over memory: every element's param,
// grad and optimizer state are loaded once, updated in fp32 registers and stored once
// (AdamW: 28 B per fp32 parameter, against ~80 B for torch's foreach path and ~128 B for
// the upstream NAdamW loop). As in multi_tensor_l2norm.cpp, every (tensor, chunk) pair
// is a work item and all items run under one at::parallel_for, balanced by cost.
//
// Bitwise agreement with the reference: the per-element formulas below are the
// reference's torch ops written out in the same order, each one a single IEEE fp32
// operation (mul, add, sub, div, sqrt are all correctly rounded) with the same fp32
// scalars (computed in double, then rounded once, as PyTorch does with a Python float
// operand). Neither x86-64 clone can contract a*b+c into an FMA (the avx2 target does not
// enable FMA), so on x86-64 the results equal the reference's bit for bit, in every
// dtype: 16-bit params are rounded (nearest-even) at the same point as the reference's
// copy_. On targets where the compiler contracts into FMAs by default (GCC on aarch64),
// results differ by a few ulps per step; tests/tolerances.py 'fused_optim' covers that.
//
// Vectorisation: the math is written on 8-lane GCC vector types, not left to the
// auto-vectoriser, because GCC will not vectorise sqrtf without -fno-math-errno (which
// setup.py does not pass, and the optimize attribute does not reach target clones in
// GCC 12). The square roots are the one op the shared clone code cannot issue at full
// width (the baseline clone has no 256-bit sqrt), so each update runs in two phases over
// an L1-resident block: everything up to the sqrt argument, then the block's roots with
// AVX when the CPU has it (SSE otherwise), then the rest. On the 2-core AMD EPYC dev box
// (AVX2, no AVX-512; in cache, one thread) AdamW went from 0.58 Gelem/s with the sqrt as
// two 128-bit halves inside the vector loop to 1.1 in blocks; torch's fused AdamW: 0.3.
// 16-bit params and grads are widened to fp32 in blocks too, updated, and narrowed back;
// those conversion loops are plain branch-free code that GCC does auto-vectorise.
//
// Threads: at::parallel_for is header-inline OpenMP in torch's OpenMP builds, so it only
// runs in parallel when this file is compiled with -fopenmp (setup.py's concern). Measured
// with -fopenmp, 2 threads: AdamW over 10M fp32 elements in 7.6 ms (37 GB/s) vs 15.6 ms
// without it.

#include "float_bits.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FUSED_OPTIM_X86 1
#endif

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_OPTIM_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FUSED_OPTIM_TARGET_CLONES
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Every helper taking or returning a 32-byte vector is always_inline, so the ABI note GCC
// emits for such signatures in the baseline (SSE-only) clone never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace {

// Work-item and threading constants: same values and reasoning as multi_tensor_l2norm.cpp
// (32768-element slices; 64 cost units per item so hundreds of bias vectors are not free;
// ATen's elementwise serial cutoff). One cost unit is one element: the streams per
// element (3-4 loads, 2-3 stores) are the same for every item of a call.
constexpr int64_t kChunkNumel = 1 << 15;
constexpr int64_t kItemOverhead = 64;
constexpr int64_t kGrainSize = 32768;

// Updates run over blocks of this many elements: the block's sqrt arguments (and for
// 16-bit params its widened params and grads) sit in fp32 stack buffers of 2 KiB each,
// which stay in L1 between the phases.
constexpr int64_t kBlock = 512;

#if defined(__GNUC__) || defined(__clang__)
typedef float vfloat __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;
#else
using vfloat = float;
constexpr int64_t kLanes = 1;
#endif

C10_ALWAYS_INLINE vfloat vload(const float* x) {
  vfloat v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}

C10_ALWAYS_INLINE void vstore(float* x, const vfloat& v) { std::memcpy(x, &v, sizeof(v)); }

// In-place square roots of n floats, n a multiple of 8; correctly rounded (IEEE
// sqrt instructions, or sqrtf), like the reference's. Picked once per process.
using SqrtBlockFn = void (*)(float*, int64_t);

#if defined(FUSED_OPTIM_X86)
__attribute__((target("avx"))) void sqrt_block_avx(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
  }
}

void sqrt_block_sse(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 4) {
    _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
  }
}
#else
void sqrt_block_scalar(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::sqrt(x[i]);
  }
}
#endif

SqrtBlockFn select_sqrt_block() {
#if defined(FUSED_OPTIM_X86)
  __builtin_cpu_init();  // runs during static initialisation
  return __builtin_cpu_supports("avx") ? sqrt_block_avx : sqrt_block_sse;
#else
  return sqrt_block_scalar;
#endif
}

const SqrtBlockFn sqrt_block = select_sqrt_block();

using algoperf::bits_from_float;
using algoperf::float_from_bits;

// 16-bit <-> fp32 conversions, branch-free so the block loops vectorise. Each gives the
// same bits as c10's scalar conversion (and so as torch's copy_), NaN payloads aside.
// The widening is multi_tensor_l2norm.cpp's, repeated here to keep each op one file.
struct BFloat16Bits {
  static C10_ALWAYS_INLINE float widen(uint16_t x) {
    return float_from_bits(static_cast<uint32_t>(x) << 16);
  }
  // c10::detail::round_to_nearest_even: add 0x7FFF plus the lowest kept bit, truncate.
  static C10_ALWAYS_INLINE uint16_t narrow(float f) {
    const uint32_t u = bits_from_float(f);
    const uint32_t rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
    return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
  }
};

struct HalfBits {
  // c10::detail::fp16_ieee_to_fp32_value with its normal/subnormal ternary as bit masks.
  static C10_ALWAYS_INLINE float widen(uint16_t x) {
    const uint32_t w = static_cast<uint32_t>(x) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normal = float_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float subnormal = float_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t is_subnormal = 0u - static_cast<uint32_t>(two_w < (1u << 27));
    return float_from_bits(sign | (bits_from_float(subnormal) & is_subnormal) |
                           (bits_from_float(normal) & ~is_subnormal));
  }
  // c10::detail::fp16_ieee_from_fp32_value: the rounding to 11 significant bits (nearest
  // even, subnormals included) is done by an fp32 add against a power of two.
  static C10_ALWAYS_INLINE uint16_t narrow(float f) {
    const uint32_t w = bits_from_float(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    float base = (float_from_bits(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t bias = shl1_w & 0xFF000000u;
    bias = bias < 0x71000000u ? 0x71000000u : bias;
    base = float_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = bits_from_float(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
  }
};

// ---------------------------------------------------------------------------------------
// Per-element updates. Each functor holds the fp32 scalars of one call and updates one
// vector of lanes: p is the param (in fp32), g the grad, s[] the fp32 state streams.
// An update with a square root is split around it: before_sqrt() does everything up to
// the sqrt and returns its argument, after_sqrt() gets the root and does the rest (it
// sees p and the states as before_sqrt() left them). Statement order and
// parenthesisation follow the reference line by line. The scalars are held by value:
// through a reference, every store to a float array could alias them and force a reload
// per vector.

struct AdamScalars {
  float decay;  // 1 - lr * weight_decay
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bias_correction1, bias_correction2;  // 1 - beta^step
  float lr, eps;
};

template <bool kNesterov>
struct AdamUpdate {
  static constexpr int kStates = 2;  // exp_avg, exp_avg_sq
  static constexpr bool kSqrt = true;
  const AdamScalars c;
  C10_ALWAYS_INLINE vfloat before_sqrt(vfloat& p, const vfloat& g, std::array<vfloat, 2>& s) const {
    vfloat& m = s[0];
    vfloat& v = s[1];
    p = p * c.decay;
    m = c.beta1 * m + c.one_minus_beta1 * g;
    v = c.beta2 * v + c.one_minus_beta2 * (g * g);
    return v / c.bias_correction2;  // v_hat
  }
  C10_ALWAYS_INLINE void after_sqrt(vfloat& p, const vfloat& g, const std::array<vfloat, 2>& s,
                                    const vfloat& root) const {
    const vfloat& m = s[0];
    const vfloat m_hat = (kNesterov ? c.beta1 * m + c.one_minus_beta1 * g : m) / c.bias_correction1;
    p = p - c.lr * m_hat / (root + c.eps);
  }
};

struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
};

enum class Momentum { kNone, kFirstStep, kRunning };

template <bool kWeightDecay, Momentum kMomentum, bool kNesterov>
struct SgdUpdate {
  static constexpr int kStates = kMomentum == Momentum::kNone ? 0 : 1;  // momentum_buffer
  static constexpr bool kSqrt = false;
  const SgdScalars c;
  // No square root: the whole update happens here; the return value is unused.
  C10_ALWAYS_INLINE vfloat before_sqrt(vfloat& p, const vfloat& grad,
                                       std::array<vfloat, kStates>& s) const {
    vfloat g = grad;
    if constexpr (kWeightDecay) {
      g = g + c.weight_decay * p;
    }
    if constexpr (kMomentum != Momentum::kNone) {
      vfloat& buf = s[0];
      if constexpr (kMomentum == Momentum::kFirstStep) {
        buf = g;
      } else {
        buf = c.momentum * buf + c.one_minus_dampening * g;
      }
      if constexpr (kNesterov) {
        g = g + c.momentum * buf;
      } else {
        g = buf;
      }
    }
    p = p - c.lr * g;
    return p;
  }
  C10_ALWAYS_INLINE void after_sqrt(vfloat&, const vfloat&, const std::array<vfloat, kStates>&,
                                    const vfloat&) const {}
};

struct ScheduleFreeScalars {
  float lr, ckp1, adaptive_y_lr, beta2, one_minus_beta2, bias_correction2, eps, weight_decay;
};

template <bool kWeightDecay>
struct ScheduleFreeUpdate {
  static constexpr int kStates = 2;  // z, exp_avg_sq
  static constexpr bool kSqrt = true;
  const ScheduleFreeScalars c;
  C10_ALWAYS_INLINE vfloat before_sqrt(vfloat&, const vfloat& g, std::array<vfloat, 2>& s) const {
    vfloat& v = s[1];
    v = c.beta2 * v + c.one_minus_beta2 * (g * g);
    return v / c.bias_correction2;
  }
  C10_ALWAYS_INLINE void after_sqrt(vfloat& y, const vfloat& g, std::array<vfloat, 2>& s,
                                    const vfloat& root) const {
    vfloat& z = s[0];
    vfloat d = g / (root + c.eps);
    if constexpr (kWeightDecay) {
      d = d + c.weight_decay * y;
    }
    y = y + c.ckp1 * (z - y);
    y = y + c.adaptive_y_lr * d;
    z = z - c.lr * d;
  }
};

// ---------------------------------------------------------------------------------------
// Streaming loops.

// One vector of lanes at offset i of p, g and the states, for one phase of an update:
// before_sqrt() (storing its sqrt argument at root) or after_sqrt() (reading the root).
template <bool kAfterSqrt, typename Update>
C10_ALWAYS_INLINE void update_lanes(const Update& update, float* p, const float* g,
                                    const std::array<float*, Update::kStates>& states, int64_t i,
                                    float* root) {
  constexpr int kStates = Update::kStates;
  vfloat vp = vload(p + i);
  const vfloat vg = vload(g + i);
  std::array<vfloat, kStates> vs;
  for (int k = 0; k < kStates; ++k) {
    vs[k] = vload(states[k] + i);
  }
  if constexpr (kAfterSqrt) {
    update.after_sqrt(vp, vg, vs, vload(root));
  } else {
    const vfloat arg = update.before_sqrt(vp, vg, vs);
    if constexpr (Update::kSqrt) {
      vstore(root, arg);
    }
  }
  vstore(p + i, vp);
  for (int k = 0; k < kStates; ++k) {
    vstore(states[k] + i, vs[k]);
  }
}

// One phase over n <= kBlock elements. The tail (n % kLanes) runs the same vector code on
// zero-padded copies, so every element sees the same arithmetic; roots has room for the
// padded lanes (kBlock is a multiple of kLanes).
template <bool kAfterSqrt, typename Update>
C10_ALWAYS_INLINE void update_phase(const Update& update, float* p, const float* g,
                                    const std::array<float*, Update::kStates>& states, float* roots,
                                    int64_t n) {
  constexpr int kStates = Update::kStates;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    update_lanes<kAfterSqrt>(update, p, g, states, i, roots + i);
  }
  if (i < n) {
    const size_t bytes = static_cast<size_t>(n - i) * sizeof(float);
    float tp[kLanes] = {}, tg[kLanes] = {}, ts[kStates > 0 ? kStates : 1][kLanes] = {};
    std::array<float*, kStates> tail_states;
    std::memcpy(tp, p + i, bytes);
    std::memcpy(tg, g + i, bytes);
    for (int k = 0; k < kStates; ++k) {
      std::memcpy(ts[k], states[k] + i, bytes);
      tail_states[k] = ts[k];
    }
    update_lanes<kAfterSqrt>(update, tp, tg, tail_states, 0, roots + i);
    std::memcpy(p + i, tp, bytes);
    for (int k = 0; k < kStates; ++k) {
      std::memcpy(states[k] + i, ts[k], bytes);
    }
  }
}

// Applies `update` to n elements of fp32 arrays, block by block: before_sqrt() over the
// block, storing p, the states and the sqrt arguments; the block's square roots; then
// after_sqrt() over the block, reloading p, g and the states from L1.
static_assert(kBlock % 8 == 0, "sqrt_block works on whole 8-float vectors");
template <typename Update>
C10_ALWAYS_INLINE void update_fp32(const Update& update, float* p, const float* g,
                                   const std::array<float*, Update::kStates>& states, int64_t n) {
  float roots[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    std::array<float*, Update::kStates> block_states;
    for (int k = 0; k < Update::kStates; ++k) {
      block_states[k] = states[k] + begin;
    }
    update_phase<false>(update, p + begin, g + begin, block_states, roots, len);
    if constexpr (Update::kSqrt) {
      sqrt_block(roots, (len + 7) / 8 * 8);
      update_phase<true>(update, p + begin, g + begin, block_states, roots, len);
    }
  }
}

// Same for 16-bit params and grads: block by block, widen p and g into fp32 buffers,
// update, narrow p back. State pointers advance with the block.
template <typename Bits, typename Update>
C10_ALWAYS_INLINE void update_16bit(const Update& update, uint16_t* p, const uint16_t* g,
                                    std::array<float*, Update::kStates> states, int64_t n) {
  float pb[kBlock];
  float gb[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    for (int64_t j = 0; j < len; ++j) {
      pb[j] = Bits::widen(p[begin + j]);
    }
    for (int64_t j = 0; j < len; ++j) {
      gb[j] = Bits::widen(g[begin + j]);
    }
    update_fp32(update, pb, gb, states, len);
    for (int64_t j = 0; j < len; ++j) {
      p[begin + j] = Bits::narrow(pb[j]);
    }
    for (auto& s : states) {
      s += len;
    }
  }
}

// One work item: elements [begin, begin + n) of the tensor whose pointers are given.
struct ItemPtrs {
  void* param;
  const void* grad;
  std::array<float*, 2> states;  // unused entries are nullptr
  at::ScalarType dtype;          // of param and grad
};

template <typename Update>
C10_ALWAYS_INLINE void update_item(const Update& update, const ItemPtrs& t, int64_t begin,
                                   int64_t n) {
  std::array<float*, Update::kStates> states;
  for (int k = 0; k < Update::kStates; ++k) {
    states[k] = t.states[k] + begin;
  }
  switch (t.dtype) {
    case at::kFloat:
      update_fp32(update, static_cast<float*>(t.param) + begin,
                  static_cast<const float*>(t.grad) + begin, states, n);
      break;
    case at::kBFloat16:
      update_16bit<BFloat16Bits>(update, static_cast<uint16_t*>(t.param) + begin,
                                 static_cast<const uint16_t*>(t.grad) + begin, states, n);
      break;
    case at::kHalf:
      update_16bit<HalfBits>(update, static_cast<uint16_t*>(t.param) + begin,
                             static_cast<const uint16_t*>(t.grad) + begin, states, n);
      break;
    default:
      // Unreachable: dtypes are validated before any work item is built.
      TORCH_INTERNAL_ASSERT(false, "fused optimizer: unexpected dtype ", t.dtype);
  }
}

// The per-item entry points, compiled for baseline x86-64 and for AVX2 and picked at load
// time (see multi_tensor_l2norm.cpp). Runtime flags become template arguments here, so
// the element loops carry no branches.
FUSED_OPTIM_TARGET_CLONES void adam_item(const AdamScalars& c, bool nesterov, const ItemPtrs& t,
                                         int64_t begin, int64_t n) {
  if (nesterov) {
    update_item(AdamUpdate<true>{c}, t, begin, n);
  } else {
    update_item(AdamUpdate<false>{c}, t, begin, n);
  }
}

template <bool kWeightDecay, Momentum kMomentum>
C10_ALWAYS_INLINE void sgd_item_nesterov(const SgdScalars& c, bool nesterov, const ItemPtrs& t,
                                         int64_t begin, int64_t n) {
  if (nesterov) {
    update_item(SgdUpdate<kWeightDecay, kMomentum, true>{c}, t, begin, n);
  } else {
    update_item(SgdUpdate<kWeightDecay, kMomentum, false>{c}, t, begin, n);
  }
}

template <bool kWeightDecay>
C10_ALWAYS_INLINE void sgd_item_momentum(const SgdScalars& c, Momentum momentum, bool nesterov,
                                         const ItemPtrs& t, int64_t begin, int64_t n) {
  switch (momentum) {
    case Momentum::kNone:
      // Without a buffer, Nesterov has nothing to look ahead with: plain SGD either way.
      update_item(SgdUpdate<kWeightDecay, Momentum::kNone, false>{c}, t, begin, n);
      break;
    case Momentum::kFirstStep:
      sgd_item_nesterov<kWeightDecay, Momentum::kFirstStep>(c, nesterov, t, begin, n);
      break;
    case Momentum::kRunning:
      sgd_item_nesterov<kWeightDecay, Momentum::kRunning>(c, nesterov, t, begin, n);
      break;
  }
}

FUSED_OPTIM_TARGET_CLONES void sgd_item(const SgdScalars& c, bool weight_decay, Momentum momentum,
                                        bool nesterov, const ItemPtrs& t, int64_t begin,
                                        int64_t n) {
  if (weight_decay) {
    sgd_item_momentum<true>(c, momentum, nesterov, t, begin, n);
  } else {
    sgd_item_momentum<false>(c, momentum, nesterov, t, begin, n);
  }
}

FUSED_OPTIM_TARGET_CLONES void schedule_free_item(const ScheduleFreeScalars& c, bool weight_decay,
                                                  const ItemPtrs& t, int64_t begin, int64_t n) {
  if (weight_decay) {
    update_item(ScheduleFreeUpdate<true>{c}, t, begin, n);
  } else {
    update_item(ScheduleFreeUpdate<false>{c}, t, begin, n);
  }
}

// ---------------------------------------------------------------------------------------
// Validation and the parallel driver, shared by the three ops.

struct NamedList {
  const char* name;  // as in the Python signature, for error messages
  const std::vector<at::Tensor>* tensors;
};

bool is_supported_param_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

void check_tensor(const char* op, const char* list, int64_t i, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", list, "[", i, "] is undefined");
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", list, "[", i, "] is on ", t.device(),
                    "; expected cpu");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, op, ": ", list, "[", i, "] has layout ", t.layout(),
                    "; expected torch.strided");
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", list, "[", i, "] is not contiguous");
}

// Checks every tensor before any is touched, so a bad entry never leaves the list half
// updated; messages name the list and the index (callers pass hundreds of tensors).
// states[k] must be fp32 with params[i]'s shape; grads[i] also has params[i]'s dtype.
void check_inputs(const char* op, const std::vector<at::Tensor>& params,
                  const std::vector<at::Tensor>& grads, const std::vector<NamedList>& states) {
  const int64_t n = static_cast<int64_t>(params.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(grads.size()) == n, op, ": grads has ", grads.size(),
                    " tensors; expected ", n, " (one per param)");
  for (const NamedList& s : states) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(s.tensors->size()) == n, op, ": ", s.name, " has ",
                      s.tensors->size(), " tensors; expected ", n, " (one per param)");
  }
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    check_tensor(op, "params", i, p);
    TORCH_CHECK_TYPE(is_supported_param_dtype(p.scalar_type()), op, ": params[", i, "] has dtype ",
                     p.scalar_type(), "; expected float32, bfloat16 or float16");
    const at::Tensor& g = grads[i];
    check_tensor(op, "grads", i, g);
    TORCH_CHECK_TYPE(g.scalar_type() == p.scalar_type(), op, ": grads[", i, "] has dtype ",
                     g.scalar_type(), "; expected ", p.scalar_type(), " like params[", i, "]");
    TORCH_CHECK_VALUE(g.sizes() == p.sizes(), op, ": grads[", i, "] has shape ", g.sizes(),
                      "; expected ", p.sizes(), " like params[", i, "]");
    for (const NamedList& s : states) {
      const at::Tensor& t = (*s.tensors)[i];
      check_tensor(op, s.name, i, t);
      TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", s.name, "[", i, "] has dtype ",
                       t.scalar_type(), "; expected float32 (optimizer state is fp32)");
      TORCH_CHECK_VALUE(t.sizes() == p.sizes(), op, ": ", s.name, "[", i, "] has shape ", t.sizes(),
                        "; expected ", p.sizes(), " like params[", i, "]");
    }
  }
}

// Splits every non-empty tensor into chunks and runs `run_item(ptrs, begin, numel)` on all
// of them under one at::parallel_for, threads balanced by cost (as multi_tensor_l2norm).
// Every element is written by exactly one item, so the result does not depend on the
// thread count. Bumps the version counter of every written tensor, as an in-place torch
// op would, so autograd still catches the use of a stale saved tensor.
template <typename RunItem>
void for_each_chunk(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                    std::vector<std::vector<at::Tensor>*> states, const RunItem& run_item) {
  struct Item {
    int64_t tensor, begin, numel;
  };
  const int64_t n_tensors = static_cast<int64_t>(params.size());
  std::vector<ItemPtrs> ptrs(static_cast<size_t>(n_tensors));
  std::vector<Item> items;
  items.reserve(static_cast<size_t>(n_tensors));
  for (int64_t i = 0; i < n_tensors; ++i) {
    const int64_t numel = params[i].numel();
    if (numel == 0) {
      continue;
    }
    ItemPtrs& t = ptrs[i];
    t.param = params[i].data_ptr();
    t.grad = grads[i].const_data_ptr();
    t.states = {nullptr, nullptr};
    for (size_t k = 0; k < states.size(); ++k) {
      t.states[k] = (*states[k])[i].data_ptr<float>();
    }
    t.dtype = params[i].scalar_type();
    for (int64_t begin = 0; begin < numel; begin += kChunkNumel) {
      items.push_back(Item{i, begin, std::min(kChunkNumel, numel - begin)});
    }
  }

  // Before any write: bumping refuses an inference tensor outside inference mode, as an
  // in-place torch op would, and that must not leave the list half updated.
  for (at::Tensor& p : params) {
    p.unsafeGetTensorImpl()->bump_version();
  }
  for (std::vector<at::Tensor>* s : states) {
    for (at::Tensor& t : *s) {
      t.unsafeGetTensorImpl()->bump_version();
    }
  }

  const int64_t n_items = static_cast<int64_t>(items.size());
  std::vector<int64_t> cost_start(static_cast<size_t>(n_items) + 1, 0);
  for (int64_t k = 0; k < n_items; ++k) {
    cost_start[k + 1] = cost_start[k] + items[k].numel + kItemOverhead;
  }
  at::parallel_for(0, cost_start[n_items], kGrainSize, [&](int64_t begin, int64_t end) {
    auto first = std::lower_bound(cost_start.begin(), cost_start.end() - 1, begin);
    for (int64_t k = first - cost_start.begin(); k < n_items && cost_start[k] < end; ++k) {
      const Item& item = items[k];
      run_item(ptrs[item.tensor], item.begin, item.numel);
    }
  });
}

}  // namespace

void fused_adam_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                    std::vector<at::Tensor> exp_avgs, std::vector<at::Tensor> exp_avg_sqs,
                    int64_t step, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool nesterov) {
  constexpr const char* op = "adam_";
  TORCH_CHECK_VALUE(step >= 1, op, ": step is ", step, "; expected >= 1");
  check_inputs(op, params, grads, {{"exp_avgs", &exp_avgs}, {"exp_avg_sqs", &exp_avg_sqs}});
  // Scalars as the reference forms them: Python double arithmetic (std::pow is the same
  // libm pow that Python's float ** int calls), rounded to fp32 once.
  const AdamScalars c{
      static_cast<float>(1.0 - lr * weight_decay),
      static_cast<float>(beta1),
      static_cast<float>(1.0 - beta1),
      static_cast<float>(beta2),
      static_cast<float>(1.0 - beta2),
      static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(step))),
      static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(step))),
      static_cast<float>(lr),
      static_cast<float>(eps),
  };
  for_each_chunk(
      params, grads, {&exp_avgs, &exp_avg_sqs},
      [&](const ItemPtrs& t, int64_t begin, int64_t n) { adam_item(c, nesterov, t, begin, n); });
}

void fused_sgd_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                   std::vector<at::Tensor> momentum_buffers, double lr, double momentum,
                   double dampening, double weight_decay, bool nesterov, bool first_step) {
  constexpr const char* op = "sgd_";
  std::vector<NamedList> states;
  if (momentum != 0.0) {
    states.push_back({"momentum_buffers", &momentum_buffers});
  } else {
    TORCH_CHECK_VALUE(momentum_buffers.empty(), op, ": momentum is 0 but ", momentum_buffers.size(),
                      " momentum_buffers were given; expected none");
  }
  check_inputs(op, params, grads, states);
  const SgdScalars c{static_cast<float>(lr), static_cast<float>(momentum),
                     static_cast<float>(1.0 - dampening), static_cast<float>(weight_decay)};
  const Momentum mode = momentum == 0.0 ? Momentum::kNone
                        : first_step    ? Momentum::kFirstStep
                                        : Momentum::kRunning;
  std::vector<std::vector<at::Tensor>*> written;
  if (mode != Momentum::kNone) {
    written.push_back(&momentum_buffers);
  }
  const bool has_weight_decay = weight_decay != 0.0;
  for_each_chunk(params, grads, written, [&](const ItemPtrs& t, int64_t begin, int64_t n) {
    sgd_item(c, has_weight_decay, mode, nesterov, t, begin, n);
  });
}

void fused_schedule_free_adamw_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                                   std::vector<at::Tensor> zs, std::vector<at::Tensor> exp_avg_sqs,
                                   double lr, double ckp1, double adaptive_y_lr, double beta2,
                                   double bias_correction2, double eps, double weight_decay) {
  constexpr const char* op = "schedule_free_adamw_";
  check_inputs(op, params, grads, {{"zs", &zs}, {"exp_avg_sqs", &exp_avg_sqs}});
  const ScheduleFreeScalars c{
      static_cast<float>(lr),
      static_cast<float>(ckp1),
      static_cast<float>(adaptive_y_lr),
      static_cast<float>(beta2),
      static_cast<float>(1.0 - beta2),
      static_cast<float>(bias_correction2),
      static_cast<float>(eps),
      static_cast<float>(weight_decay),
  };
  const bool has_weight_decay = weight_decay != 0.0;
  for_each_chunk(params, grads, {&zs, &exp_avg_sqs},
                 [&](const ItemPtrs& t, int64_t begin, int64_t n) {
                   schedule_free_item(c, has_weight_decay, t, begin, n);
                 });
}
