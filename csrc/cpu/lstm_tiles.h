// Register-blocked tile kernels of the persistent LSTM loops
// (persistent_lstm.cpp), compiled once per instruction set
// (csrc/cpu/isa/lstm_tiles_isa.cpp) like the row kernels of lstm_rows.h.
//
// Hidden units are grouped in panels of U = units consecutive units (one SIMD
// vector: 16 floats with AVX-512, 8 with AVX2). A thread owns panels
// [p0, p1) and packs its slice of the weights once per call:
//   gate-row panels (w_ih, w_hh for the forward): panel p, row k holds the
//     four gates' weights of the panel's units, [i | f | g | o] x U, so one
//     tile computes all four gates of its units and the pointwise cell step
//     runs right after it with no exchange;
//   unit-column panels (w_hh for the backward): panel p, row k (k < 4H)
//     holds w_hh[k, panel's units], for grad_h = d_gates w_hh.
// Units past H are zero padding and are never stored.
//
// Every output element is one fused multiply-add chain over k = 0, 1, ...
// from 0, then the other terms added in a fixed order: its bits do not depend
// on the tile it fell in, so not on the thread count or the partition.
#pragma once

#include <cstdint>

namespace wmkernels {
namespace cpu {

// One forward step of the units of panels [p0, p1), all B rows.
template <typename T>
struct ForwardStep {
  int64_t B, H;
  const T* w;       // the thread's packed w_hh gate-row panels (panel p0 first)
  const T* h_prev;  // [B, H] h_{t-1}
  T* pre;           // [B, 4H] pre-activations from the input projection; the
                    // activated gates are written back when save_act
  bool save_act;
  const T* c_prev;  // [B, H]
  T* c;             // [B, H] c_t; may alias c_prev
  T* h;             // [B, H] h_t, the state the next step reads
  T* y;             // [B, H] output y_t when it differs from h (lengths), or nullptr
  const int64_t* lengths;  // [B] or nullptr; row b is frozen at t >= lengths[b]
  int64_t t;
};

// One backward step of the units of panels [p0, p1), all B rows. With
// act == nullptr it is the final step: grad_h += dg_next w_hh (grad_h0).
template <typename T>
struct BackwardStep {
  int64_t B, H;
  const T* w;        // the thread's packed w_hh unit-column panels
  const T* dg_next;  // [B, 4H] d_gates of step t + 1 (all units), nullptr at t = T - 1
  const T* act;      // [B, 4H] activated gates of step t
  const T* c_prev;   // [B, H]
  const T* c;        // [B, H]
  const T* grad_y;   // [B, H] gradient of y_t
  T* grad_h;         // [B, H] gradient of h_t not yet in dg_next (grad_h_n at the
                     // start); 0 after a row runs, carried while it is frozen
  T* grad_c;         // [B, H] in: of c_t, out: of c_{t-1}
  T* dg;             // [B, 4H] out: d_gates of step t
  const int64_t* lengths;
  int64_t t;
};

template <typename T>
struct LstmTileKernels {
  int64_t units;  // U
  // w [4H, K] -> gate-row panels [p0, p1) (size (p1 - p0) * K * 4U).
  void (*pack_gate_rows)(const T* w, int64_t H, int64_t K, int64_t p0, int64_t p1, T* out);
  // a [M, K] (rows lda apart) -> out[m, g*H + j] = Σ_k a[m, k] w[g*H + j, k]
  // (+ bias[g*H + j]) for the units of panels [p0, p1); out [M, 4H].
  void (*project)(const T* a, int64_t M, int64_t K, int64_t lda, const T* packed,
                  const T* bias, int64_t H, int64_t p0, int64_t p1, T* out);
  void (*forward_step)(const ForwardStep<T>& s, int64_t p0, int64_t p1);
  // w_hh [4H, H] -> unit-column panels [p0, p1) (size (p1 - p0) * 4H * U).
  void (*pack_unit_columns)(const T* w_hh, int64_t H, int64_t p0, int64_t p1, T* out);
  void (*backward_step)(const BackwardStep<T>& s, int64_t p0, int64_t p1);
  // Rows [m0, m1) of c [M, N] (row stride ldc) = A B with a(m, k) =
  // a[m*sam + k*sak] and b [K, N] (row stride ldb); each element one FMA
  // chain over k = 0..K-1.
  void (*gemm_rows)(const T* a, int64_t sam, int64_t sak, const T* b, int64_t ldb, int64_t N,
                    int64_t K, T* c, int64_t ldc, int64_t m0, int64_t m1);
};

// The kernels of the instruction set in use (cpu_capability(), lstm_rows.h).
template <typename T>
const LstmTileKernels<T>& lstm_tile_kernels();

#define WMK_DECLARE_TILE_KERNELS(ISA)                      \
  namespace ISA {                                          \
  const LstmTileKernels<float>& lstm_tile_kernels_float();   \
  const LstmTileKernels<double>& lstm_tile_kernels_double(); \
  }
WMK_DECLARE_TILE_KERNELS(DEFAULT)
WMK_DECLARE_TILE_KERNELS(AVX2)
WMK_DECLARE_TILE_KERNELS(AVX512)
#undef WMK_DECLARE_TILE_KERNELS

}  // namespace cpu
}  // namespace wmkernels
