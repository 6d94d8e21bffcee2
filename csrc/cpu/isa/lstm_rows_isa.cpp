// The vectorized LSTM row kernels of lstm_rows.h. The build compiles this file
// once per instruction set with CPU_CAPABILITY=DEFAULT|AVX2|AVX512 (and the
// matching -m flags), so every copy lives in its own namespace. Nothing here
// calls the scalar MathOps: a row's tail is a partial vector (loadu/store with
// a count), so no inline function of the scalar path is compiled with AVX
// flags (the linker could otherwise keep that copy for the whole library).
#include "cpu/lstm_rows.h"

#include "cpu/vec_math.h"

namespace wmkernels {
namespace cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

template <typename T>
void forward_row(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t H) {
  using V = Vectorized<T>;
  auto step = [&](int64_t j, int64_t n) {
    const bool full = n == V::size();
    auto load = [&](const T* p) { return full ? V::loadu(p + j) : V::loadu(p + j, n); };
    auto store = [&](const V& v, T* p) { full ? v.store(p + j) : v.store(p + j, n); };
    V i, f, g, o, cv, hv;
    lstm_cell_forward_point<V>(load(gates), load(gates + H), load(gates + 2 * H),
                               load(gates + 3 * H), load(c_prev), i, f, g, o, cv, hv);
    store(i, act);
    store(f, act + H);
    store(g, act + 2 * H);
    store(o, act + 3 * H);
    store(cv, c);
    store(hv, h);
  };
  int64_t j = 0;
  for (; j + V::size() <= H; j += V::size()) step(j, V::size());
  if (j < H) step(j, H - j);
}

template <typename T>
void backward_row(const T* act, const T* c_prev, const T* c, const T* grad_h,
                  const T* grad_c, T* grad_gates, T* grad_c_prev, int64_t H) {
  using V = Vectorized<T>;
  auto step = [&](int64_t j, int64_t n) {
    const bool full = n == V::size();
    auto load = [&](const T* p) { return full ? V::loadu(p + j) : V::loadu(p + j, n); };
    auto store = [&](const V& v, T* p) { full ? v.store(p + j) : v.store(p + j, n); };
    V di, df, dg, dout, dcp;
    lstm_cell_backward_point<V>(load(act), load(act + H), load(act + 2 * H),
                                load(act + 3 * H), load(c_prev), load(c), load(grad_h),
                                load(grad_c), di, df, dg, dout, dcp);
    store(di, grad_gates);
    store(df, grad_gates + H);
    store(dg, grad_gates + 2 * H);
    store(dout, grad_gates + 3 * H);
    store(dcp, grad_c_prev);
  };
  int64_t j = 0;
  for (; j + V::size() <= H; j += V::size()) step(j, V::size());
  if (j < H) step(j, H - j);
}

}  // namespace

const LstmRowKernels<float>& lstm_row_kernels_float() {
  static constexpr LstmRowKernels<float> kernels{&forward_row<float>, &backward_row<float>};
  return kernels;
}

const LstmRowKernels<double>& lstm_row_kernels_double() {
  static constexpr LstmRowKernels<double> kernels{&forward_row<double>, &backward_row<double>};
  return kernels;
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace wmkernels
