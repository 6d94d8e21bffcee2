// CPU forward and backward of lstm_sequence with the time loop in C++.
//
// Forward: the input projection of all steps is one GEMM (biases folded in)
// into act [T·B, 4H]; per step, act[t] += h_{t-1} w_hhᵀ (one GEMM in place),
// then the vectorized pointwise step (lstm_rows.h) turns act[t] into the
// activated gates in place and writes c_t and h_t = y[t]. Saved for backward:
// act and cs (T·B·5H); h_{t-1} is y[t-1] (or h0), an output anyway.
//
// Backward walks time in reverse: the pointwise backward gives d_gates[t]
// [B, 4H], then grad_h_{t-1} = d_gates[t] w_hh (one GEMM per step). The weight
// gradients are a few large GEMMs over all steps at the end:
// grad_w_ih = d_gatesᵀ x, grad_w_hh = d_gates[0]ᵀ h0 + d_gates[1:]ᵀ y[:-1],
// grad_b = Σ d_gates, grad_x = d_gates w_ih.
//
// lengths: a row at step t >= its length is frozen: its h and c carry over,
// y is 0, and in the backward its d_gates row is 0 and the gradients of h and
// c pass straight through to the step before.
#include "lstm_sequence.h"

#include <cstring>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "tensor_checks.h"
#include "lstm_rows.h"

namespace wmkernels {
namespace cpu {
namespace {

constexpr const char* kFwd = "lstm_sequence_forward";
constexpr const char* kBwd = "lstm_sequence_backward";

struct Sizes {
  int64_t T, B, I, H;
};

// x, h0, c0, w_ih, w_hh: defined float CPU tensors of one dtype and matching
// shapes -> the sizes.
Sizes check_inputs(const char* op, const at::Tensor& x, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh) {
  check_float_cpu(x, op, "x", 3);
  check_float_cpu(h0, op, "h0", 2);
  const Sizes s{x.size(0), x.size(1), x.size(2), h0.size(1)};
  check_like(h0, x, op, "h0", {s.B, s.H});
  check_like(c0, x, op, "c0", {s.B, s.H});
  check_like(w_ih, x, op, "w_ih", {4 * s.H, s.I});
  check_like(w_hh, x, op, "w_hh", {4 * s.H, s.H});
  return s;
}

// lengths: int64 CPU [B] with values in [0, T]; returns it contiguous (or
// undefined for None).
at::Tensor checked_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                           const Sizes& s) {
  if (!lengths.has_value() || !lengths->defined()) return {};
  const at::Tensor& l = *lengths;
  TORCH_CHECK(l.device().is_cpu() && l.layout() == at::kStrided, "wmkernels::", op,
              ": lengths must be a dense CPU tensor, got ", l.device(), " ", l.layout());
  TORCH_CHECK(l.scalar_type() == at::kLong, "wmkernels::", op,
              ": lengths must be int64, got ", l.scalar_type());
  TORCH_CHECK(l.dim() == 1 && l.size(0) == s.B, "wmkernels::", op,
              ": lengths must have shape [", s.B, "], got ", l.sizes());
  at::Tensor out = l.contiguous();
  const int64_t* p = out.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= s.T, "wmkernels::", op, ": lengths[", b, "] = ", p[b],
                " is outside [0, T = ", s.T, "]");
  }
  return out;
}

// One forward step of the pointwise work on rows [begin, end).
// act_t [B, 4H]: pre-activations in, activated gates out (in place).
template <typename T>
void forward_rows(const LstmRowKernels<T>& k, T* act_t, const T* c_prev, T* c_t, T* y_t,
                  T* h_state, const int64_t* lengths, int64_t t, int64_t H, int64_t begin,
                  int64_t end) {
  for (int64_t b = begin; b < end; ++b) {
    T* y_row = y_t + b * H;
    if (lengths == nullptr || t < lengths[b]) {
      k.forward(act_t + b * 4 * H, c_prev + b * H, act_t + b * 4 * H, c_t + b * H, y_row, H);
      if (h_state != nullptr) std::memcpy(h_state + b * H, y_row, H * sizeof(T));
    } else {
      std::memcpy(c_t + b * H, c_prev + b * H, H * sizeof(T));
      std::memset(y_row, 0, H * sizeof(T));
    }
  }
}

// One backward step on rows [begin, end): grad_h (in: the gradient of h_t
// from later steps; out: 0 for rows that ran, unchanged for frozen ones, so
// that adding d_gates[t] w_hh gives the gradient of h_{t-1}), grad_c (in:
// gradient of c_t, out: of c_{t-1}), d_gates_t out.
template <typename T>
void backward_rows(const LstmRowKernels<T>& k, const T* act_t, const T* c_prev, const T* c_t,
                   const T* grad_y_t, T* grad_h, T* grad_c, T* d_gates_t,
                   const int64_t* lengths, int64_t t, int64_t H, int64_t begin, int64_t end) {
  for (int64_t b = begin; b < end; ++b) {
    T* gh = grad_h + b * H;
    if (lengths == nullptr || t < lengths[b]) {
      const T* gy = grad_y_t + b * H;
      for (int64_t j = 0; j < H; ++j) gh[j] += gy[j];
      T* gc = grad_c + b * H;
      k.backward(act_t + b * 4 * H, c_prev + b * H, c_t + b * H, gh, gc, d_gates_t + b * 4 * H,
                 gc, H);
      std::memset(gh, 0, H * sizeof(T));
    } else {
      std::memset(d_gates_t + b * 4 * H, 0, 4 * H * sizeof(T));
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_forward(const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in,
                      const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                      const std::optional<at::Tensor>& b_ih,
                      const std::optional<at::Tensor>& b_hh,
                      const std::optional<at::Tensor>& lengths_in) {
  const Sizes s = check_inputs(kFwd, x_in, h0_in, c0_in, w_ih_in, w_hh_in);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  at::Tensor bias;  // b_ih + b_hh, folded into the input projection
  for (const auto* b : {&b_ih, &b_hh}) {
    if (b->has_value() && (*b)->defined()) {
      check_like(**b, x_in, kFwd, b == &b_ih ? "b_ih" : "b_hh", {4 * H});
      bias = bias.defined() ? at::add(bias, **b) : **b;
    }
  }
  const at::Tensor lengths = checked_lengths(kFwd, lengths_in, s);

  const at::Tensor x = x_in.contiguous();
  const at::Tensor h0 = h0_in.contiguous();
  const at::Tensor c0 = c0_in.contiguous();
  // w_hhᵀ as a contiguous [H, 4H] copy: MKL's small-M GEMM of the recurrent
  // step measured ~1.5x slower reading the transposed view (1 thread).
  const at::Tensor w_hh_t = w_hh_in.t().contiguous();
  const auto opts = x.options();
  at::Tensor act = at::empty({T, B, 4 * H}, opts);
  at::Tensor cs = at::empty({T, B, H}, opts);
  at::Tensor y = at::empty({T, B, H}, opts);
  if (T == 0 || B == 0) {
    return {y, h0.clone(), c0.clone(), act, cs};
  }
  at::Tensor act2 = act.view({T * B, 4 * H});
  if (bias.defined()) {
    at::addmm_out(act2, bias, x.view({T * B, I}), w_ih_in.t());
  } else {
    at::mm_out(act2, x.view({T * B, I}), w_ih_in.t());
  }
  // With lengths, h (the state) differs from y (0 past the length) and
  // needs its own buffer; without, h_t is y[t].
  at::Tensor h_state = lengths.defined() ? h0.clone() : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wmkernels_lstm_sequence_forward", [&] {
    const LstmRowKernels<scalar_t>& k = lstm_row_kernels<scalar_t>();
    const int64_t* len_p = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    scalar_t* h_state_p = h_state.defined() ? h_state.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* act_p = act.mutable_data_ptr<scalar_t>();
    scalar_t* cs_p = cs.mutable_data_ptr<scalar_t>();
    scalar_t* y_p = y.mutable_data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.const_data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      at::Tensor act_t = act[t];
      // at::cpu:: skips the dispatcher: these are CPU tensors by the checks.
      at::cpu::addmm_(act_t, h_state.defined() ? h_state : (t == 0 ? h0 : y[t - 1]), w_hh_t);
      scalar_t* act_tp = act_p + t * B * 4 * H;
      const scalar_t* c_prev_p = t == 0 ? c0_p : cs_p + (t - 1) * B * H;
      scalar_t* c_p = cs_p + t * B * H;
      scalar_t* y_tp = y_p + t * B * H;
      at::parallel_for(0, B, row_grain(4 * H), [&](int64_t begin, int64_t end) {
        forward_rows<scalar_t>(k, act_tp, c_prev_p, c_p, y_tp, h_state_p, len_p, t, H, begin,
                               end);
      });
    }
  });
  at::Tensor h_n = h_state.defined() ? h_state : y[T - 1].clone();
  return {y, h_n, cs[T - 1].clone(), act, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_backward(const at::Tensor& grad_y_in, const at::Tensor& grad_h_n,
                       const at::Tensor& grad_c_n, const at::Tensor& x_in,
                       const at::Tensor& h0_in, const at::Tensor& c0_in,
                       const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                       const at::Tensor& act_in, const at::Tensor& cs_in, const at::Tensor& y_in,
                       const std::optional<at::Tensor>& lengths_in) {
  const Sizes s = check_inputs(kBwd, x_in, h0_in, c0_in, w_ih_in, w_hh_in);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  const struct {
    const at::Tensor& t;
    const char* name;
    int64_t width;
  } per_step[] = {{grad_y_in, "grad_y", H}, {act_in, "act", 4 * H}, {cs_in, "cs", H},
                  {y_in, "y", H}};
  for (const auto& a : per_step) check_like(a.t, x_in, kBwd, a.name, {T, B, a.width});
  check_like(grad_h_n, x_in, kBwd, "grad_h_n", {B, H});
  check_like(grad_c_n, x_in, kBwd, "grad_c_n", {B, H});
  const at::Tensor lengths = checked_lengths(kBwd, lengths_in, s);

  const auto opts = x_in.options();
  // The running gradients of h and c, updated in place step by step.
  at::Tensor grad_h = grad_h_n.clone(at::MemoryFormat::Contiguous);
  at::Tensor grad_c = grad_c_n.clone(at::MemoryFormat::Contiguous);
  if (T == 0 || B == 0) {
    return {at::zeros({T, B, I}, opts), grad_h, grad_c, at::zeros({4 * H, I}, opts),
            at::zeros({4 * H, H}, opts), at::zeros({4 * H}, opts)};
  }
  const at::Tensor grad_y = grad_y_in.contiguous();
  const at::Tensor act = act_in.contiguous();
  const at::Tensor cs = cs_in.contiguous();
  const at::Tensor c0 = c0_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();
  at::Tensor d_gates = at::empty({T, B, 4 * H}, opts);

  AT_DISPATCH_FLOATING_TYPES(x_in.scalar_type(), "wmkernels_lstm_sequence_backward", [&] {
    const LstmRowKernels<scalar_t>& k = lstm_row_kernels<scalar_t>();
    const int64_t* len_p = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    scalar_t* gh_p = grad_h.mutable_data_ptr<scalar_t>();
    scalar_t* gc_p = grad_c.mutable_data_ptr<scalar_t>();
    const scalar_t* act_p = act.const_data_ptr<scalar_t>();
    const scalar_t* cs_p = cs.const_data_ptr<scalar_t>();
    const scalar_t* gy_p = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.const_data_ptr<scalar_t>();
    scalar_t* dg_p = d_gates.mutable_data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* act_tp = act_p + t * B * 4 * H;
      const scalar_t* c_prev_p = t == 0 ? c0_p : cs_p + (t - 1) * B * H;
      const scalar_t* c_p = cs_p + t * B * H;
      const scalar_t* gy_tp = gy_p + t * B * H;
      scalar_t* dg_tp = dg_p + t * B * 4 * H;
      at::parallel_for(0, B, row_grain(8 * H), [&](int64_t begin, int64_t end) {
        backward_rows<scalar_t>(k, act_tp, c_prev_p, c_p, gy_tp, gh_p, gc_p, dg_tp, len_p, t, H,
                                begin, end);
      });
      at::cpu::addmm_(grad_h, d_gates[t], w_hh);
    }
  });

  const at::Tensor d_gates2 = d_gates.view({T * B, 4 * H});
  const at::Tensor x2 = x_in.contiguous().view({T * B, I});
  at::Tensor grad_x = at::mm(d_gates2, w_ih_in).view({T, B, I});
  at::Tensor grad_w_ih = at::mm(d_gates2.t(), x2);
  at::Tensor grad_w_hh = at::mm(d_gates[0].t(), h0_in);
  if (T > 1) {
    const at::Tensor y_prev = y_in.narrow(0, 0, T - 1).contiguous().view({(T - 1) * B, H});
    grad_w_hh.addmm_(d_gates.narrow(0, 1, T - 1).view({(T - 1) * B, 4 * H}).t(), y_prev);
  }
  at::Tensor grad_b = d_gates2.sum(0);
  return {grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b};
}

}  // namespace cpu
}  // namespace wmkernels

// The CPU implementations of these ops (their schemas: csrc/schema.cpp).
TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_sequence_forward", &wmkernels::cpu::lstm_sequence_forward);
  m.impl("lstm_sequence_backward", &wmkernels::cpu::lstm_sequence_backward);
}
