// The header math (wmkernels/lstm_math.h) against a direct long-double
// computation of the same formulas, and its backward against central finite
// differences of its forward. Large |x| must give finite results.
#include <cmath>
#include <vector>

#include <wmkernels/lstm_math.h>

#include "check.h"

namespace lstm_math_checks {  // named, not anonymous: the CMake test build is a unity build

using LD = long double;

LD sig(LD x) { return 1.0L / (1.0L + std::exp(-x)); }

struct Fwd {
  LD i, f, g, o, c, h;
};

Fwd ref_forward(LD gi, LD gf, LD gg, LD go, LD cp) {
  Fwd r;
  r.i = sig(gi);
  r.f = sig(gf);
  r.g = std::tanh(gg);
  r.o = sig(go);
  r.c = r.f * cp + r.i * r.g;
  r.h = r.o * std::tanh(r.c);
  return r;
}

const std::vector<double>& values() {
  static const std::vector<double> v = {0.0,  0.3,   -0.7,  1.5,  -2.25, 4.0,
                                        -6.5, 12.0,  -15.0, 20.0, -40.0, 88.5,
                                        -90.0, 100.0, -100.0};
  return v;
}

bool all_finite(std::initializer_list<double> xs) {
  for (double x : xs) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

template <typename T>
void check_forward(double tol) {
  const auto& v = values();
  const size_t n = v.size();
  for (size_t k = 0; k < n; ++k) {
    // Walk the value list with different offsets for each input so that
    // every input sees every value, in varied combinations.
    const T gi = static_cast<T>(v[k]);
    const T gf = static_cast<T>(v[(k + 3) % n]);
    const T gg = static_cast<T>(v[(k + 7) % n]);
    const T go = static_cast<T>(v[(k + 11) % n]);
    const T cp = static_cast<T>(v[(k + 5) % n] / 10.0);
    T i, f, g, o, c, h;
    wmkernels::lstm_cell_forward_point<T>(gi, gf, gg, go, cp, i, f, g, o, c, h);
    const Fwd r = ref_forward(gi, gf, gg, go, cp);
    WMK_CHECK(all_finite({(double)i, (double)f, (double)g, (double)o, (double)c, (double)h}));
    WMK_CHECK_CLOSE(i, r.i, tol);
    WMK_CHECK_CLOSE(f, r.f, tol);
    WMK_CHECK_CLOSE(g, r.g, tol);
    WMK_CHECK_CLOSE(o, r.o, tol);
    WMK_CHECK_CLOSE(c, r.c, tol);
    WMK_CHECK_CLOSE(h, r.h, tol);
  }
  // Saturation is exact, never NaN.
  WMK_CHECK(wmkernels::MathOps<T>::sigmoid(T(-100)) >= T(0));
  WMK_CHECK(wmkernels::MathOps<T>::sigmoid(T(-100)) < T(1e-30));
  WMK_CHECK(wmkernels::MathOps<T>::sigmoid(T(100)) == T(1));
  WMK_CHECK(wmkernels::MathOps<T>::tanh(T(100)) == T(1));
  WMK_CHECK(wmkernels::MathOps<T>::tanh(T(-100)) == T(-1));
}

template <typename T>
void check_backward_direct(double tol) {
  const auto& v = values();
  const size_t n = v.size();
  for (size_t k = 0; k < n; ++k) {
    const T gi = static_cast<T>(v[k]);
    const T gf = static_cast<T>(v[(k + 2) % n]);
    const T gg = static_cast<T>(v[(k + 4) % n]);
    const T go = static_cast<T>(v[(k + 6) % n]);
    const T cp = static_cast<T>(v[(k + 8) % n] / 10.0);
    const T gh = static_cast<T>(v[(k + 1) % n] / 7.0);
    const T gc = static_cast<T>(v[(k + 9) % n] / 9.0);
    T i, f, g, o, c, h;
    wmkernels::lstm_cell_forward_point<T>(gi, gf, gg, go, cp, i, f, g, o, c, h);
    T di, df, dg, dout, dcp;
    wmkernels::lstm_cell_backward_point<T>(i, f, g, o, cp, c, gh, gc, di, df, dg,
                                           dout, dcp);
    WMK_CHECK(all_finite({(double)di, (double)df, (double)dg, (double)dout, (double)dcp}));
    // The same formulas in long double from the same activations.
    const LD tc = std::tanh((LD)c);
    const LD dct = (LD)gc + (LD)gh * o * (1.0L - tc * tc);
    WMK_CHECK_CLOSE(di, dct * g * i * (1.0L - i), tol);
    WMK_CHECK_CLOSE(df, dct * cp * f * (1.0L - f), tol);
    WMK_CHECK_CLOSE(dg, dct * i * (1.0L - (LD)g * g), tol);
    WMK_CHECK_CLOSE(dout, (LD)gh * tc * o * (1.0L - o), tol);
    WMK_CHECK_CLOSE(dcp, dct * f, tol);
  }
}

// d/dx of L = grad_h * h + grad_c * c by central differences, in double.
void check_backward_finite_differences() {
  const double pts[][7] = {
      // gi, gf, gg, go, c_prev, grad_h, grad_c
      {0.1, -0.3, 0.5, 0.7, 0.2, 1.0, 0.0},
      {-1.2, 0.8, -0.4, 1.9, -0.6, 0.3, -0.8},
      {2.5, -2.0, 1.1, -1.3, 1.4, -1.1, 0.6},
      {0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5},
      {-3.0, 3.0, -2.5, 0.4, -2.0, 2.0, 1.0},
  };
  const double eps = 1e-6;
  for (const auto& p : pts) {
    auto loss = [&](const double* x) {
      double i, f, g, o, c, h;
      wmkernels::lstm_cell_forward_point<double>(x[0], x[1], x[2], x[3], x[4], i,
                                                 f, g, o, c, h);
      return p[5] * h + p[6] * c;
    };
    double i, f, g, o, c, h;
    wmkernels::lstm_cell_forward_point<double>(p[0], p[1], p[2], p[3], p[4], i, f,
                                               g, o, c, h);
    double grads[5];
    wmkernels::lstm_cell_backward_point<double>(i, f, g, o, p[4], c, p[5], p[6],
                                                grads[0], grads[1], grads[2],
                                                grads[3], grads[4]);
    for (int k = 0; k < 5; ++k) {
      double xp[5] = {p[0], p[1], p[2], p[3], p[4]};
      double xm[5] = {p[0], p[1], p[2], p[3], p[4]};
      xp[k] += eps;
      xm[k] -= eps;
      const double fd = (loss(xp) - loss(xm)) / (2 * eps);
      WMK_CHECK_CLOSE(grads[k], fd, 1e-8);
    }
  }
}

}  // namespace lstm_math_checks

void run_lstm_math_tests() {
  using namespace lstm_math_checks;
  check_forward<float>(2e-6);
  check_forward<double>(1e-14);
  check_backward_direct<float>(1e-5);
  check_backward_direct<double>(1e-13);
  check_backward_finite_differences();
}
