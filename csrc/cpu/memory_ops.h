// CPU kernels of the working-memory ops of contract §1.3 (torch-facing entry
// points). M [B, S, D]; every entry point TORCH_CHECKs its arguments and
// accepts non-contiguous inputs.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// M [B, S, D], q [B, D], mask [B, S] bool or none -> (r [B, D], attn [B, S]).
std::tuple<at::Tensor, at::Tensor> wm_read_forward(
    const at::Tensor& M, const at::Tensor& q, const std::optional<at::Tensor>& mask,
    double scale);

// grad_r [B, D], grad_attn [B, S], M, q, attn (forward's), the forward's mask
// [B, S] bool or none -> (grad_M, grad_q).
std::tuple<at::Tensor, at::Tensor> wm_read_backward(
    const at::Tensor& grad_r, const at::Tensor& grad_attn, const at::Tensor& M,
    const at::Tensor& q, const at::Tensor& attn, double scale,
    const std::optional<at::Tensor>& mask);

// M [B, S, D], v [B, D] -> M_new [B, S, D].
at::Tensor wm_shift_write_forward(const at::Tensor& M, const at::Tensor& v);

// grad_new [B, S, D] -> (grad_M [B, S, D], grad_v [B, D]).
std::tuple<at::Tensor, at::Tensor> wm_shift_write_backward(const at::Tensor& grad_new);

// M [B, S, D], w [B, S], e [B, D], a [B, D] -> M ⊙ (1 − w eᵀ) + w aᵀ.
at::Tensor wm_write_forward(const at::Tensor& M, const at::Tensor& w,
                            const at::Tensor& e, const at::Tensor& a);

// grad_new [B, S, D] and the forward's inputs -> (grad_M, grad_w, grad_e, grad_a).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wm_write_backward(
    const at::Tensor& grad_new, const at::Tensor& M, const at::Tensor& w,
    const at::Tensor& e, const at::Tensor& a);

}  // namespace cpu
}  // namespace wmkernels
