// The pointwise LSTM step on one batch row, vectorized with at::vec and
// compiled once per instruction set; lstm_row_kernels<T>() picks the best
// copy the running CPU supports.
//
// Why several copies: at the default x86-64 instruction set (SSE2), ATen's
// Vectorized<T> falls back to scalar libm calls per element, and the scalar
// LSTM step measured 4-5x slower than eager PyTorch. Compiling the kernels
// with -mavx2/-mavx512* (ATen's own CPU_CAPABILITY scheme) gets SLEEF vector
// exp/tanh; choosing among the copies at run time with __builtin_cpu_supports
// keeps the package safe on a CPU without AVX2 (no illegal instruction).
#pragma once

#include <cstdint>

namespace wmkernels {
namespace cpu {

template <typename T>
struct LstmRowKernels {
  // gates [4H] pre-activations i, f, g, o; c_prev [H]
  //   -> act [4H] activated gates, c [H], h [H]. act may alias gates.
  void (*forward)(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t H);
  // act [4H], c_prev [H], c [H], grad_h [H], grad_c [H]
  //   -> grad_gates [4H], grad_c_prev [H]. grad_c_prev may alias grad_c.
  void (*backward)(const T* act, const T* c_prev, const T* c, const T* grad_h,
                   const T* grad_c, T* grad_gates, T* grad_c_prev, int64_t H);
};

// The kernels of the best instruction set of this CPU (see cpu_capability()).
template <typename T>
const LstmRowKernels<T>& lstm_row_kernels();
template <>
const LstmRowKernels<float>& lstm_row_kernels<float>();
template <>
const LstmRowKernels<double>& lstm_row_kernels<double>();

// "avx512_bf16", "avx512", "avx2" or "default": the instruction set in use
// ("avx512_bf16": the AVX-512 copy plus the bfloat16 kernels of
// lstm_tiles_bf16.h, which need the avx512_bf16 instructions). The environment
// variable WMKERNELS_CPU_CAPABILITY (same values) lowers it, e.g. to test or
// time the other copies on one machine; it never raises it above what the CPU
// has.
const char* cpu_capability();

// Rows per at::parallel_for task: about kGrainElems elements per task (the
// value of at::internal::GRAIN_SIZE, which lives in TensorIterator.h). At the
// benchmark size (B = 16, H = 256) a step is one task: on 2 cores a second
// thread did not pay for the small pointwise work of one step.
constexpr int64_t kGrainElems = 32768;

inline int64_t row_grain(int64_t row_elems) {
  const int64_t elems = row_elems > 1 ? row_elems : 1;
  return kGrainElems / elems > 1 ? kGrainElems / elems : 1;
}

// Declarations of each copy (defined in csrc/cpu/isa/lstm_rows_isa.cpp).
#define WMK_DECLARE_ROW_KERNELS(ISA)                         \
  namespace ISA {                                            \
  const LstmRowKernels<float>& lstm_row_kernels_float();     \
  const LstmRowKernels<double>& lstm_row_kernels_double();   \
  }
WMK_DECLARE_ROW_KERNELS(DEFAULT)
WMK_DECLARE_ROW_KERNELS(AVX2)
WMK_DECLARE_ROW_KERNELS(AVX512)
#undef WMK_DECLARE_ROW_KERNELS

}  // namespace cpu
}  // namespace wmkernels
