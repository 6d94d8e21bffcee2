// The row-ops policy of wmkernels/memory_math.h for the CPU: the loops over
// the slot width D (dot products, axpy) on at::vec::Vectorized<T>, with a
// scalar tail. Vectorized<T> is whatever this translation unit is compiled
// for (the generic fixed-width version without ISA flags, which the compiler
// lowers to the baseline SIMD of the target: never an illegal instruction).
#pragma once

#include <cstdint>

#include <ATen/cpu/vec/vec.h>

namespace wmkernels {
namespace cpu {

struct VecRowOps {
  template <typename T>
  static inline T dot(const T* x, const T* y, int64_t n) {
    using V = at::vec::Vectorized<T>;
    constexpr int64_t W = V::size();
    int64_t d = 0;
    T acc = T(0);
    if (n >= W) {
      V v0(T(0)), v1(T(0));
      for (; d + 2 * W <= n; d += 2 * W) {
        v0 = at::vec::fmadd(V::loadu(x + d), V::loadu(y + d), v0);
        v1 = at::vec::fmadd(V::loadu(x + d + W), V::loadu(y + d + W), v1);
      }
      for (; d + W <= n; d += W) {
        v0 = at::vec::fmadd(V::loadu(x + d), V::loadu(y + d), v0);
      }
      acc = at::vec::vec_reduce_all<T>([](V a, V b) { return a + b; }, v0 + v1);
    }
    for (; d < n; ++d) acc += x[d] * y[d];
    return acc;
  }

  template <typename T>
  static inline T dot3(const T* x, const T* y, const T* z, int64_t n) {
    using V = at::vec::Vectorized<T>;
    constexpr int64_t W = V::size();
    int64_t d = 0;
    T acc = T(0);
    if (n >= W) {
      V v0(T(0));
      for (; d + W <= n; d += W) {
        v0 = at::vec::fmadd(V::loadu(x + d) * V::loadu(y + d), V::loadu(z + d), v0);
      }
      acc = at::vec::vec_reduce_all<T>([](V a, V b) { return a + b; }, v0);
    }
    for (; d < n; ++d) acc += x[d] * y[d] * z[d];
    return acc;
  }

  template <typename T>
  static inline void axpy(T a, const T* x, T* y, int64_t n) {
    using V = at::vec::Vectorized<T>;
    constexpr int64_t W = V::size();
    const V va(a);
    int64_t d = 0;
    for (; d + W <= n; d += W) {
      at::vec::fmadd(va, V::loadu(x + d), V::loadu(y + d)).store(y + d);
    }
    for (; d < n; ++d) y[d] += a * x[d];
  }
};

// Rows per at::parallel_for task so that one task holds about 32768
// elements of work (at::internal::GRAIN_SIZE): small problems stay on one
// thread, where a second one was measured not to pay.
inline int64_t row_grain(int64_t work_per_row) {
  constexpr int64_t kGrainElems = 32768;
  const int64_t w = work_per_row > 0 ? work_per_row : 1;
  return kGrainElems / w > 1 ? kGrainElems / w : 1;
}

}  // namespace cpu
}  // namespace wmkernels
