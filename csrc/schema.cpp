// The schemas of every torch.ops.wmkernels.* operator, in one place: the C++
// signature of each op of the table of ops (wmkernels/contract.py, contract
// §1). Argument order: a forward takes the op's inputs, then its extras; a
// backward takes the gradients of the outputs, then what forward saved, then
// the extras. Each kernel registers its CPU implementation beside its code
// (TORCH_LIBRARY_IMPL at the end of csrc/cpu/<op>.cpp); the fake (meta)
// kernels are registered in Python (wmkernels/<family>/cpu.py). No Python
// here, so the CMake build (C++ tests) links it as is; the Python module init
// that loads this library lives in python_module.cpp.
#include <string>

#include <torch/library.h>

#include "cpu/lstm_rows.h"
#include "cpu/persistent_lstm.h"

TORCH_LIBRARY(wmkernels, m) {
  // lstm_cell (contract §1.1) -> (h, c, act); act is saved for the backward.
  m.def(
      "lstm_cell_forward(Tensor gates, Tensor c_prev) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor act, "
      "Tensor c_prev, Tensor c) -> (Tensor, Tensor)");
  // lstm_sequence (contract §1.2) -> (y, h_n, c_n, act, cs); act and cs are
  // saved for the backward.
  m.def(
      "lstm_sequence_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? lengths) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // lstm_sequence_forward without anything saved for a backward (no input
  // wants a gradient) -> (y, h_n, c_n).
  m.def(
      "lstm_sequence_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor)");
  // -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b)
  m.def(
      "lstm_sequence_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor act, Tensor cs, Tensor y, "
      "Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The memory ops (contract §1.3).
  m.def("wm_read_forward(Tensor M, Tensor q, Tensor? mask, float scale) -> (Tensor, Tensor)");
  m.def(
      "wm_read_backward(Tensor grad_r, Tensor grad_attn, Tensor M, Tensor q, Tensor attn, "
      "float scale, Tensor? mask=None) -> (Tensor, Tensor)");
  m.def("wm_shift_write_forward(Tensor M, Tensor v) -> Tensor");
  m.def("wm_shift_write_backward(Tensor grad_new) -> (Tensor, Tensor)");
  m.def("wm_write_forward(Tensor M, Tensor w, Tensor e, Tensor a) -> Tensor");
  m.def(
      "wm_write_backward(Tensor grad_new, Tensor M, Tensor w, Tensor e, Tensor a) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // wm_lstm_sequence (contract §1.4) -> (y, h_n, c_n, M_n, then what the
  // backward reads: c_all, act, attn, q_all, v_all, e_all, ckpt; see
  // csrc/cpu/wm_lstm_sequence.h); a memory checkpoint every K steps (gated).
  m.def(
      "wm_lstm_sequence_forward(Tensor x, Tensor h0, Tensor c0, Tensor M0, Tensor w_ih, "
      "Tensor w_hh, Tensor w_rh, Tensor b, Tensor w_q, Tensor b_q, Tensor w_v, Tensor b_v, "
      "Tensor? w_e, Tensor? b_e, Tensor? lengths, Tensor? capacity, str write_mode, int K) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "wm_lstm_sequence_backward(Tensor grad_y, Tensor grad_h, Tensor grad_c, Tensor grad_M, "
      "Tensor x, Tensor M0, Tensor w_ih, Tensor w_hh, Tensor w_rh, Tensor w_q, Tensor w_v, "
      "Tensor? w_e, Tensor? lengths, Tensor? capacity, Tensor h0, Tensor y, Tensor c_all, Tensor act, "
      "Tensor attn, Tensor q_all, Tensor v_all, Tensor e_all, Tensor ckpt, str write_mode, "
      "int K) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The instruction set of the vectorized CPU kernels in use: "avx512",
  // "avx2" or "default" (see csrc/cpu/lstm_rows.h).
  m.def("cpu_capability() -> str",
        [] { return std::string(wmkernels::cpu::cpu_capability()); });
  // Threads the last persistent CPU loop ran on (tests).
  m.def("cpu_last_team_size() -> int",
        [] { return static_cast<int64_t>(wmkernels::cpu::persistent_last_team_size()); });
}
