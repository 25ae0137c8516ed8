// Embedding lookup straight from DLRM's chunked table, and its dense backward, on CPU.
//
// Spec: kernels/chunked_embedding.py::chunked_embedding_reference, upstream's
// `torch.cat(chunks)[indices]`. Upstream's Criteo model concatenates its four 1,048,576 x 128
// chunks (2.15 GB) into one table on every forward pass, only to gather 26 rows per example
// (213k rows, 109 MB, at batch 8,192). Here each lookup finds its chunk by its row offset and
// copies the row; no table is built.
//
// Backward: the chunks' gradients are dense (optimizers update every row), so each is zeroed
// and the lookup gradients are added in. Scatter-add races when rows repeat; instead every
// thread owns a contiguous range of table rows and scans all lookups, adding only those in
// its range, in lookup order: race-free and deterministic (bitwise the same result as a
// serial loop, whatever the thread count). The scan reads N indices per thread (1.7 MB at
// N = 213k), small against the 109 MB of gradient rows it adds.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Row offsets of the chunks in the virtual concatenated table: offsets[k] = first row of k.
std::vector<int64_t> chunk_offsets(const std::vector<at::Tensor>& chunks, int64_t dim) {
  std::vector<int64_t> offsets(chunks.size() + 1, 0);
  for (size_t k = 0; k < chunks.size(); ++k) {
    const auto& c = chunks[k];
    TORCH_CHECK(c.device().is_cpu() && c.scalar_type() == at::kFloat && c.dim() == 2 &&
                    c.is_contiguous() && c.size(1) == dim,
                "chunked_embedding: chunk ", k, " must be a contiguous fp32 CPU (rows, ", dim,
                ") tensor, got ", c.sizes(), " ", c.scalar_type());
    offsets[k + 1] = offsets[k] + c.size(0);
  }
  return offsets;
}

inline int64_t find_chunk(const std::vector<int64_t>& offsets, int64_t row) {
  // upper_bound over the chunk starts: the last start <= row. 4 chunks: 2-3 comparisons.
  return static_cast<int64_t>(std::upper_bound(offsets.begin() + 1, offsets.end() - 1, row) -
                              (offsets.begin() + 1));
}

void check_indices(const at::Tensor& indices) {
  TORCH_CHECK(indices.device().is_cpu() && indices.scalar_type() == at::kLong &&
                  indices.dim() == 1 && indices.is_contiguous(),
              "chunked_embedding: indices must be a contiguous 1-d int64 CPU tensor");
}

}  // namespace

at::Tensor chunked_embedding_forward_cpu(const at::Tensor& indices,
                                         const std::vector<at::Tensor>& chunks) {
  check_indices(indices);
  TORCH_CHECK(!chunks.empty(), "chunked_embedding: no chunks");
  const int64_t dim = chunks[0].size(1);
  const auto offsets = chunk_offsets(chunks, dim);
  const int64_t rows = offsets.back();
  const int64_t n = indices.numel();
  const int64_t* idx = indices.data_ptr<int64_t>();
  std::vector<const float*> bases(chunks.size());
  for (size_t k = 0; k < chunks.size(); ++k) bases[k] = chunks[k].data_ptr<float>();
  auto out = at::empty({n, dim}, chunks[0].options());
  float* dst = out.data_ptr<float>();
  // Validate first, serially: an error thrown inside parallel_for is rethrown anyway, but
  // this names the first bad position deterministically.
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(idx[i] >= 0 && idx[i] < rows, "chunked_embedding: index ", idx[i], " at position ",
                i, " is outside the table's ", rows, " rows (reduce ids modulo the vocabulary)");
  }
  // ~512 B per row copy: grain of 256 rows (128 KiB) per task.
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = idx[i];
      const int64_t k = find_chunk(offsets, row);
      std::memcpy(dst + i * dim, bases[k] + (row - offsets[k]) * dim, dim * sizeof(float));
    }
  });
  return out;
}

// grads: one (rows_k, dim) fp32 tensor per chunk, written in full (zeroed, then accumulated).
void chunked_embedding_backward_cpu(const at::Tensor& grad_out, const at::Tensor& indices,
                                    const std::vector<at::Tensor>& grads) {
  check_indices(indices);
  TORCH_CHECK(!grads.empty(), "chunked_embedding: no gradient chunks");
  const int64_t dim = grads[0].size(1);
  const auto offsets = chunk_offsets(grads, dim);
  const int64_t n = indices.numel();
  TORCH_CHECK(grad_out.scalar_type() == at::kFloat && grad_out.is_contiguous() &&
                  grad_out.dim() == 2 && grad_out.size(0) == n && grad_out.size(1) == dim,
              "chunked_embedding: grad_out must be a contiguous fp32 (", n, ", ", dim, ") tensor");
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* g = grad_out.data_ptr<float>();
  std::vector<float*> bases(grads.size());
  for (size_t k = 0; k < grads.size(); ++k) bases[k] = grads[k].data_ptr<float>();
  const int64_t rows = offsets.back();
  // Row ranges of 64 Ki rows (32 MiB of gradient) per task: zero the range, then add the
  // lookups that land in it.
  constexpr int64_t kRowsPerTask = 1 << 16;
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
    const int64_t lo = t_begin * kRowsPerTask;
    const int64_t hi = std::min(rows, t_end * kRowsPerTask);
    for (int64_t r = lo; r < hi;) {
      const int64_t k = find_chunk(offsets, r);
      const int64_t stop = std::min(hi, offsets[k + 1]);
      std::memset(bases[k] + (r - offsets[k]) * dim, 0, (stop - r) * dim * sizeof(float));
      r = stop;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = idx[i];
      if (row < lo || row >= hi) continue;
      const int64_t k = find_chunk(offsets, row);
      float* dst = bases[k] + (row - offsets[k]) * dim;
      const float* src = g + i * dim;
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    }
  });
}
