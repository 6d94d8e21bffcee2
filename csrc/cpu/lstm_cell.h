// CPU kernels of the lstm_cell op (torch-facing entry points).
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// gates [B, 4H] (pre-activations, order i, f, g, o), c_prev [B, H]
//   -> (h [B, H], c [B, H], act [B, 4H] = activated gates i, f, g, o).
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& gates, const at::Tensor& c_prev);

// grad_h, grad_c [B, H], act [B, 4H], c_prev [B, H], c [B, H]
//   -> (grad_gates [B, 4H], grad_c_prev [B, H]).
std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& act,
    const at::Tensor& c_prev, const at::Tensor& c);

}  // namespace cpu
}  // namespace wmkernels
