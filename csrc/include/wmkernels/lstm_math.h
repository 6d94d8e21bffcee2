// The LSTM cell math, written once for host and device code.
//
// Everything here is header-only, inline and templated on the element type T.
// The formulas use only T arithmetic (+, -, *) and MathOps<T> calls, never
// std:: functions or scalar literals, so that a CPU header can specialise
// MathOps<at::vec::Vectorized<float>> and run the very same formulas on SIMD
// vectors, and the CUDA kernels can call them per element.
//
// Gate order is i, f, g, o, as in torch.nn.LSTM.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define WMK_HOST_DEVICE __host__ __device__
#else
#define WMK_HOST_DEVICE
#endif

#define WMK_INLINE WMK_HOST_DEVICE inline

namespace wmkernels {

// The elementary functions the formulas need, per element type.
template <typename T>
struct MathOps;

template <>
struct MathOps<float> {
  static WMK_INLINE float one() { return 1.0f; }
  // 1 / (1 + exp(-x)): exp(-x) overflows to +inf for x < ~-88 and the result
  // is then exactly 0; it underflows to 0 for large x and the result is 1.
  // Neither case produces NaN.
  static WMK_INLINE float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
  static WMK_INLINE float tanh(float x) { return ::tanhf(x); }
};

template <>
struct MathOps<double> {
  static WMK_INLINE double one() { return 1.0; }
  static WMK_INLINE double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  static WMK_INLINE double tanh(double x) { return ::tanh(x); }
};

// Forward of one (b, j) element.
// In:  pre-activations gi, gf, gg, go and the previous cell state c_prev.
// Out: activated gates i, f, g, o (saved for backward), new cell c, output h.
template <typename T>
WMK_INLINE void lstm_cell_forward_point(const T& gi, const T& gf, const T& gg,
                                        const T& go, const T& c_prev, T& i,
                                        T& f, T& g, T& o, T& c, T& h) {
  using M = MathOps<T>;
  i = M::sigmoid(gi);
  f = M::sigmoid(gf);
  g = M::tanh(gg);
  o = M::sigmoid(go);
  c = f * c_prev + i * g;
  h = o * M::tanh(c);
}

// Backward of one (b, j) element.
// In:  activated gates i, f, g, o, c_prev, c (from forward), and the incoming
//      gradients grad_h, grad_c of h and c.
// Out: gradients of the four pre-activations and of c_prev.
template <typename T>
WMK_INLINE void lstm_cell_backward_point(const T& i, const T& f, const T& g,
                                         const T& o, const T& c_prev,
                                         const T& c, const T& grad_h,
                                         const T& grad_c, T& d_gi, T& d_gf,
                                         T& d_gg, T& d_go, T& grad_c_prev) {
  using M = MathOps<T>;
  const T one = M::one();
  const T tc = M::tanh(c);
  const T dct = grad_c + grad_h * o * (one - tc * tc);
  d_gi = dct * g * i * (one - i);
  d_gf = dct * c_prev * f * (one - f);
  d_gg = dct * i * (one - g * g);
  d_go = grad_h * tc * o * (one - o);
  grad_c_prev = dct * f;
}

}  // namespace wmkernels
