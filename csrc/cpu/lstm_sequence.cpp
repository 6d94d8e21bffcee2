// CPU forward and backward of lstm_sequence with the time loop in C++: the
// entry points check their arguments and run the loops of persistent_lstm.h
// (one thread team for the whole sequence, each thread owning a slice of the
// hidden units with its slice of the weights packed once per call).
//
// Forward: the input projection of all steps (biases folded in) into act
// [T·B, 4H], then per step the recurrent product and the pointwise cell step
// fused per tile; act is turned into the activated gates in place and c_t is
// written to cs[t]. Saved for backward: act and cs (T·B·5H); h_{t-1} is
// y[t-1] (or h0), an output anyway. The inference entry point saves nothing.
//
// Backward walks time in reverse: per step grad_h = d_gates[t+1] w_hh fused
// with the pointwise backward giving d_gates[t] [B, 4H]. The weight
// gradients are a few large GEMMs over all steps at the end:
// grad_w_ih = d_gatesᵀ x, grad_w_hh = d_gates[0]ᵀ h0 + d_gates[1:]ᵀ y[:-1],
// grad_b = Σ d_gates, grad_x = d_gates w_ih.
//
// bfloat16 (x, states and weights in bf16): the forward runs the bf16 kernels
// of lstm_tiles_bf16.h (avx512_bf16 only), saving act and cs in float32; the
// backward computes in float32 (the inputs and y converted, the same loops
// as float32) and returns the gradients in bfloat16.
//
// lengths: a row at step t >= its length is frozen: its h and c carry over,
// y is 0, and in the backward its d_gates row is 0 and the gradients of h and
// c pass straight through to the step before.
#include "lstm_sequence.h"

#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "lstm_rows.h"
#include "lstm_tiles_bf16.h"
#include "padding.h"
#include "persistent_lstm.h"
#include "tensor_checks.h"
#include "tile_mm.h"

namespace wmkernels {
namespace cpu {
namespace {

constexpr const char* kFwd = "lstm_sequence_forward";
constexpr const char* kBwd = "lstm_sequence_backward";
constexpr const char* kInfer = "lstm_sequence_inference";

struct Sizes {
  int64_t T, B, I, H;
};

// x, h0, c0, w_ih, w_hh: defined float CPU tensors of one dtype and matching
// shapes -> the sizes.
Sizes check_inputs(const char* op, const at::Tensor& x, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh) {
  check_float_cpu(x, op, "x", 3, /*bf16=*/true);
  check_float_cpu(h0, op, "h0", 2, /*bf16=*/true);
  const Sizes s{x.size(0), x.size(1), x.size(2), h0.size(1)};
  check_like(h0, x, op, "h0", {s.B, s.H}, true);
  check_like(c0, x, op, "c0", {s.B, s.H}, true);
  check_like(w_ih, x, op, "w_ih", {4 * s.H, s.I}, true);
  check_like(w_hh, x, op, "w_hh", {4 * s.H, s.H}, true);
  TORCH_CHECK(x.scalar_type() != at::kBFloat16 || lstm_bf16_kernels() != nullptr, "wmkernels::", op,
              " (CPU): bfloat16 needs the avx512_bf16 instruction set; this CPU (or "
              "WMKERNELS_CPU_CAPABILITY) gives ", cpu_capability());
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

}  // namespace

namespace {

// The checks, the bias fold (b_ih + b_hh, into the input projection) and the
// persistent loop; save: return act and cs for the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
forward(const char* op, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
        const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
        const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& lengths_in,
        bool save) {
  const Sizes s = check_inputs(op, x, h0, c0, w_ih, w_hh);
  // bfloat16: the biases are summed in float32, the input projection adds them so.
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  at::Tensor bias;
  for (const auto* b : {&b_ih, &b_hh}) {
    if (b->has_value() && (*b)->defined()) {
      check_like(**b, x, op, b == &b_ih ? "b_ih" : "b_hh", {4 * s.H}, true);
      const at::Tensor term = bf16 ? (*b)->to(at::kFloat) : **b;
      bias = bias.defined() ? at::add(bias, term) : term;
    }
  }
  const at::Tensor lengths = checked_lengths(op, lengths_in, s);
  return persistent_lstm_forward(x.contiguous(), h0.contiguous(), c0.contiguous(),
                                 w_ih.contiguous(), w_hh.contiguous(),
                                 bias.defined() ? bias.contiguous() : bias, lengths, save);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const std::optional<at::Tensor>& b_ih,
                      const std::optional<at::Tensor>& b_hh,
                      const std::optional<at::Tensor>& lengths) {
  return forward(kFwd, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, /*save=*/true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor>
lstm_sequence_inference(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                        const std::optional<at::Tensor>& b_ih,
                        const std::optional<at::Tensor>& b_hh,
                        const std::optional<at::Tensor>& lengths) {
  auto [y, h_n, c_n, act, cs] =
      forward(kInfer, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, /*save=*/false);
  return {y, h_n, c_n};
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
  check_like(grad_y_in, x_in, kBwd, "grad_y", {T, B, H}, true);
  check_like(y_in, x_in, kBwd, "y", {T, B, H}, true);
  check_like(grad_h_n, x_in, kBwd, "grad_h_n", {B, H}, true);
  check_like(grad_c_n, x_in, kBwd, "grad_c_n", {B, H}, true);
  // act and cs: the forward's dtype, float32 for bfloat16.
  const bool bf16 = x_in.scalar_type() == at::kBFloat16;
  const at::Tensor& saved_like = bf16 ? act_in : x_in;
  TORCH_CHECK(!bf16 || (act_in.defined() && act_in.scalar_type() == at::kFloat), "wmkernels::",
              kBwd, ": act of a bfloat16 forward must be float32, got ",
              act_in.defined() ? toString(act_in.scalar_type()) : "undefined");
  check_like(act_in, saved_like, kBwd, "act", {T, B, 4 * H});
  check_like(cs_in, saved_like, kBwd, "cs", {T, B, H});
  const at::Tensor lengths = checked_lengths(kBwd, lengths_in, s);
  if (bf16) {
    // In float32 from the bf16 values the forward used, then rounded to bf16.
    const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    auto grads = lstm_sequence_backward(f(grad_y_in), f(grad_h_n), f(grad_c_n), f(x_in),
                                        f(h0_in), f(c0_in), f(w_ih_in), f(w_hh_in), act_in,
                                        cs_in, f(y_in), lengths_in);
    const auto b = [](const at::Tensor& t) { return t.to(at::kBFloat16); };
    return {b(std::get<0>(grads)), b(std::get<1>(grads)), b(std::get<2>(grads)),
            b(std::get<3>(grads)), b(std::get<4>(grads)), b(std::get<5>(grads))};
  }

  if (T == 0 || B == 0) {
    const auto opts = x_in.options();
    return {at::zeros({T, B, I}, opts), grad_h_n.clone(at::MemoryFormat::Contiguous),
            grad_c_n.clone(at::MemoryFormat::Contiguous), at::zeros({4 * H, I}, opts),
            at::zeros({4 * H, H}, opts), at::zeros({4 * H}, opts)};
  }
  auto [d_gates, grad_h, grad_c] = persistent_lstm_backward(
      grad_y_in.contiguous(), grad_h_n.contiguous(), grad_c_n.contiguous(), c0_in.contiguous(),
      w_hh_in.contiguous(), act_in.contiguous(), cs_in.contiguous(), lengths);
  // The weight gradients as GEMMs over all steps (tile_mm: the same bits for
  // any thread count), d_gates read transposed in place (a contiguous copy of
  // it made training at T=256 B=16 H=256, 2 threads, 0.84x -> 1.05x torch's).
  const at::Tensor d_gates2 = d_gates.view({T * B, 4 * H});
  // Padding past a row's length meets no product (padding.h): x there and
  // the state h_{t-1} a step past the length would read are zeroed by
  // selection (a row's last h may be NaN, and its frozen steps' zero rows of
  // d_gates would make NaN of it), and so is grad_x there (its zero rows of
  // d_gates times a NaN in w_ih would be NaN).
  const at::Tensor x2 = zero_past_lengths(x_in.contiguous(), lengths).view({T * B, I});
  const at::Tensor h_prev =
      zero_past_lengths(at::cat({h0_in.contiguous().unsqueeze(0), y_in.narrow(0, 0, T - 1)}), lengths)
          .contiguous()
          .view({T * B, H});
  at::Tensor grad_x =
      zero_past_lengths(tile_mm(d_gates2, w_ih_in.contiguous()).view({T, B, I}), lengths);
  const at::Tensor d_gates2_t = d_gates2.t();
  at::Tensor grad_w_ih = tile_mm(d_gates2_t, x2);
  at::Tensor grad_w_hh = tile_mm(d_gates2_t, h_prev);
  at::Tensor grad_b = column_sum(d_gates2);
  return {grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b};
}

}  // namespace cpu
}  // namespace wmkernels

// The CPU implementations of these ops (their schemas: csrc/schema.cpp).
TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_sequence_forward", &wmkernels::cpu::lstm_sequence_forward);
  m.impl("lstm_sequence_backward", &wmkernels::cpu::lstm_sequence_backward);
  m.impl("lstm_sequence_inference", &wmkernels::cpu::lstm_sequence_inference);
}
