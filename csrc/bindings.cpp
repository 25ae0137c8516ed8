// Python bindings for kernels._C: declarations and m.def only.
//
// Input validation lives with each op (TORCH_CHECK in its .cpp); the Python face of
// every binding, with its reference and fallbacks, is kernels/<op>.py. Bindings release
// the GIL because the ops can run for milliseconds on large parameter lists.

#include <torch/extension.h>

#include <tuple>
#include <vector>

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cpu(std::vector<at::Tensor> tensors,
                                                           bool per_tensor);
void fused_adam_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                    std::vector<at::Tensor> exp_avgs, std::vector<at::Tensor> exp_avg_sqs,
                    int64_t step, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool nesterov);
void fused_sgd_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                   std::vector<at::Tensor> momentum_buffers, double lr, double momentum,
                   double dampening, double weight_decay, bool nesterov, bool first_step);
void fused_schedule_free_adamw_cpu(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                                   std::vector<at::Tensor> zs, std::vector<at::Tensor> exp_avg_sqs,
                                   double lr, double ckp1, double adaptive_y_lr, double beta2,
                                   double bias_correction2, double eps, double weight_decay);

// csrc/chunked_embedding.cpp
at::Tensor chunked_embedding_forward_cpu(const at::Tensor& indices,
                                         const std::vector<at::Tensor>& chunks);
void chunked_embedding_backward_cpu(const at::Tensor& grad_out, const at::Tensor& indices,
                                    const std::vector<at::Tensor>& grads);

// csrc/criteo_tsv.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor> criteo_tsv_parse_cpu(at::Tensor data,
                                                                    at::Tensor starts,
                                                                    at::Tensor ends,
                                                                    at::Tensor vocab_sizes);
at::Tensor criteo_find_newlines_cpu(at::Tensor data);
at::Tensor farmhash_fingerprint64_cpu(at::Tensor data, at::Tensor offsets);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("multi_tensor_l2norm", &multi_tensor_l2norm_cpu,
        "(total, per_tensor) fp32 L2 norms of a list of CPU tensors, accumulated in fp64.",
        py::arg("tensors"), py::arg("per_tensor"), py::call_guard<py::gil_scoped_release>());
  m.def("adam_", &fused_adam_cpu,
        "In-place AdamW (NAdamW if nesterov) step over lists of contiguous CPU tensors.",
        py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("nesterov"), py::call_guard<py::gil_scoped_release>());
  m.def("sgd_", &fused_sgd_cpu,
        "In-place torch.optim.SGD step over lists of contiguous CPU tensors.", py::arg("params"),
        py::arg("grads"), py::arg("momentum_buffers"), py::arg("lr"), py::arg("momentum"),
        py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("first_step"),
        py::call_guard<py::gil_scoped_release>());
  m.def("schedule_free_adamw_", &fused_schedule_free_adamw_cpu,
        "In-place Schedule-Free AdamW step (train mode, p holds y) over contiguous CPU tensors.",
        py::arg("params"), py::arg("grads"), py::arg("zs"), py::arg("exp_avg_sqs"), py::arg("lr"),
        py::arg("ckp1"), py::arg("adaptive_y_lr"), py::arg("beta2"), py::arg("bias_correction2"),
        py::arg("eps"), py::arg("weight_decay"), py::call_guard<py::gil_scoped_release>());
  m.def("chunked_embedding_forward", &chunked_embedding_forward_cpu,
        "Rows `indices` of the virtual concatenation of `chunks` (fp32 CPU), without building it.",
        py::arg("indices"), py::arg("chunks"), py::call_guard<py::gil_scoped_release>());
  m.def("chunked_embedding_backward", &chunked_embedding_backward_cpu,
        "Zeroes each dense gradient chunk and adds the lookup gradients into it (deterministic).",
        py::arg("grad_out"), py::arg("indices"), py::arg("grads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("criteo_tsv_parse", &criteo_tsv_parse_cpu,
        "(inputs (n,39) f32, targets (n,) f32, errors (m,3) i64) of Criteo TSV lines "
        "data[starts[i]:ends[i]], as upstream AlgoPerf's decode_csv + hashing.",
        py::arg("data"), py::arg("starts"), py::arg("ends"), py::arg("vocab_sizes"),
        py::call_guard<py::gil_scoped_release>());
  m.def("criteo_find_newlines", &criteo_find_newlines_cpu,
        "int64 positions of every '\\n' in a 1-D uint8 CPU tensor, in order.",
        py::arg("data"), py::call_guard<py::gil_scoped_release>());
  m.def("farmhash_fingerprint64", &farmhash_fingerprint64_cpu,
        "FarmHash Fingerprint64 of data[offsets[i]:offsets[i+1]], as int64 bit patterns.",
        py::arg("data"), py::arg("offsets"), py::call_guard<py::gil_scoped_release>());
}
