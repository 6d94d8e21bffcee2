// MathOps<at::vec::Vectorized<T>>: the elementary functions of lstm_math.h on
// SIMD vectors, so the cell formulas written there run unchanged on vectors.
//
// Include this only from translation units compiled once per instruction set
// (csrc/cpu/isa/*.cpp): Vectorized<T> is AVX2 or AVX-512 code there, selected
// by the CPU_CAPABILITY_* define the build passes, and the functions below land
// in at::vec::CPU_CAPABILITY, one copy per instruction set.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <wmkernels/lstm_math.h>

namespace wmkernels {

// float64: SLEEF's exp and tanh (1 ULP).
template <>
struct MathOps<at::vec::Vectorized<double>> {
  using V = at::vec::Vectorized<double>;
  static inline V one() { return V(1.0); }
  // Same formula as the scalar one: exp(-x) overflows to +inf for very
  // negative x and the reciprocal is then exactly 0, never NaN.
  static inline V sigmoid(const V& x) { return (one() + x.neg().exp()).reciprocal(); }
  static inline V tanh(const V& x) { return x.tanh(); }
};

// float32: ATen's exp_u20 (a degree-5 polynomial, at most 20 ULP, what
// ATen's own softmax uses) for the sigmoid, and tanh(x) = 1 - 2 / (1 + e^2x)
// on it. Measured (AVX-512, 1 thread, B = 16, H = 256): the forward step
// ~2x faster than with SLEEF's exp/tanh, which made the LSTM step
// transcendental-bound. That form cancels near 0 (absolute error ~1e-7, so a
// relative error of 1e-4 at |x| = 1e-3, enough to fail a one-element output),
// so |x| < 0.4 takes tanh's odd Taylor polynomial through x^13 instead
// (truncation below 1e-8 relative there).
// Overflow: e^2x = +inf gives 1 - 0 = 1, e^2x = 0 gives -1; never NaN.
// exp_u20 maps NaN to a finite number, so a NaN input is passed through by
// hand (NaN in gives NaN out, as in the reference).
template <>
struct MathOps<at::vec::Vectorized<float>> {
  using V = at::vec::Vectorized<float>;
  static inline V one() { return V(1.0f); }
  static inline V keep_nan(const V& x, const V& y) { return V::blendv(y, x, x != x); }
  static inline V sigmoid(const V& x) { return keep_nan(x, (one() + x.neg().exp_u20()).reciprocal()); }
  static inline V tanh(const V& x) {
    const V far = one() - V(2.0f) * (one() + (x + x).exp_u20()).reciprocal();
    const V t = x * x;
    V p = V(21844.0f / 6081075.0f);
    p = at::vec::fmadd(p, t, V(-1382.0f / 155925.0f));
    p = at::vec::fmadd(p, t, V(62.0f / 2835.0f));
    p = at::vec::fmadd(p, t, V(-17.0f / 315.0f));
    p = at::vec::fmadd(p, t, V(2.0f / 15.0f));
    p = at::vec::fmadd(p, t, V(-1.0f / 3.0f));
    const V near = at::vec::fmadd(x * t, p, x);
    return keep_nan(x, V::blendv(far, near, x.abs() < V(0.4f)));
  }
};

}  // namespace wmkernels
