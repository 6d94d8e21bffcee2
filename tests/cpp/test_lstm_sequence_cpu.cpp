// The CPU lstm_sequence op in float64: forward against a step loop of ATen
// matmuls and the lstm_cell kernel (with lengths), backward against central
// finite differences of the forward, and bad arguments rejected.
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>

#include "check.h"
#include "cpu/lstm_cell.h"
#include "cpu/lstm_sequence.h"

namespace lstm_sequence_cpu_checks {  // named, not anonymous: the CMake test build is a unity build

using wmk_test::max_abs_diff;
using wmk_test::throws_c10_error;
using wmkernels::cpu::lstm_sequence_backward;
using wmkernels::cpu::lstm_sequence_forward;

struct Inputs {
  at::Tensor x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths;
};

Inputs make_inputs(int64_t T, int64_t B, int64_t I, int64_t H, std::vector<int64_t> lengths) {
  const auto d = at::TensorOptions().dtype(at::kDouble);
  Inputs in{at::randn({T, B, I}, d), at::randn({B, H}, d), at::randn({B, H}, d),
            at::randn({4 * H, I}, d) * 0.5, at::randn({4 * H, H}, d) * 0.5,
            at::randn({4 * H}, d), at::randn({4 * H}, d), at::Tensor()};
  if (!lengths.empty()) in.lengths = at::tensor(lengths, at::kLong);
  return in;
}

auto run_forward(const Inputs& in) {
  return lstm_sequence_forward(in.x, in.h0, in.c0, in.w_ih, in.w_hh, in.b_ih, in.b_hh,
                               in.lengths.defined() ? std::optional<at::Tensor>(in.lengths)
                                                    : std::nullopt);
}

void check_forward_against_step_loop(const Inputs& in) {
  auto [y, h_n, c_n, act, cs] = run_forward(in);
  const int64_t T = in.x.size(0), B = in.x.size(1);
  at::Tensor h = in.h0, c = in.c0;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor gates = at::mm(in.x[t], in.w_ih.t()) + at::mm(h, in.w_hh.t()) + in.b_ih + in.b_hh;
    auto [h_new, c_new, act_t] = wmkernels::cpu::lstm_cell_forward(gates, c);
    at::Tensor valid = in.lengths.defined() ? (in.lengths > t).view({B, 1})
                                            : at::ones({B, 1}, at::kBool);
    WMK_CHECK(max_abs_diff(y[t], at::where(valid, h_new, at::zeros_like(h_new))) <= 1e-13);
    WMK_CHECK(max_abs_diff(act[t].index({valid.view({B})}), act_t.index({valid.view({B})})) <= 1e-13);
    h = at::where(valid, h_new, h);
    c = at::where(valid, c_new, c);
    WMK_CHECK(max_abs_diff(cs[t], c) <= 1e-13);
  }
  WMK_CHECK(max_abs_diff(h_n, h) <= 1e-13);
  WMK_CHECK(max_abs_diff(c_n, c) <= 1e-13);
}

// L = sum(wy * y) + sum(wh * h_n) + sum(wc * c_n): the op's gradients of x
// and w_hh against central differences.
void check_backward_finite_differences(Inputs in) {
  auto [y, h_n, c_n, act, cs] = run_forward(in);
  at::Tensor wy = at::randn_like(y), wh = at::randn_like(h_n), wc = at::randn_like(c_n);
  auto loss = [&] {
    auto [y2, h2, c2, a2, s2] = run_forward(in);
    return ((wy * y2).sum() + (wh * h2).sum() + (wc * c2).sum()).item<double>();
  };
  auto grads = lstm_sequence_backward(wy, wh, wc, in.x, in.h0, in.c0, in.w_ih, in.w_hh, act, cs,
                                      y, in.lengths.defined()
                                             ? std::optional<at::Tensor>(in.lengths)
                                             : std::nullopt);
  const std::vector<std::pair<at::Tensor*, at::Tensor>> checked = {
      {&in.x, std::get<0>(grads)}, {&in.h0, std::get<1>(grads)}, {&in.c0, std::get<2>(grads)},
      {&in.w_hh, std::get<4>(grads)}, {&in.b_ih, std::get<5>(grads)}};
  const double eps = 1e-6;
  for (const auto& [param, grad] : checked) {
    WMK_CHECK(grad.sizes() == param->sizes());
    at::Tensor flat = param->view({-1});
    at::Tensor fd = at::empty_like(flat);
    for (int64_t k = 0; k < flat.numel(); ++k) {
      const double v = flat[k].item<double>();
      flat[k] = v + eps;
      const double lp = loss();
      flat[k] = v - eps;
      const double lm = loss();
      flat[k] = v;
      fd[k] = (lp - lm) / (2 * eps);
    }
    WMK_CHECK(max_abs_diff(grad.reshape({-1}), fd) <= 1e-7);
  }
}

void check_bad_arguments() {
  Inputs in = make_inputs(3, 2, 4, 5, {3, 1});
  const std::optional<at::Tensor> none;
  auto fwd = [&](const at::Tensor& x, const at::Tensor& w_hh, const std::optional<at::Tensor>& b,
                 const std::optional<at::Tensor>& l) {
    lstm_sequence_forward(x, in.h0, in.c0, in.w_ih, w_hh, b, none, l);
  };
  WMK_CHECK(!throws_c10_error([&] { fwd(in.x, in.w_hh, in.b_ih, in.lengths); }));
  WMK_CHECK(throws_c10_error([&] { fwd(in.x[0], in.w_hh, none, none); }));                    // rank
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh.narrow(1, 0, 4), none, none); }));      // w_hh
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh, in.b_ih.narrow(0, 0, 19), none); }));  // bias
  WMK_CHECK(throws_c10_error([&] { fwd(in.x.to(at::kFloat), in.w_hh, none, none); }));       // dtype
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh, none, at::tensor({3, 4}, at::kLong)); }));   // > T
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh, none, at::tensor({-1, 0}, at::kLong)); }));  // < 0
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh, none, at::tensor({1, 1, 1}, at::kLong)); }));  // B
  WMK_CHECK(throws_c10_error([&] { fwd(in.x, in.w_hh, none, at::tensor({1, 1}, at::kInt)); }));  // int32
  auto [y, h_n, c_n, act, cs] = run_forward(in);
  auto bwd = [&](const at::Tensor& gy, const at::Tensor& a, const at::Tensor& c) {
    lstm_sequence_backward(gy, h_n, c_n, in.x, in.h0, in.c0, in.w_ih, in.w_hh, a, c, y, none);
  };
  WMK_CHECK(!throws_c10_error([&] { bwd(y, act, cs); }));
  WMK_CHECK(throws_c10_error([&] { bwd(y.narrow(0, 0, 2), act, cs); }));
  WMK_CHECK(throws_c10_error([&] { bwd(y, act.narrow(2, 0, 19), cs); }));
  WMK_CHECK(throws_c10_error([&] { bwd(y, act, cs.to(at::kFloat)); }));
  WMK_CHECK(throws_c10_error([&] { bwd(y, act, at::Tensor()); }));
}

}  // namespace lstm_sequence_cpu_checks

void run_lstm_sequence_cpu_tests() {
  using namespace lstm_sequence_cpu_checks;
  at::manual_seed(4321);
  check_forward_against_step_loop(make_inputs(5, 3, 4, 17, {}));
  check_forward_against_step_loop(make_inputs(5, 4, 3, 9, {5, 0, 2, 1}));
  check_backward_finite_differences(make_inputs(3, 2, 3, 2, {}));
  check_backward_finite_differences(make_inputs(4, 3, 2, 3, {4, 0, 2}));
  check_bad_arguments();
}
