// The persistent team (csrc/cpu/team.h) and the lstm_sequence loops on it
// (persistent_lstm.h) with 1, 2, 3 and 8 threads: the barrier exchange gives
// the serial result, and the forward, inference and backward outputs are the
// same bits whatever the thread count (float32, with and without lengths).
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "check.h"
#include "team_exchange.h"
#include "cpu/lstm_sequence.h"
#include "cpu/persistent_lstm.h"

namespace persistent_team_checks {  // named, not anonymous: the CMake test build is a unity build

using wmkernels::cpu::lstm_sequence_backward;
using wmkernels::cpu::lstm_sequence_forward;
using wmkernels::cpu::lstm_sequence_inference;

std::vector<at::Tensor> run_all(const std::vector<at::Tensor>& in, const at::Tensor& lengths) {
  const std::optional<at::Tensor> len =
      lengths.defined() ? std::optional<at::Tensor>(lengths) : std::nullopt;
  auto [y, h_n, c_n, act, cs] =
      lstm_sequence_forward(in[0], in[1], in[2], in[3], in[4], in[5], in[6], len);
  auto [y2, h2, c2] = lstm_sequence_inference(in[0], in[1], in[2], in[3], in[4], in[5], in[6], len);
  const at::Tensor gy = at::ones_like(y) * 0.3, gh = at::ones_like(h_n) * 0.5,
                   gc = at::ones_like(c_n) * 0.7;
  auto [gx, gh0, gc0, gwi, gwh, gb] =
      lstm_sequence_backward(gy, gh, gc, in[0], in[1], in[2], in[3], in[4], act, cs, y, len);
  return {y, h_n, c_n, act, cs, y2, h2, c2, gx, gh0, gc0, gwi, gwh, gb};
}

void check_thread_counts(int64_t T, int64_t B, int64_t I, int64_t H, bool with_lengths) {
  at::manual_seed(7);
  const auto f = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> in = {at::randn({T, B, I}, f), at::randn({B, H}, f),
                                at::randn({B, H}, f), at::randn({4 * H, I}, f) * 0.3,
                                at::randn({4 * H, H}, f) * 0.3, at::randn({4 * H}, f),
                                at::randn({4 * H}, f)};
  at::Tensor lengths;
  if (with_lengths) {
    std::vector<int64_t> l(B);
    for (int64_t b = 0; b < B; ++b) l[b] = b == 0 ? T : (T - 1 - b) > 0 ? T - 1 - b : 0;
    lengths = at::tensor(l, at::kLong);
  }
  const int before = at::get_num_threads();
  std::vector<at::Tensor> base;
  for (int n : {1, 2, 3, 8}) {
    at::set_num_threads(n);
    const auto out = run_all(in, lengths);
    // H = 128 floats: 8 panels of 16 (AVX-512) or 16 of 8, so n threads run.
    WMK_CHECK(wmkernels::cpu::persistent_last_team_size() == n);
    if (base.empty()) {
      base = out;
      continue;
    }
    for (size_t i = 0; i < out.size(); ++i) {
      const bool same = at::equal(out[i], base[i]);
      WMK_CHECK(same);
      if (!same) std::fprintf(stderr, "  output %zu differs at %d threads\n", i, n);
    }
  }
  at::set_num_threads(before);
}

}  // namespace persistent_team_checks

void run_persistent_team_tests() {
  using namespace persistent_team_checks;
  const int64_t width = 37, steps = 100;
  const auto expected = wmk_test::serial_exchange(width, steps);
  for (int n : {1, 2, 3, 8}) {
    int ran = 0;
    WMK_CHECK(wmk_test::team_exchange(n, width, steps, ran) == expected);
    WMK_CHECK(ran == n);
  }
  check_thread_counts(5, 3, 9, 128, false);
  check_thread_counts(5, 7, 9, 128, true);
  check_thread_counts(4, 1, 4, 128, false);
}
