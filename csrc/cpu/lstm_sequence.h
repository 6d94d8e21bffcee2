// CPU kernels of the lstm_sequence op: one direction of one LSTM layer with
// the whole time loop in C++ (torch-facing entry points).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// x [T, B, I], h0/c0 [B, H], w_ih [4H, I], w_hh [4H, H], b_ih/b_hh [4H] or
// None, lengths int64 [B] in [0, T] or None
//   -> (y [T, B, H], h_n [B, H], c_n [B, H],
//       act [T, B, 4H] activated gates i, f, g, o per step, cs [T, B, H] the
//       cell state after each step). act and cs are what the backward needs
//   besides the inputs and y (T·B·5H values). Rows past their length keep h
//   and c (cs repeats the carried c; act holds no meaning there) and output 0.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const std::optional<at::Tensor>& b_ih,
                      const std::optional<at::Tensor>& b_hh,
                      const std::optional<at::Tensor>& lengths);

// The same forward where nothing wants a gradient: saves nothing (the gates
// never go to memory) -> (y, h_n, c_n).
std::tuple<at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_inference(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                        const std::optional<at::Tensor>& b_ih,
                        const std::optional<at::Tensor>& b_hh,
                        const std::optional<at::Tensor>& lengths);

// Gradients of (y, h_n, c_n) and what the forward saved
//   -> (grad_x [T, B, I], grad_h0 [B, H], grad_c0 [B, H], grad_w_ih [4H, I],
//       grad_w_hh [4H, H], grad_b [4H]); grad_b is the gradient of b_ih and of
//       b_hh alike.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_backward(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                       const at::Tensor& grad_c_n, const at::Tensor& x,
                       const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const at::Tensor& act, const at::Tensor& cs,
                       const at::Tensor& y, const std::optional<at::Tensor>& lengths);

}  // namespace cpu
}  // namespace wmkernels
