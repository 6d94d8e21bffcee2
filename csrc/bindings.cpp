// Operator registration: the schemas of torch.ops.wmkernels.* and their CPU
// kernels. No Python here, so the CMake build (C++ tests) links it as is; the
// Python module init that loads this library lives in python_module.cpp.
#include <torch/library.h>

#include "cpu/lstm_cell.h"

TORCH_LIBRARY(wmkernels, m) {
  m.def(
      "lstm_cell_forward(Tensor gates, Tensor c_prev) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor act, "
      "Tensor c_prev, Tensor c) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_cell_forward", &wmkernels::cpu::lstm_cell_forward);
  m.impl("lstm_cell_backward", &wmkernels::cpu::lstm_cell_backward);
}
