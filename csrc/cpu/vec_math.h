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

template <typename T>
struct MathOps<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static inline V one() { return V(T(1)); }
  // Same formula as the scalar one: exp(-x) overflows to +inf for very
  // negative x and the reciprocal is then exactly 0, never NaN.
  static inline V sigmoid(const V& x) { return (one() + x.neg().exp()).reciprocal(); }
  static inline V tanh(const V& x) { return x.tanh(); }
};

}  // namespace wmkernels
