// Operator registration: the schemas of torch.ops.wmkernels.* and their CPU
// kernels. No Python here, so the CMake build (C++ tests) links it as is; the
// Python module init that loads this library lives in python_module.cpp.
#include <string>

#include <torch/library.h>

#include "cpu/lstm_cell.h"
#include "cpu/lstm_rows.h"
#include "cpu/lstm_sequence.h"

TORCH_LIBRARY(wmkernels, m) {
  m.def(
      "lstm_cell_forward(Tensor gates, Tensor c_prev) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor act, "
      "Tensor c_prev, Tensor c) -> (Tensor, Tensor)");
  // -> (y, h_n, c_n, act, cs); act and cs are saved for the backward.
  m.def(
      "lstm_sequence_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? lengths) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b)
  m.def(
      "lstm_sequence_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor act, Tensor cs, Tensor y, "
      "Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The instruction set of the vectorized CPU kernels in use: "avx512",
  // "avx2" or "default" (see csrc/cpu/lstm_rows.h).
  m.def("cpu_capability() -> str",
        [] { return std::string(wmkernels::cpu::cpu_capability()); });
}

TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_cell_forward", &wmkernels::cpu::lstm_cell_forward);
  m.impl("lstm_cell_backward", &wmkernels::cpu::lstm_cell_backward);
  m.impl("lstm_sequence_forward", &wmkernels::cpu::lstm_sequence_forward);
  m.impl("lstm_sequence_backward", &wmkernels::cpu::lstm_sequence_backward);
}
