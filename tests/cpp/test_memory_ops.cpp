// The memory math (wmkernels/memory_math.h) and the CPU memory ops in
// float64: the scalar and Vectorized row policies agree, the all-masked read
// row gives zeros, the ops match ATen formulas, wm_write's backward matches
// central differences, the ops are reachable through the dispatcher, and bad
// arguments raise c10::Error.
#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <wmkernels/memory_math.h>

#include "check.h"
#include "cpu/memory_ops.h"
#include "cpu/vec_row_ops.h"

namespace memory_ops_checks {  // named, not anonymous: the CMake test build is a unity build

using namespace wmkernels;
using namespace wmkernels::cpu;

using wmk_test::max_abs_diff;

void check_row_policies_agree() {
  for (int64_t n : {1, 3, 4, 8, 17, 64, 65}) {
    std::vector<double> x(n), y(n), z(n), y1, y2;
    for (int64_t d = 0; d < n; ++d) {
      x[d] = std::sin(1.0 + d);
      y[d] = std::cos(2.0 * d);
      z[d] = 0.5 - 0.1 * d;
    }
    WMK_CHECK_CLOSE(VecRowOps::dot(x.data(), y.data(), n), ScalarRowOps::dot(x.data(), y.data(), n), 1e-13);
    WMK_CHECK_CLOSE(VecRowOps::dot3(x.data(), y.data(), z.data(), n),
                    ScalarRowOps::dot3(x.data(), y.data(), z.data(), n), 1e-13);
    y1 = y;
    y2 = y;
    VecRowOps::axpy(0.75, x.data(), y1.data(), n);
    ScalarRowOps::axpy(0.75, x.data(), y2.data(), n);
    for (int64_t d = 0; d < n; ++d) WMK_CHECK_CLOSE(y1[d], y2[d], 1e-15);
  }
}

void check_softmax_rules() {
  double scores[3] = {1.0, 2.0, 3.0};
  const bool none[3] = {false, false, false};
  WMK_CHECK(!masked_softmax(scores, none, 3));
  WMK_CHECK(scores[0] == 0.0 && scores[1] == 0.0 && scores[2] == 0.0);
  double s2[3] = {1000.0, 0.0, -5.0};
  const bool some[3] = {true, false, true};
  WMK_CHECK(masked_softmax(s2, some, 3));
  WMK_CHECK_CLOSE(s2[0], 1.0, 1e-15);
  WMK_CHECK(s2[1] == 0.0);
  WMK_CHECK(std::isfinite(s2[2]));
  double g[3] = {NAN, NAN, NAN}, dz[3];
  softmax_backward(scores, g, none, 3, dz);  // all-masked: the row's dz is 0, as in the reference
  WMK_CHECK(dz[0] == 0.0 && dz[1] == 0.0 && dz[2] == 0.0);
  // A readable slot of weight 0 (a -inf score) with an infinite g: 0 · inf is
  // NaN in the reference's softmax backward, and so the whole row's dz.
  const double a0[3] = {0.0, 0.25, 0.75}, g0[3] = {INFINITY, 1.0, 2.0};
  softmax_backward(a0, g0, static_cast<const bool*>(nullptr), 3, dz);
  WMK_CHECK(std::isnan(dz[0]) && std::isnan(dz[1]) && std::isnan(dz[2]));
  // The same through a masked slot: its dz is exactly 0, the readable ones NaN.
  softmax_backward(a0, g0, some, 3, dz);
  WMK_CHECK(std::isnan(dz[0]) && dz[1] == 0.0 && std::isnan(dz[2]));
  WMK_CHECK_CLOSE(erase_add(2.0, 0.5, 0.25, 3.0), 2.0 * (1 - 0.125) + 1.5, 1e-15);
}

void check_ops_against_aten(int64_t B, int64_t S, int64_t D) {
  const auto o = at::TensorOptions().dtype(at::kDouble);
  at::Tensor M = at::randn({B, S, D}, o), q = at::randn({B, D}, o);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto [r, attn] = wm_read_forward(M, q, std::nullopt, scale);
  at::Tensor attn_ref = at::softmax(at::bmm(M, q.unsqueeze(2)).squeeze(2) * scale, 1);
  WMK_CHECK(max_abs_diff(attn, attn_ref) <= 1e-14);
  WMK_CHECK(max_abs_diff(r, at::bmm(attn_ref.unsqueeze(1), M).squeeze(1)) <= 1e-13);
  at::Tensor v = at::randn({B, D}, o);
  WMK_CHECK(max_abs_diff(wm_shift_write_forward(M, v),
                         at::cat({M.narrow(1, 1, S - 1), v.unsqueeze(1)}, 1)) == 0.0);
  at::Tensor w = at::rand({B, S}, o), e = at::rand({B, D}, o);
  at::Tensor ref = M * (1 - w.unsqueeze(2) * e.unsqueeze(1)) + w.unsqueeze(2) * v.unsqueeze(1);
  WMK_CHECK(max_abs_diff(wm_write_forward(M, w, e, v), ref) <= 1e-14);
}

// L = Σ G ⊙ wm_write(M, w, e, a); backward against central differences.
void check_write_backward_finite_differences() {
  const auto o = at::TensorOptions().dtype(at::kDouble);
  const int64_t B = 2, S = 3, D = 5;
  std::vector<at::Tensor> in = {at::randn({B, S, D}, o), at::rand({B, S}, o),
                                at::rand({B, D}, o), at::randn({B, D}, o)};
  at::Tensor G = at::randn({B, S, D}, o);
  auto loss = [&] { return (G * wm_write_forward(in[0], in[1], in[2], in[3])).sum().item<double>(); };
  auto grads = wm_write_backward(G, in[0], in[1], in[2], in[3]);
  std::vector<at::Tensor> g = {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads),
                               std::get<3>(grads)};
  for (size_t k = 0; k < in.size(); ++k) {
    auto flat = in[k].view({-1});
    at::Tensor fd = at::empty_like(in[k]).view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double x0 = flat[i].item<double>();
      flat[i] = x0 + 1e-6;
      const double lp = loss();
      flat[i] = x0 - 1e-6;
      const double lm = loss();
      flat[i] = x0;
      fd[i] = (lp - lm) / 2e-6;
    }
    WMK_CHECK(max_abs_diff(g[k].view({-1}), fd) <= 1e-7);
  }
}

void check_dispatcher_and_bad_arguments() {
  for (const char* name : {"wmkernels::wm_read_forward", "wmkernels::wm_read_backward",
                           "wmkernels::wm_shift_write_forward", "wmkernels::wm_shift_write_backward",
                           "wmkernels::wm_write_forward", "wmkernels::wm_write_backward"}) {
    WMK_CHECK(c10::Dispatcher::singleton().findSchema({name, ""}).has_value());
  }
  const auto d = at::kDouble;
  at::Tensor M = at::randn({2, 3, 4}, d), q = at::randn({2, 4}, d);
  WMK_CHECK(!wmk_test::throws_c10_error([&] { wm_read_forward(M, q, std::nullopt, 0.5); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { wm_read_forward(M, at::randn({2, 5}, d), std::nullopt, 0.5); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { wm_read_forward(M, q, at::ones({2, 2}, at::kBool), 0.5); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { wm_shift_write_forward(M.narrow(1, 0, 0), q); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { wm_write_forward(M, at::rand({2, 4}, d), q, q); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { wm_write_forward(M, at::rand({2, 3}, d), q.to(at::kFloat), q); }));
}

}  // namespace memory_ops_checks

void run_memory_ops_tests() {
  using namespace memory_ops_checks;
  at::manual_seed(4321);
  check_row_policies_agree();
  check_softmax_rules();
  for (auto [B, S, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 6}, {2, 7, 65}}) {
    check_ops_against_aten(B, S, D);
  }
  check_write_backward_finite_differences();
  check_dispatcher_and_bad_arguments();
}
