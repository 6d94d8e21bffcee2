// CPU forward and backward of wm_read, wm_shift_write and wm_write: one batch
// row per iteration of at::parallel_for, the row math of
// wmkernels/memory_math.h with the Vectorized loops of vec_row_ops.h.
#include "memory_ops.h"

#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <wmkernels/memory_math.h>

#include "lstm_rows.h"  // row_grain
#include "tensor_checks.h"
#include "vec_row_ops.h"

namespace wmkernels {
namespace cpu {
namespace {

// Memory M [B, S, D] with S, D >= 1 -> (B, S, D).
std::tuple<int64_t, int64_t, int64_t> memory_sizes(const at::Tensor& M, const char* op,
                                                   const char* name) {
  check_float_cpu(M, op, name, 3);
  const int64_t B = M.size(0), S = M.size(1), D = M.size(2);
  check_slots(op, S, D);
  return {B, S, D};
}

// The optional read mask: a strided bool CPU tensor [B, S], made contiguous
// (undefined when absent).
at::Tensor checked_mask(const std::optional<at::Tensor>& mask, const char* op, int64_t B,
                        int64_t S) {
  if (!mask.has_value() || !mask->defined()) return {};
  TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device().is_cpu() &&
                  mask->layout() == at::kStrided,
              "wmkernels::", op, ": mask must be a strided bool CPU tensor, got ",
              mask->scalar_type(), " on ", mask->device());
  TORCH_CHECK(mask->sizes().equals({B, S}), "wmkernels::", op, ": mask must have shape [", B,
              ", ", S, "], got ", mask->sizes());
  return mask->contiguous();
}

template <typename T>
DenseSlots<T> slots_of(const at::Tensor& t, int64_t b) {
  const int64_t S = t.size(1), D = t.size(2);
  return {const_cast<T*>(t.const_data_ptr<T>()) + b * S * D, D};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> wm_read_forward(const at::Tensor& M_in, const at::Tensor& q_in,
                                                   const std::optional<at::Tensor>& mask_in,
                                                   double scale) {
  const char* op = "wm_read_forward";
  auto [B, S, D] = memory_sizes(M_in, op, "M");
  check_like(q_in, M_in, op, "q", {B, D});
  const at::Tensor mask = checked_mask(mask_in, op, B, S);
  const at::Tensor M = M_in.contiguous(), q = q_in.contiguous();
  at::Tensor r = at::empty({B, D}, M.options());
  at::Tensor attn = at::empty({B, S}, M.options());
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "wmkernels_wm_read_forward", [&] {
    const scalar_t* q_p = q.const_data_ptr<scalar_t>();
    const bool* mask_p = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
    scalar_t* r_p = r.mutable_data_ptr<scalar_t>();
    scalar_t* attn_p = attn.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(2 * S * D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        read_row<scalar_t, VecRowOps>(slots_of<scalar_t>(M, b), q_p + b * D,
                                      mask_p ? mask_p + b * S : nullptr,
                                      static_cast<scalar_t>(scale), S, D, attn_p + b * S,
                                      r_p + b * D);
      }
    });
  });
  return {r, attn};
}

std::tuple<at::Tensor, at::Tensor> wm_read_backward(const at::Tensor& grad_r_in,
                                                    const at::Tensor& grad_attn_in,
                                                    const at::Tensor& M_in,
                                                    const at::Tensor& q_in,
                                                    const at::Tensor& attn_in, double scale,
                                                    const std::optional<at::Tensor>& mask_in) {
  const char* op = "wm_read_backward";
  auto [B, S, D] = memory_sizes(M_in, op, "M");
  check_like(grad_r_in, M_in, op, "grad_r", {B, D});
  check_like(grad_attn_in, M_in, op, "grad_attn", {B, S});
  check_like(q_in, M_in, op, "q", {B, D});
  check_like(attn_in, M_in, op, "attn", {B, S});
  const at::Tensor mask = checked_mask(mask_in, op, B, S);
  const at::Tensor grad_r = grad_r_in.contiguous(), grad_attn = grad_attn_in.contiguous();
  const at::Tensor M = M_in.contiguous(), q = q_in.contiguous(), attn = attn_in.contiguous();
  at::Tensor grad_M = at::zeros({B, S, D}, M.options());  // read_backward_row accumulates
  at::Tensor grad_q = at::empty({B, D}, M.options());
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "wmkernels_wm_read_backward", [&] {
    const scalar_t* gr = grad_r.const_data_ptr<scalar_t>();
    const scalar_t* ga = grad_attn.const_data_ptr<scalar_t>();
    const scalar_t* q_p = q.const_data_ptr<scalar_t>();
    const scalar_t* a_p = attn.const_data_ptr<scalar_t>();
    const bool* mask_p = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
    scalar_t* gq = grad_q.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(4 * S * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work(S);
      for (int64_t b = begin; b < end; ++b) {
        read_backward_row<scalar_t, VecRowOps>(
            gr + b * D, ga + b * S, a_p + b * S, slots_of<scalar_t>(M, b), q_p + b * D,
            mask_p ? mask_p + b * S : nullptr, static_cast<scalar_t>(scale), S, D,
            slots_of<scalar_t>(grad_M, b), gq + b * D, work.data());
      }
    });
  });
  return {grad_M, grad_q};
}

at::Tensor wm_shift_write_forward(const at::Tensor& M_in, const at::Tensor& v_in) {
  const char* op = "wm_shift_write_forward";
  auto [B, S, D] = memory_sizes(M_in, op, "M");
  check_like(v_in, M_in, op, "v", {B, D});
  const at::Tensor M = M_in.contiguous(), v = v_in.contiguous();
  at::Tensor out = at::empty({B, S, D}, M.options());
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "wmkernels_wm_shift_write_forward", [&] {
    const scalar_t* v_p = v.const_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(S * D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        shift_write_row<scalar_t>(slots_of<scalar_t>(M, b), v_p + b * D, S, D,
                                  slots_of<scalar_t>(out, b));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> wm_shift_write_backward(const at::Tensor& grad_in) {
  const char* op = "wm_shift_write_backward";
  auto [B, S, D] = memory_sizes(grad_in, op, "grad_new");
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_M = at::empty({B, S, D}, grad.options());
  at::Tensor grad_v = at::empty({B, D}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "wmkernels_wm_shift_write_backward", [&] {
    scalar_t* gv = grad_v.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(S * D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        shift_write_backward_row<scalar_t>(slots_of<scalar_t>(grad, b), S, D,
                                           slots_of<scalar_t>(grad_M, b), gv + b * D);
      }
    });
  });
  return {grad_M, grad_v};
}

at::Tensor wm_write_forward(const at::Tensor& M_in, const at::Tensor& w_in,
                            const at::Tensor& e_in, const at::Tensor& a_in) {
  const char* op = "wm_write_forward";
  auto [B, S, D] = memory_sizes(M_in, op, "M");
  check_like(w_in, M_in, op, "w", {B, S});
  check_like(e_in, M_in, op, "e", {B, D});
  check_like(a_in, M_in, op, "a", {B, D});
  const at::Tensor M = M_in.contiguous(), w = w_in.contiguous();
  const at::Tensor e = e_in.contiguous(), a = a_in.contiguous();
  at::Tensor out = at::empty({B, S, D}, M.options());
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "wmkernels_wm_write_forward", [&] {
    const scalar_t* w_p = w.const_data_ptr<scalar_t>();
    const scalar_t* e_p = e.const_data_ptr<scalar_t>();
    const scalar_t* a_p = a.const_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(S * D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        write_row<scalar_t>(slots_of<scalar_t>(M, b), w_p + b * S, e_p + b * D, a_p + b * D,
                            S, D, slots_of<scalar_t>(out, b));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wm_write_backward(
    const at::Tensor& grad_in, const at::Tensor& M_in, const at::Tensor& w_in,
    const at::Tensor& e_in, const at::Tensor& a_in) {
  const char* op = "wm_write_backward";
  auto [B, S, D] = memory_sizes(M_in, op, "M");
  check_like(grad_in, M_in, op, "grad_new", {B, S, D});
  check_like(w_in, M_in, op, "w", {B, S});
  check_like(e_in, M_in, op, "e", {B, D});
  check_like(a_in, M_in, op, "a", {B, D});
  const at::Tensor grad = grad_in.contiguous(), M = M_in.contiguous();
  const at::Tensor w = w_in.contiguous(), e = e_in.contiguous(), a = a_in.contiguous();
  at::Tensor grad_M = at::empty({B, S, D}, M.options());
  at::Tensor grad_w = at::empty({B, S}, M.options());
  at::Tensor grad_e = at::zeros({B, D}, M.options());  // write_backward_row accumulates
  at::Tensor grad_a = at::zeros({B, D}, M.options());
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "wmkernels_wm_write_backward", [&] {
    const scalar_t* w_p = w.const_data_ptr<scalar_t>();
    const scalar_t* e_p = e.const_data_ptr<scalar_t>();
    const scalar_t* a_p = a.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_w.mutable_data_ptr<scalar_t>();
    scalar_t* ge = grad_e.mutable_data_ptr<scalar_t>();
    scalar_t* ga = grad_a.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(4 * S * D), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        write_backward_row<scalar_t, VecRowOps>(
            slots_of<scalar_t>(grad, b), slots_of<scalar_t>(M, b), w_p + b * S, e_p + b * D,
            a_p + b * D, S, D, slots_of<scalar_t>(grad_M, b), gw + b * S, ge + b * D,
            ga + b * D);
      }
    });
  });
  return {grad_M, grad_w, grad_e, grad_a};
}

}  // namespace cpu
}  // namespace wmkernels

// The CPU implementations of these ops (their schemas: csrc/schema.cpp).
TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("wm_read_forward", &wmkernels::cpu::wm_read_forward);
  m.impl("wm_read_backward", &wmkernels::cpu::wm_read_backward);
  m.impl("wm_shift_write_forward", &wmkernels::cpu::wm_shift_write_forward);
  m.impl("wm_shift_write_backward", &wmkernels::cpu::wm_shift_write_backward);
  m.impl("wm_write_forward", &wmkernels::cpu::wm_write_forward);
  m.impl("wm_write_backward", &wmkernels::cpu::wm_write_backward);
}
