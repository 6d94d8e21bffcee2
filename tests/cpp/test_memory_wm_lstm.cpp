// The CPU wm_lstm_sequence in float64: the fifo memory after T >= S steps is
// the last S written vectors tanh(h_t w_vᵀ + b_v); a row of length 0 keeps its
// state and outputs zeros; the gated backward does not depend on the
// checkpoint interval K (recompute = what was saved); T = 0; bad arguments.
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "check.h"
#include "cpu/wm_lstm_sequence.h"

namespace memory_wm_lstm_checks {  // named, not anonymous: the CMake test build is a unity build

using wmkernels::cpu::wm_lstm_sequence_backward;
using wmkernels::cpu::wm_lstm_sequence_forward;

constexpr int64_t kB = 3, kI = 4, kH = 5, kS = 3, kD = 2;

struct Inputs {
  at::Tensor x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e;
};

Inputs make_inputs(int64_t T) {
  const auto o = at::TensorOptions().dtype(at::kDouble);
  auto w = [&](int64_t r, int64_t c) { return at::randn({r, c}, o) * 0.4; };
  return {at::randn({T, kB, kI}, o), at::randn({kB, kH}, o), at::randn({kB, kH}, o),
          at::randn({kB, kS, kD}, o), w(4 * kH, kI), w(4 * kH, kH), w(4 * kH, kD),
          at::randn({4 * kH}, o) * 0.4, w(kD, kH), at::randn({kD}, o), w(kD, kH),
          at::randn({kD}, o), w(kD, kH), at::randn({kD}, o)};
}

auto forward(const Inputs& in, const std::string& mode, const std::optional<at::Tensor>& lengths,
             int64_t K) {
  const bool gated = mode == "gated";
  return wm_lstm_sequence_forward(in.x, in.h0, in.c0, in.M0, in.w_ih, in.w_hh, in.w_rh, in.b,
                                  in.w_q, in.b_q, in.w_v, in.b_v,
                                  gated ? std::optional<at::Tensor>(in.w_e) : std::nullopt,
                                  gated ? std::optional<at::Tensor>(in.b_e) : std::nullopt,
                                  lengths, std::nullopt, mode, K);
}

void check_fifo_memory_is_last_written_vectors() {
  const int64_t T = 7;
  Inputs in = make_inputs(T);
  auto out = forward(in, "fifo", std::nullopt, 1);
  const at::Tensor& y = std::get<0>(out);
  const at::Tensor& M_n = std::get<3>(out);
  at::Tensor h = y.narrow(2, 0, kH);  // [T, B, H]
  at::Tensor v = at::tanh(at::matmul(h, in.w_v.t()) + in.b_v);
  for (int64_t s = 0; s < kS; ++s) {
    WMK_CHECK((M_n.select(1, s) - v[T - kS + s]).abs().max().item<double>() <= 1e-14);
  }
  WMK_CHECK((std::get<1>(out) - h[T - 1]).abs().max().item<double>() == 0.0);
}

void check_zero_length_row_frozen() {
  const int64_t T = 4;
  Inputs in = make_inputs(T);
  at::Tensor lengths = at::tensor(std::vector<int64_t>{T, 0, 2}, at::kLong);
  for (const char* mode : {"fifo", "gated"}) {
    auto out = forward(in, mode, lengths, 2);
    WMK_CHECK(std::get<0>(out).select(1, 1).abs().max().item<double>() == 0.0);
    WMK_CHECK(std::get<0>(out).select(1, 2).narrow(0, 2, 2).abs().max().item<double>() == 0.0);
    WMK_CHECK(at::equal(std::get<1>(out)[1], in.h0[1]));
    WMK_CHECK(at::equal(std::get<2>(out)[1], in.c0[1]));
    WMK_CHECK(at::equal(std::get<3>(out)[1], in.M0[1]));
  }
}

void check_gated_backward_independent_of_K() {
  const int64_t T = 7;
  Inputs in = make_inputs(T);
  at::Tensor lengths = at::tensor(std::vector<int64_t>{T, 3, 6}, at::kLong);
  std::vector<at::Tensor> reference;
  at::Tensor gy, gh, gc, gM;
  for (int64_t K : {1, 2, 3, 7, 20}) {
    auto out = forward(in, "gated", lengths, K);
    if (!gy.defined()) {
      gy = at::randn_like(std::get<0>(out));
      gh = at::randn_like(std::get<1>(out));
      gc = at::randn_like(std::get<2>(out));
      gM = at::randn_like(std::get<3>(out));
    }
    auto g = wm_lstm_sequence_backward(
        gy, gh, gc, gM, in.x, in.M0, in.w_ih, in.w_hh, in.w_rh, in.w_q, in.w_v, in.w_e, lengths,
        std::nullopt, in.h0, std::get<0>(out), std::get<4>(out), std::get<5>(out), std::get<6>(out),
        std::get<7>(out), std::get<8>(out), std::get<9>(out), std::get<10>(out), "gated", K);
    std::vector<at::Tensor> grads = {std::get<0>(g), std::get<3>(g), std::get<5>(g),
                                     std::get<12>(g)};
    WMK_CHECK(std::get<10>(out).size(0) == (T + K - 1) / K - 1);
    if (reference.empty()) {
      reference = grads;
      continue;
    }
    for (size_t k = 0; k < grads.size(); ++k) {
      WMK_CHECK((grads[k] - reference[k]).abs().max().item<double>() <= 1e-13);
    }
  }
}

void check_empty_sequence() {
  Inputs in = make_inputs(0);
  for (const char* mode : {"fifo", "gated"}) {
    auto out = forward(in, mode, std::nullopt, 1);
    WMK_CHECK(std::get<0>(out).sizes() == at::IntArrayRef({0, kB, kH + kD}));
    WMK_CHECK(at::equal(std::get<1>(out), in.h0));
    WMK_CHECK(at::equal(std::get<3>(out), in.M0));
  }
}

void check_bad_arguments() {
  Inputs in = make_inputs(3);
  WMK_CHECK(wmk_test::throws_c10_error([&] { forward(in, "lifo", std::nullopt, 1); }));
  WMK_CHECK(wmk_test::throws_c10_error([&] { forward(in, "gated", std::nullopt, 0); }));
  WMK_CHECK(wmk_test::throws_c10_error(
      [&] { forward(in, "fifo", at::tensor(std::vector<int64_t>{1, 4, 0}, at::kLong), 1); }));
  Inputs bad = in;
  bad.w_rh = in.w_rh.narrow(1, 0, 1);
  WMK_CHECK(wmk_test::throws_c10_error([&] { forward(bad, "fifo", std::nullopt, 1); }));
  bad = in;
  bad.M0 = in.M0.to(at::kFloat);
  WMK_CHECK(wmk_test::throws_c10_error([&] { forward(bad, "gated", std::nullopt, 1); }));
}

}  // namespace memory_wm_lstm_checks

void run_memory_wm_lstm_tests() {
  using namespace memory_wm_lstm_checks;
  at::manual_seed(2024);
  check_fifo_memory_is_last_written_vectors();
  check_zero_length_row_frozen();
  check_gated_backward_independent_of_K();
  check_empty_sequence();
  check_bad_arguments();
}
