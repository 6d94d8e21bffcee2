// A tiny test harness: WMK_CHECK(cond) and WMK_CHECK_CLOSE(a, b, tol) record failures
// and go on; main() returns non-zero when any check failed.
#pragma once

#include <cstdio>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace wmk_test {

inline int& failures() {
  static int n = 0;
  return n;
}
inline int& checks() {
  static int n = 0;
  return n;
}

// max |a - b| over all elements (0 for empty tensors).
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0) return 0.0;
  return (a - b).abs().max().item<double>();
}

// Whether f() throws c10::Error (a TORCH_CHECK failing).
template <typename F>
bool throws_c10_error(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
    return true;
  }
  return false;
}

}  // namespace wmk_test

#define WMK_CHECK(cond)                                                       \
  do {                                                                    \
    ++wmk_test::checks();                                                 \
    if (!(cond)) {                                                        \
      ++wmk_test::failures();                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                \
    }                                                                     \
  } while (0)

// |a - b| <= tol * max(1, |b|)
#define WMK_CHECK_CLOSE(a, b, tol)                                                 \
  do {                                                                         \
    ++wmk_test::checks();                                                      \
    const double wmk_a_ = static_cast<double>(a);                              \
    const double wmk_b_ = static_cast<double>(b);                              \
    const double wmk_s_ = wmk_b_ < 0 ? -wmk_b_ : wmk_b_;                       \
    const double wmk_d_ = wmk_a_ - wmk_b_;                                     \
    if (!((wmk_d_ < 0 ? -wmk_d_ : wmk_d_) <= (tol) * (wmk_s_ > 1 ? wmk_s_ : 1))) { \
      ++wmk_test::failures();                                                  \
      std::fprintf(stderr, "%s:%d: WMK_CHECK_CLOSE failed: %s = %.17g vs %s = %.17g (tol %g)\n", \
                   __FILE__, __LINE__, #a, wmk_a_, #b, wmk_b_, (double)(tol));  \
    }                                                                          \
  } while (0)

void run_lstm_math_tests();
void run_lstm_cell_cpu_tests();
void run_memory_ops_tests();
void run_memory_wm_lstm_tests();
void run_lstm_sequence_cpu_tests();
void run_persistent_team_tests();
