// Multi-tensor L2 norm on CPU: one call for a whole list of tensors.
//
// Spec: kernels/multi_tensor_l2norm.py::multi_tensor_l2norm_reference. The point of
// this op is the per-tensor overhead: the upstream baseline logs the gradient norm as
// torch.norm(torch.stack([torch.norm(g) for g in grads])), i.e. one dispatch per
// parameter tensor (161 for ResNet-50, several hundred for a Transformer). Here every
// (tensor, chunk) pair becomes a work item, all items run under one at::parallel_for,
// and the partial sums are combined serially in a fixed order.
//
// Determinism: each work item writes its own partial sum and the partials are reduced
// in item order after the parallel region, so the result does not depend on the
// number of threads or on how at::parallel_for splits the range.

#include "float_bits.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define L2NORM_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define L2NORM_TARGET_CLONES
#endif

namespace {

// Largest slice of one tensor handled by a single work item. 32768 elements is 128 KiB
// of fp32: big enough that the per-item bookkeeping (a few ns) is noise next to the
// ~10 us it takes to stream the slice, small enough that one huge tensor (an
// embedding, ResNet-50's 2.4M-element 3x3x512x512 conv) spreads over all threads and
// that the load imbalance between threads is at most one slice.
constexpr int64_t kChunkNumel = 1 << 15;

// Cost charged to every work item on top of its element count when balancing threads,
// so that hundreds of tiny tensors (biases, norm scales) are not treated as free.
constexpr int64_t kItemOverhead = 64;

// Below this many cost units the whole call stays on the calling thread. One cost unit
// is about one element, as in ATen's elementwise kernels, so take their serial cutoff
// (at::internal::GRAIN_SIZE in ATen/TensorIterator.h; ~9 us of fp32 on one core here).
constexpr int64_t kGrainSize = 32768;

struct WorkItem {
  const void* data;  // first element of the slice
  int64_t numel;     // elements in the slice
  int64_t tensor;    // index into the input list
  at::ScalarType dtype;
};

// Sum of squares of n values, accumulated in double.
//
// Why double: the inputs are at most 24-bit mantissas (fp32), so every square is exact
// in double (48 <= 53 bits) and the summation error over a 25.6M-element ResNet-50
// gradient is ~25.6e6 * 2^-53 ~ 3e-9 relative worst case, far below the 2^-24 rounding
// of the fp32 result. An fp32 accumulator would carry a worst-case error of
// ~n * 2^-24 instead. Double also needs no overflow scaling: a square only overflows
// double for |x| > 1.3e154, where the true norm is already beyond fp32's 3.4e38.
// The cost is nil: the loop is bound by memory bandwidth, not by the converts.
//
// Eight independent accumulators break the dependency chain on a single add (4-cycle
// latency) and let the compiler vectorise without -ffast-math reassociation.
template <typename scalar_t>
C10_ALWAYS_INLINE double sum_squares(const scalar_t* x, int64_t n) {
  constexpr int64_t kLanes = 8;
  double acc[kLanes] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const double v = static_cast<double>(x[i + j]);
      acc[j] += v * v;
    }
  }
  double tail = 0.0;
  for (; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    tail += v * v;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

using algoperf::bits_from_float;
using algoperf::float_from_bits;

// bf16 -> fp32 is a 16-bit shift; c10's conversion already vectorises.
C10_ALWAYS_INLINE float widen_to_float(c10::BFloat16 x) { return static_cast<float>(x); }

// fp16 -> fp32 with the arithmetic of c10::detail::fp16_ieee_to_fp32_value, but with its
// normal/subnormal ternary written as bit masks: c10's version has control flow that
// stops GCC 12 from vectorising the widening loop, and the baseline x86-64 target has no
// F16C instruction to fall back on. Exhaustively tested over all 65536 bit patterns.
C10_ALWAYS_INLINE float widen_to_float(c10::Half x) {
  const uint32_t w = static_cast<uint32_t>(x.x) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal, inf and nan: rebias the exponent by 0xE0 (so exponent 0x1F lands on 0xFF),
  // then scale by 2^-112 to undo the excess.
  const float normal = float_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  // Subnormal: place the mantissa under the exponent of 0.5 and subtract 0.5.
  const float subnormal = float_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(two_w < (1u << 27));
  return float_from_bits(sign | (bits_from_float(subnormal) & is_subnormal) |
                         (bits_from_float(normal) & ~is_subnormal));
}

// 16-bit inputs are widened to fp32 in blocks on the stack and then summed by the fp32
// loop: a plain widening loop vectorises, widening inside the 8-lane double loop does
// not. Single thread, in cache, best of 20 on the shared 2-core AMD EPYC dev box (+-20%
// run to run), baseline clone: widening inside the double loop ran bf16 at 1.4 and fp16
// at 0.7 Gelem/s; blocked, bf16 runs at ~4.1 and fp16 at ~1.8 (~1.3 with c10's fp16
// conversion), against ~5 Gelem/s for fp32.
template <typename scalar_t>
C10_ALWAYS_INLINE double sum_squares_widened(const scalar_t* x, int64_t n) {
  constexpr int64_t kBlock = 512;  // 2 KiB of fp32 on the stack, stays in L1
  float buffer[kBlock];
  double total = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    for (int64_t j = 0; j < len; ++j) {
      buffer[j] = widen_to_float(x[begin + j]);
    }
    total += sum_squares(buffer, len);
  }
  return total;
}

// Compiled twice, for baseline x86-64 (SSE2) and for AVX2, and picked at load time by
// the dynamic loader (GCC/Clang function multiversioning), since a build cannot assume
// -march=native. The AVX2 clone takes fp16 from 1.8 to 3.1 Gelem/s and bf16 from 4.1 to
// 5.2 (same setup as above); fp32 from DRAM is bandwidth-bound either way (ResNet-50's
// 102 MB in 7-8 ms, on par with torch._foreach_norm). The explicit 8 lanes fix the
// summation order and the avx2 target does not enable FMA, so both clones return
// bit-identical sums (checked on all four dtypes).
L2NORM_TARGET_CLONES double sum_squares_item(const WorkItem& item) {
  switch (item.dtype) {
    case at::kFloat:
      return sum_squares(static_cast<const float*>(item.data), item.numel);
    case at::kDouble:
      return sum_squares(static_cast<const double*>(item.data), item.numel);
    case at::kBFloat16:
      return sum_squares_widened(static_cast<const c10::BFloat16*>(item.data), item.numel);
    case at::kHalf:
      return sum_squares_widened(static_cast<const c10::Half*>(item.data), item.numel);
    default:
      // Unreachable: dtypes are validated before any work item is built.
      TORCH_INTERNAL_ASSERT(false, "multi_tensor_l2norm: unexpected dtype ", item.dtype);
  }
}

bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
         dtype == at::kHalf;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cpu(std::vector<at::Tensor> tensors,
                                                           bool per_tensor) {
  const int64_t n_tensors = static_cast<int64_t>(tensors.size());

  // Validate everything before doing any work so a bad entry never yields a partial
  // result; messages name the index because callers pass hundreds of gradients.
  for (int64_t i = 0; i < n_tensors; ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK_VALUE(t.defined(), "multi_tensor_l2norm: tensors[", i, "] is undefined");
    TORCH_CHECK_VALUE(t.device().is_cpu(), "multi_tensor_l2norm: tensors[", i, "] is on ",
                      t.device(), "; expected cpu");
    TORCH_CHECK_VALUE(t.layout() == at::kStrided, "multi_tensor_l2norm: tensors[", i,
                      "] has layout ", t.layout(), "; expected torch.strided");
    TORCH_CHECK_TYPE(is_supported_dtype(t.scalar_type()), "multi_tensor_l2norm: tensors[", i,
                     "] has dtype ", t.scalar_type(),
                     "; expected float32, float64, bfloat16 or float16");
  }

  // A sum of squares does not care about element order, so any tensor whose elements
  // exactly tile one memory block (contiguous, transposed, channels_last, permuted) is
  // read in place. Only views with gaps or repeats (slices, expand) are copied.
  std::vector<at::Tensor> dense_copies;
  std::vector<WorkItem> items;
  items.reserve(static_cast<size_t>(n_tensors));
  for (int64_t i = 0; i < n_tensors; ++i) {
    const at::Tensor& t = tensors[i];
    const int64_t numel = t.numel();
    if (numel == 0) {
      continue;
    }
    const char* base;
    if (t.is_non_overlapping_and_dense()) {
      base = static_cast<const char*>(t.const_data_ptr());
    } else {
      dense_copies.push_back(t.contiguous());
      base = static_cast<const char*>(dense_copies.back().const_data_ptr());
    }
    const int64_t elem_size = static_cast<int64_t>(t.element_size());
    for (int64_t begin = 0; begin < numel; begin += kChunkNumel) {
      items.push_back(WorkItem{base + begin * elem_size, std::min(kChunkNumel, numel - begin), i,
                               t.scalar_type()});
    }
  }

  // Balance threads by cost rather than by item count: a thread's share of
  // [0, total_cost) owns every item whose cost range starts inside it.
  const int64_t n_items = static_cast<int64_t>(items.size());
  std::vector<int64_t> cost_start(static_cast<size_t>(n_items) + 1, 0);
  for (int64_t k = 0; k < n_items; ++k) {
    cost_start[k + 1] = cost_start[k] + items[k].numel + kItemOverhead;
  }
  std::vector<double> partials(static_cast<size_t>(n_items), 0.0);
  at::parallel_for(0, cost_start[n_items], kGrainSize, [&](int64_t begin, int64_t end) {
    auto first = std::lower_bound(cost_start.begin(), cost_start.end() - 1, begin);
    for (int64_t k = first - cost_start.begin(); k < n_items && cost_start[k] < end; ++k) {
      partials[k] = sum_squares_item(items[k]);
    }
  });

  std::vector<double> tensor_sumsq(static_cast<size_t>(n_tensors), 0.0);
  for (int64_t k = 0; k < n_items; ++k) {
    tensor_sumsq[items[k].tensor] += partials[k];
  }
  double total_sumsq = 0.0;
  for (const double s : tensor_sumsq) {
    total_sumsq += s;
  }

  at::Tensor total = at::empty({}, at::TensorOptions().dtype(at::kFloat));
  total.data_ptr<float>()[0] = static_cast<float>(std::sqrt(total_sumsq));
  at::Tensor norms = at::empty({per_tensor ? n_tensors : 0}, at::TensorOptions().dtype(at::kFloat));
  if (per_tensor) {
    float* out = norms.data_ptr<float>();
    for (int64_t i = 0; i < n_tensors; ++i) {
      out[i] = static_cast<float>(std::sqrt(tensor_sumsq[i]));
    }
  }
  return {total, norms};
}
