// CPU forward and backward of lstm_cell: the vectorized row kernels of
// lstm_rows.h (the math of wmkernels/lstm_math.h) over the batch rows.
#include "lstm_cell.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "tensor_checks.h"
#include "lstm_rows.h"

namespace wmkernels {
namespace cpu {
namespace {
constexpr const char* kOp = "lstm_cell";
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& gates_in, const at::Tensor& c_prev_in) {
  check_float_cpu(c_prev_in, kOp, "c_prev", 2);
  const int64_t B = c_prev_in.size(0);
  const int64_t H = c_prev_in.size(1);
  check_like(gates_in, c_prev_in, kOp, "gates", {B, 4 * H});

  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  at::Tensor h = at::empty({B, H}, c_prev.options());
  at::Tensor c = at::empty({B, H}, c_prev.options());
  at::Tensor act = at::empty({B, 4 * H}, gates.options());
  if (B == 0 || H == 0) {
    return {h, c, act};
  }

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "wmkernels_lstm_cell_forward", [&] {
    const scalar_t* gates_p = gates.const_data_ptr<scalar_t>();
    const scalar_t* c_prev_p = c_prev.const_data_ptr<scalar_t>();
    scalar_t* h_p = h.mutable_data_ptr<scalar_t>();
    scalar_t* c_p = c.mutable_data_ptr<scalar_t>();
    scalar_t* act_p = act.mutable_data_ptr<scalar_t>();
    const auto forward_row = lstm_row_kernels<scalar_t>().forward;
    at::parallel_for(0, B, row_grain(4 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        forward_row(gates_p + b * 4 * H, c_prev_p + b * H, act_p + b * 4 * H,
                    c_p + b * H, h_p + b * H, H);
      }
    });
  });
  return {h, c, act};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in,
    const at::Tensor& act_in, const at::Tensor& c_prev_in,
    const at::Tensor& c_in) {
  check_float_cpu(c_prev_in, kOp, "c_prev", 2);
  const int64_t B = c_prev_in.size(0);
  const int64_t H = c_prev_in.size(1);
  check_like(act_in, c_prev_in, kOp, "act", {B, 4 * H});
  check_like(grad_h_in, c_prev_in, kOp, "grad_h", {B, H});
  check_like(grad_c_in, c_prev_in, kOp, "grad_c", {B, H});
  check_like(c_in, c_prev_in, kOp, "c", {B, H});

  const at::Tensor grad_h = grad_h_in.contiguous();
  const at::Tensor grad_c = grad_c_in.contiguous();
  const at::Tensor act = act_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  at::Tensor grad_gates = at::empty({B, 4 * H}, act.options());
  at::Tensor grad_c_prev = at::empty({B, H}, c_prev.options());
  if (B == 0 || H == 0) {
    return {grad_gates, grad_c_prev};
  }

  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "wmkernels_lstm_cell_backward", [&] {
    const scalar_t* grad_h_p = grad_h.const_data_ptr<scalar_t>();
    const scalar_t* grad_c_p = grad_c.const_data_ptr<scalar_t>();
    const scalar_t* act_p = act.const_data_ptr<scalar_t>();
    const scalar_t* c_prev_p = c_prev.const_data_ptr<scalar_t>();
    const scalar_t* c_p = c.const_data_ptr<scalar_t>();
    scalar_t* grad_gates_p = grad_gates.mutable_data_ptr<scalar_t>();
    scalar_t* grad_c_prev_p = grad_c_prev.mutable_data_ptr<scalar_t>();
    const auto backward_row = lstm_row_kernels<scalar_t>().backward;
    at::parallel_for(0, B, row_grain(8 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        backward_row(act_p + b * 4 * H, c_prev_p + b * H, c_p + b * H,
                     grad_h_p + b * H, grad_c_p + b * H, grad_gates_p + b * 4 * H,
                     grad_c_prev_p + b * H, H);
      }
    });
  });
  return {grad_gates, grad_c_prev};
}

}  // namespace cpu
}  // namespace wmkernels

// The CPU implementations of these ops (their schemas: csrc/schema.cpp).
TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_cell_forward", &wmkernels::cpu::lstm_cell_forward);
  m.impl("lstm_cell_backward", &wmkernels::cpu::lstm_cell_backward);
}
