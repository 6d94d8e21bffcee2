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
// transcendental-bound. The price is tanh's relative accuracy near 0
// (absolute error ~1e-7 there); errors against the float64 reference stay
// at ~3e-7 of the norm (SPEC's float32 tolerance is 1e-5), as with SLEEF.
// Overflow: e^2x = +inf gives 1 - 0 = 1, e^2x = 0 gives -1; never NaN.
template <>
struct MathOps<at::vec::Vectorized<float>> {
  using V = at::vec::Vectorized<float>;
  static inline V one() { return V(1.0f); }
  static inline V sigmoid(const V& x) { return (one() + x.neg().exp_u20()).reciprocal(); }
  static inline V tanh(const V& x) {
    return one() - V(2.0f) * (one() + (x + x).exp_u20()).reciprocal();
  }
};

}  // namespace wmkernels
