// Registration of the working-memory ops: schemas into the wmkernels library
// (a fragment: csrc/bindings.cpp holds the one TORCH_LIBRARY) and their CPU
// kernels. Fake (meta) kernels are registered in Python
// (wmkernels/backends/cpu_memory.py).
#include <torch/library.h>

#include "memory_ops.h"
#include "wm_lstm_sequence.h"

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
  m.def(
      "wm_lstm_sequence_forward(Tensor x, Tensor h0, Tensor c0, Tensor M0, Tensor w_ih, "
      "Tensor w_hh, Tensor w_rh, Tensor b, Tensor w_q, Tensor b_q, Tensor w_v, Tensor b_v, "
      "Tensor? w_e, Tensor? b_e, Tensor? lengths, Tensor? capacity, str write_mode, int K) -> (Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "wm_lstm_sequence_backward(Tensor grad_y, Tensor grad_h, Tensor grad_c, Tensor grad_M, "
      "Tensor x, Tensor M0, Tensor w_ih, Tensor w_hh, Tensor w_rh, Tensor w_q, Tensor w_v, "
      "Tensor? w_e, Tensor? lengths, Tensor? capacity, Tensor h0, Tensor y, Tensor c_all, Tensor act, "
      "Tensor attn, Tensor q_all, Tensor v_all, Tensor e_all, Tensor ckpt, str write_mode, "
      "int K) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("wm_read_forward", &wmkernels::cpu::wm_read_forward);
  m.impl("wm_read_backward", &wmkernels::cpu::wm_read_backward);
  m.impl("wm_shift_write_forward", &wmkernels::cpu::wm_shift_write_forward);
  m.impl("wm_shift_write_backward", &wmkernels::cpu::wm_shift_write_backward);
  m.impl("wm_write_forward", &wmkernels::cpu::wm_write_forward);
  m.impl("wm_write_backward", &wmkernels::cpu::wm_write_backward);
  m.impl("wm_lstm_sequence_forward", &wmkernels::cpu::wm_lstm_sequence_forward);
  m.impl("wm_lstm_sequence_backward", &wmkernels::cpu::wm_lstm_sequence_backward);
}
