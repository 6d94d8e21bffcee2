// The CPU lstm_cell op in float64: forward against ATen's sigmoid/tanh,
// backward against central finite differences of the forward, B = 0, the
// op reached through the dispatcher (schemas of schema.cpp, registration beside each kernel), and bad
// arguments rejected with c10::Error.
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "check.h"
#include "cpu/lstm_cell.h"

namespace lstm_cell_cpu_checks {  // named, not anonymous: the CMake test build is a unity build

using wmk_test::max_abs_diff;
using wmk_test::throws_c10_error;
using wmkernels::cpu::lstm_cell_backward;
using wmkernels::cpu::lstm_cell_forward;

void check_forward_against_aten(int64_t B, int64_t H, at::ScalarType dtype,
                                double tol) {
  const auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor gates = at::randn({B, 4 * H}, opts) * 3;
  at::Tensor c_prev = at::randn({B, H}, opts);
  auto [h, c, act] = lstm_cell_forward(gates, c_prev);
  auto chunks = gates.chunk(4, 1);
  at::Tensor i = at::sigmoid(chunks[0]), f = at::sigmoid(chunks[1]);
  at::Tensor g = at::tanh(chunks[2]), o = at::sigmoid(chunks[3]);
  at::Tensor c_ref = f * c_prev + i * g;
  at::Tensor h_ref = o * at::tanh(c_ref);
  WMK_CHECK(h.sizes() == c_prev.sizes());
  WMK_CHECK(c.sizes() == c_prev.sizes());
  WMK_CHECK(act.sizes() == gates.sizes());
  WMK_CHECK(h.scalar_type() == dtype && c.scalar_type() == dtype && act.scalar_type() == dtype);
  WMK_CHECK(max_abs_diff(h, h_ref) <= tol);
  WMK_CHECK(max_abs_diff(c, c_ref) <= tol);
  WMK_CHECK(max_abs_diff(act, at::cat({i, f, g, o}, 1)) <= tol);
}

// L = sum(w_h * h + w_c * c); the op's backward against central differences.
void check_backward_finite_differences(int64_t B, int64_t H) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor gates = at::randn({B, 4 * H}, opts);
  at::Tensor c_prev = at::randn({B, H}, opts);
  at::Tensor w_h = at::randn({B, H}, opts);
  at::Tensor w_c = at::randn({B, H}, opts);
  auto loss = [&](const at::Tensor& gt, const at::Tensor& cp) {
    auto [h, c, act] = lstm_cell_forward(gt, cp);
    return (w_h * h + w_c * c).sum().item<double>();
  };
  auto [h, c, act] = lstm_cell_forward(gates, c_prev);
  auto [grad_gates, grad_c_prev] = lstm_cell_backward(w_h, w_c, act, c_prev, c);
  WMK_CHECK(grad_gates.sizes() == gates.sizes());
  WMK_CHECK(grad_c_prev.sizes() == c_prev.sizes());
  const double eps = 1e-6;
  for (at::Tensor* x : {&gates, &c_prev}) {
    const at::Tensor& grad = (x == &gates) ? grad_gates : grad_c_prev;
    at::Tensor fd = at::empty_like(*x);
    auto flat = x->view({-1});
    auto fd_flat = fd.view({-1});
    for (int64_t k = 0; k < flat.numel(); ++k) {
      const double x0 = flat[k].item<double>();
      flat[k] = x0 + eps;
      const double lp = loss(gates, c_prev);
      flat[k] = x0 - eps;
      const double lm = loss(gates, c_prev);
      flat[k] = x0;
      fd_flat[k] = (lp - lm) / (2 * eps);
    }
    WMK_CHECK(max_abs_diff(grad, fd) <= 1e-7);
  }
}

void check_empty_batch() {
  auto [h, c, act] = lstm_cell_forward(at::empty({0, 12}, at::kDouble),
                                       at::empty({0, 3}, at::kDouble));
  WMK_CHECK(h.sizes() == at::IntArrayRef({0, 3}));
  WMK_CHECK(c.sizes() == at::IntArrayRef({0, 3}));
  WMK_CHECK(act.sizes() == at::IntArrayRef({0, 12}));
  auto e = at::empty({0, 3}, at::kFloat);
  auto [gg, gcp] = lstm_cell_backward(e, e, at::empty({0, 12}, at::kFloat), e, e);
  WMK_CHECK(gg.sizes() == at::IntArrayRef({0, 12}));
  WMK_CHECK(gcp.sizes() == at::IntArrayRef({0, 3}));
}

void check_non_contiguous() {
  at::Tensor gates = at::randn({8, 5}, at::kDouble).t();  // [5, 8], H = 2
  at::Tensor c_prev = at::randn({2, 5}, at::kDouble).t();
  WMK_CHECK(!gates.is_contiguous());
  auto [h, c, act] = lstm_cell_forward(gates, c_prev);
  auto [h2, c2, act2] = lstm_cell_forward(gates.contiguous(), c_prev.contiguous());
  WMK_CHECK(max_abs_diff(h, h2) == 0.0);
  WMK_CHECK(max_abs_diff(c, c2) == 0.0);
  WMK_CHECK(max_abs_diff(act, act2) == 0.0);
}

void check_dispatcher() {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("wmkernels::lstm_cell_forward", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const at::Tensor&)>();
  at::Tensor gates = at::randn({3, 8}, at::kDouble);
  at::Tensor c_prev = at::randn({3, 2}, at::kDouble);
  auto [h, c, act] = op.call(gates, c_prev);
  auto [h2, c2, act2] = lstm_cell_forward(gates, c_prev);
  WMK_CHECK(max_abs_diff(h, h2) == 0.0);
  auto bwd = c10::Dispatcher::singleton().findSchema({"wmkernels::lstm_cell_backward", ""});
  WMK_CHECK(bwd.has_value());
}

void check_bad_arguments() {
  const auto d = at::kDouble;
  auto g = at::randn({2, 8}, d);
  auto cp = at::randn({2, 2}, d);
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(at::randn({2, 7}, d), cp); }));       // 4H
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g, at::randn({3, 2}, d)); }));        // B
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g.view({2, 2, 4}), cp); }));          // rank
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g, at::randn({2}, d)); }));           // rank
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g, cp.to(at::kFloat)); }));           // mixed
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g.to(at::kInt), cp.to(at::kInt)); }));  // int
  WMK_CHECK(throws_c10_error([&] { lstm_cell_forward(g.to(at::kHalf), cp.to(at::kHalf)); }));
  auto c = at::randn({2, 2}, d);
  auto act = at::rand({2, 8}, d);
  WMK_CHECK(!throws_c10_error([&] { lstm_cell_backward(c, c, act, cp, c); }));
  WMK_CHECK(throws_c10_error([&] { lstm_cell_backward(c, c, at::rand({2, 6}, d), cp, c); }));
  WMK_CHECK(throws_c10_error([&] { lstm_cell_backward(at::randn({2, 3}, d), c, act, cp, c); }));
  WMK_CHECK(throws_c10_error([&] { lstm_cell_backward(c, at::randn({1, 2}, d), act, cp, c); }));
  WMK_CHECK(throws_c10_error([&] { lstm_cell_backward(c, c, act, cp, c.to(at::kFloat)); }));
  WMK_CHECK(throws_c10_error([&] { lstm_cell_backward(c, c, act, cp, at::Tensor()); }));
}

}  // namespace lstm_cell_cpu_checks

void run_lstm_cell_cpu_tests() {
  using namespace lstm_cell_cpu_checks;
  at::manual_seed(1234);
  for (int64_t H : {1, 3, 65}) {
    for (int64_t B : {1, 4, 33}) {
      check_forward_against_aten(B, H, at::kDouble, 1e-14);
      check_forward_against_aten(B, H, at::kFloat, 1e-6);
    }
  }
  check_forward_against_aten(0, 5, at::kDouble, 0.0);
  check_backward_finite_differences(3, 4);
  check_backward_finite_differences(2, 1);
  check_empty_batch();
  check_non_contiguous();
  check_dispatcher();
  check_bad_arguments();
}
