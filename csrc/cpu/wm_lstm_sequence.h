// CPU kernels of wm_lstm_sequence (contract §1.4): the whole time loop in C++.
//
// Sizes: T steps, B batch, I input, H hidden, S slots, D slot width;
// E = D (fifo) or 2D (gated). Kept between forward and backward, besides
// the inputs and the output y (whose h_t and r_t the backward reads back):
//   c_all [T+1, B, H]          cell states (index 0 = c0; frozen rows carried)
//   act [T, B, 4H]             activated gates i, f, g, o
//   attn [T, B, S]             read weights
//   q_all [T, B, D]            queries
//   v_all [T, B, D]            written vectors (fifo: the memory itself, as a
//                              ring over M0 and v; never an M_t per step)
//   e_all [T, B, D]            gated: erase vectors; fifo: empty
//   ckpt [ceil(T/K)-1, B, S, D] gated: M after K, 2K, ... steps; fifo: empty
#pragma once

#include <optional>
#include <string>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// -> (y [T, B, H+D], h_n, c_n [B, H], M_n [B, S, D],
//     c_all, act, attn, q_all, v_all, e_all, ckpt) as above.
// K: gated checkpoint interval (>= 1; ignored by fifo). lengths: int64 [B]
// in [0, T] or none. capacity: int64 [T, B] in [1, S] (the active slots of
// each row and step: fifo the last, gated the first) or none (all S).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor, at::Tensor>
wm_lstm_sequence_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& M0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const at::Tensor& w_rh, const at::Tensor& b, const at::Tensor& w_q,
                         const at::Tensor& b_q, const at::Tensor& w_v, const at::Tensor& b_v,
                         const std::optional<at::Tensor>& w_e,
                         const std::optional<at::Tensor>& b_e,
                         const std::optional<at::Tensor>& lengths,
                         const std::optional<at::Tensor>& capacity,
                         const std::string& write_mode, int64_t K);

// Gradients of (y, h_n, c_n, M_n), the inputs it needs, the forward's y and
// saved tensors ->
// (dx, dh0, dc0, dM0, dw_ih, dw_hh, dw_rh, db, dw_q, db_q, dw_v, db_v, dw_e, db_e);
// dw_e and db_e are empty in fifo mode.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
wm_lstm_sequence_backward(const at::Tensor& grad_y, const at::Tensor& grad_h,
                          const at::Tensor& grad_c, const at::Tensor& grad_M,
                          const at::Tensor& x, const at::Tensor& M0, const at::Tensor& w_ih,
                          const at::Tensor& w_hh, const at::Tensor& w_rh, const at::Tensor& w_q,
                          const at::Tensor& w_v, const std::optional<at::Tensor>& w_e,
                          const std::optional<at::Tensor>& lengths,
                          const std::optional<at::Tensor>& capacity, const at::Tensor& h0,
                          const at::Tensor& y, const at::Tensor& c_all, const at::Tensor& act,
                          const at::Tensor& attn,
                          const at::Tensor& q_all, const at::Tensor& v_all,
                          const at::Tensor& e_all, const at::Tensor& ckpt,
                          const std::string& write_mode, int64_t K);

}  // namespace cpu
}  // namespace wmkernels
