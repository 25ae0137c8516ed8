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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("multi_tensor_l2norm", &multi_tensor_l2norm_cpu,
        "(total, per_tensor) fp32 L2 norms of a list of CPU tensors, accumulated in fp64.",
        py::arg("tensors"), py::arg("per_tensor"), py::call_guard<py::gil_scoped_release>());
}
