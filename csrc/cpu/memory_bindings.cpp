// Registration of the working-memory ops: schemas into the wmkernels library
// (a fragment: csrc/bindings.cpp holds the one TORCH_LIBRARY) and their CPU
// kernels. Fake (meta) kernels are registered in Python
// (wmkernels/backends/cpu_memory.py).
#include <torch/library.h>

#include "memory_ops.h"

TORCH_LIBRARY_FRAGMENT(wmkernels, m) {
  m.def("wm_read_forward(Tensor M, Tensor q, Tensor? mask, float scale) -> (Tensor, Tensor)");
  m.def(
      "wm_read_backward(Tensor grad_r, Tensor grad_attn, Tensor M, Tensor q, Tensor attn, "
      "float scale) -> (Tensor, Tensor)");
  m.def("wm_shift_write_forward(Tensor M, Tensor v) -> Tensor");
  m.def("wm_shift_write_backward(Tensor grad_new) -> (Tensor, Tensor)");
  m.def("wm_write_forward(Tensor M, Tensor w, Tensor e, Tensor a) -> Tensor");
  m.def(
      "wm_write_backward(Tensor grad_new, Tensor M, Tensor w, Tensor e, Tensor a) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("wm_read_forward", &wmkernels::cpu::wm_read_forward);
  m.impl("wm_read_backward", &wmkernels::cpu::wm_read_backward);
  m.impl("wm_shift_write_forward", &wmkernels::cpu::wm_shift_write_forward);
  m.impl("wm_shift_write_backward", &wmkernels::cpu::wm_shift_write_backward);
  m.impl("wm_write_forward", &wmkernels::cpu::wm_write_forward);
  m.impl("wm_write_backward", &wmkernels::cpu::wm_write_backward);
}
