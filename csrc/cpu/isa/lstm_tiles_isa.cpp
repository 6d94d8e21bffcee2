// The tile kernels of lstm_tiles.h, compiled once per instruction set (see
// lstm_rows_isa.cpp for why no std:: or shared inline helper is called here).
//
// A tile is MR batch rows x NP panels x G vectors per panel row (G = 4 gates
// for the forward and the input projection, 1 for the backward): MR·NP·G
// accumulators in registers, the A operand (h, x or d_gates) broadcast one
// element at a time, the packed weights loaded one vector at a time, k
// innermost. The budget is 24 accumulators with 32 vector registers
// (AVX-512), 12 with 16 (AVX2 and the default build).
#include "cpu/lstm_tiles.h"

#include <type_traits>

#include "cpu/tile_rows.h"
#include "cpu/vec_math.h"

namespace wmkernels {
namespace cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

#define WMK_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename T>
constexpr int kAccumulators = Vectorized<T>::size() * sizeof(T) >= 64 ? 24 : 12;

constexpr int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Rows of a full tile (6 or 3), and panels per tile for a tile of MR rows.
template <typename T>
constexpr int kMaxRows = kAccumulators<T> / 4;
template <typename T, int G>
constexpr int panels_for(int MR) {
  return clamp_int(kAccumulators<T> / (MR * G), 1, G == 4 ? 4 : 8);
}

template <typename T>
WMK_ALWAYS_INLINE Vectorized<T> load_n(const T* p, int64_t n) {
  return n == Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, n);
}

template <typename T>
WMK_ALWAYS_INLINE void store_n(const Vectorized<T>& v, T* p, int64_t n) {
  if (n == Vectorized<T>::size()) {
    v.store(p);
  } else {
    v.store(p, static_cast<int>(n));
  }
}

// acc[r][q][g] = Σ_k a[r*lda + k] w[q*panel_stride + k*G*U + g*U + 0..U-1].
template <typename T, int MR, int NP, int G>
WMK_ALWAYS_INLINE void accumulate(const T* a, int64_t lda, const T* w, int64_t K,
                                  int64_t panel_stride, Vectorized<T> (&acc)[MR][NP][G]) {
  using V = Vectorized<T>;
  constexpr int U = V::size();
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) acc[r][q][g] = V(T(0));
  for (int64_t k = 0; k < K; ++k) {
    V av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) av[r] = V(a[r * lda + k]);
    const T* wk = w + k * G * U;
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q) {
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        const V wv = V::loadu(wk + q * panel_stride + g * U);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) acc[r][q][g] = at::vec::fmadd(av[r], wv, acc[r][q][g]);
      }
    }
  }
}

// ---- packing ----------------------------------------------------------------

template <typename T>
void pack_gate_rows(const T* w, int64_t H, int64_t K, int64_t p0, int64_t p1, T* out) {
  constexpr int64_t U = Vectorized<T>::size();
  for (int64_t p = p0; p < p1; ++p) {
    T* panel = out + (p - p0) * K * 4 * U;
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t u = 0; u < U; ++u) {
        const int64_t j = p * U + u;
        T* dst = panel + g * U + u;
        if (j < H) {
          const T* row = w + (g * H + j) * K;
          for (int64_t k = 0; k < K; ++k) dst[k * 4 * U] = row[k];
        } else {
          for (int64_t k = 0; k < K; ++k) dst[k * 4 * U] = T(0);
        }
      }
    }
  }
}

template <typename T>
void pack_unit_columns(const T* w, int64_t H, int64_t p0, int64_t p1, T* out) {
  constexpr int64_t U = Vectorized<T>::size();
  for (int64_t p = p0; p < p1; ++p) {
    T* panel = out + (p - p0) * 4 * H * U;
    for (int64_t k = 0; k < 4 * H; ++k) {
      for (int64_t u = 0; u < U; ++u) {
        const int64_t j = p * U + u;
        panel[k * U + u] = j < H ? w[k * H + j] : T(0);
      }
    }
  }
}

// ---- input projection ---------------------------------------------------------

template <typename T, int MR, int NP>
WMK_ALWAYS_INLINE void project_tile(const T* a, int64_t K, int64_t lda, const T* w,
                                    const T* bias, int64_t H, int64_t m0, int64_t p,
                                    T* out) {
  using V = Vectorized<T>;
  constexpr int64_t U = V::size();
  V acc[MR][NP][4];
  accumulate<T, MR, NP, 4>(a + m0 * lda, lda, w, K, K * 4 * U, acc);
#pragma GCC unroll 8
  for (int q = 0; q < NP; ++q) {
    const int64_t j0 = (p + q) * U;
    const int64_t n = H - j0 < U ? H - j0 : U;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      T* row = out + (m0 + r) * 4 * H + j0;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        V v = acc[r][q][g];
        if (bias != nullptr) v = v + load_n(bias + g * H + j0, n);
        store_n(v, row + g * H, n);
      }
    }
  }
}

template <typename T, int MR>
void project_rows(const T* a, int64_t M, int64_t K, int64_t lda, const T* packed,
                  const T* bias, int64_t H, int64_t p0, int64_t p1, T* out) {
  constexpr int64_t U = Vectorized<T>::size();
  // Panels outer: one panel (K x 4U) stays in cache while the rows stream.
  for (int64_t p = p0; p < p1; ++p) {
    const T* w = packed + (p - p0) * K * 4 * U;
    int64_t m = 0;
    for (; m + MR <= M; m += MR) project_tile<T, MR, 1>(a, K, lda, w, bias, H, m, p, out);
    with_rows<MR>(M - m, [&](auto rows) {
      project_tile<T, decltype(rows)::value, 1>(a, K, lda, w, bias, H, m, p, out);
    });
  }
}

template <typename T>
void project(const T* a, int64_t M, int64_t K, int64_t lda, const T* packed, const T* bias,
             int64_t H, int64_t p0, int64_t p1, T* out) {
  project_rows<T, kMaxRows<T>>(a, M, K, lda, packed, bias, H, p0, p1, out);
}

// ---- forward step ----------------------------------------------------------------

template <typename T, int MR, int NP>
WMK_ALWAYS_INLINE void forward_tile(const ForwardStep<T>& s, int64_t b0, int64_t p, int64_t p0) {
  using V = Vectorized<T>;
  constexpr int64_t U = V::size();
  const int64_t H = s.H;
  V acc[MR][NP][4];
  accumulate<T, MR, NP, 4>(s.h_prev + b0 * H, H, s.w + (p - p0) * H * 4 * U, H, H * 4 * U, acc);
  // The pointwise step over the tile's rows in a rolled loop (the accumulators
  // go through the stack once): unrolled, six rows of cell math spill
  // registers (measured in the bf16 kernels first, csrc/cpu/bf16/).
#pragma GCC unroll 1
  for (int r = 0; r < MR; ++r) {
    const int64_t b = b0 + r;
    const bool active = s.lengths == nullptr || s.t < s.lengths[b];
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q) {
      const int64_t j0 = (p + q) * U;
      const int64_t n = H - j0 < U ? H - j0 : U;
      T* pre = s.pre + b * 4 * H + j0;
      const T* c_prev = s.c_prev + b * H + j0;
      T* c = s.c + b * H + j0;
      T* h = s.h + b * H + j0;
      if (active) {
        V i, f, g, o, cv, hv;
        lstm_cell_forward_point<V>(acc[r][q][0] + load_n(pre, n), acc[r][q][1] + load_n(pre + H, n),
                                   acc[r][q][2] + load_n(pre + 2 * H, n),
                                   acc[r][q][3] + load_n(pre + 3 * H, n), load_n(c_prev, n), i, f,
                                   g, o, cv, hv);
        if (s.save_act) {
          store_n(i, pre, n);
          store_n(f, pre + H, n);
          store_n(g, pre + 2 * H, n);
          store_n(o, pre + 3 * H, n);
        }
        store_n(cv, c, n);
        store_n(hv, h, n);
        if (s.y != nullptr) store_n(hv, s.y + b * H + j0, n);
      } else {
        if (c != c_prev) store_n(load_n(c_prev, n), c, n);
        store_n(load_n(s.h_prev + b * H + j0, n), h, n);
        if (s.y != nullptr) store_n(V(T(0)), s.y + b * H + j0, n);
      }
    }
  }
}

// Tiles of MR rows at b0 over panels [p0, p1): NP panels at a time, then
// one; s.w holds the thread's panels from panel `first` on.
template <typename T, int MR>
void forward_rows(const ForwardStep<T>& s, int64_t b0, int64_t p0, int64_t p1, int64_t first) {
  constexpr int NP = panels_for<T, 4>(MR);
  int64_t p = p0;
  if constexpr (NP > 1) {
    for (; p + NP <= p1; p += NP) forward_tile<T, MR, NP>(s, b0, p, first);
  }
  for (; p < p1; ++p) forward_tile<T, MR, 1>(s, b0, p, first);
}

template <typename T>
void forward_step(const ForwardStep<T>& s, int64_t p0, int64_t p1) {
  constexpr int MR = kMaxRows<T>;
  static_assert(MR >= 3 && MR <= 6, "tile rows");
  if (s.B >= MR) {
    // Panels outer, rows inner: each panel of the slice is read from cache
    // once per step, h (B x H) stays in L1/L2.
    for (int64_t p = p0; p < p1; ++p) {
      int64_t b = 0;
      for (; b + MR <= s.B; b += MR) forward_rows<T, MR>(s, b, p, p + 1, p0);
      with_rows<MR>(s.B - b, [&](auto rows) {
        forward_rows<T, decltype(rows)::value>(s, b, p, p + 1, p0);
      });
    }
    return;
  }
  // Fewer rows than a tile: one tile of all B rows, several panels wide.
  with_rows<MR>(s.B, [&](auto rows) { forward_rows<T, decltype(rows)::value>(s, 0, p0, p1, p0); });
}

// ---- backward step ---------------------------------------------------------------

template <typename T, int MR, int NP>
WMK_ALWAYS_INLINE void backward_tile(const BackwardStep<T>& s, int64_t b0, int64_t p, int64_t p0) {
  using V = Vectorized<T>;
  constexpr int64_t U = V::size();
  const int64_t H = s.H;
  V acc[MR][NP][1];
  if (s.dg_next != nullptr) {
    accumulate<T, MR, NP, 1>(s.dg_next + b0 * 4 * H, 4 * H, s.w + (p - p0) * 4 * H * U, 4 * H,
                             4 * H * U, acc);
  }
  // Rolled over the rows, as in the forward step.
#pragma GCC unroll 1
  for (int r = 0; r < MR; ++r) {
    const int64_t b = b0 + r;
    const bool active = s.lengths == nullptr || s.t < s.lengths[b];
    // A row frozen at step t + 1 took no step there: its (zero) d_gates meet no
    // w_hh, selected away rather than added (0 · inf in w_hh is NaN).
    const bool next_ran = s.dg_next != nullptr && (s.lengths == nullptr || s.t + 1 < s.lengths[b]);
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q) {
      const int64_t j0 = (p + q) * U;
      const int64_t n = H - j0 < U ? H - j0 : U;
      T* gh = s.grad_h + b * H + j0;
      V total = load_n(gh, n);
      if (next_ran) total = total + acc[r][q][0];
      if (s.act == nullptr || !active) {
        store_n(total, gh, n);
        if (s.act != nullptr) {
          T* d = s.dg + b * 4 * H + j0;
          for (int g = 0; g < 4; ++g) store_n(V(T(0)), d + g * H, n);
        }
        continue;
      }
      const T* a = s.act + b * 4 * H + j0;
      T* gc = s.grad_c + b * H + j0;
      V di, df, dgg, dout, dcp;
      lstm_cell_backward_point<V>(load_n(a, n), load_n(a + H, n), load_n(a + 2 * H, n),
                                  load_n(a + 3 * H, n), load_n(s.c_prev + b * H + j0, n),
                                  load_n(s.c + b * H + j0, n),
                                  total + load_n(s.grad_y + b * H + j0, n), load_n(gc, n), di, df,
                                  dgg, dout, dcp);
      T* d = s.dg + b * 4 * H + j0;
      store_n(di, d, n);
      store_n(df, d + H, n);
      store_n(dgg, d + 2 * H, n);
      store_n(dout, d + 3 * H, n);
      store_n(dcp, gc, n);
      store_n(V(T(0)), gh, n);
    }
  }
}

// Tiles of MR rows at b0 over panels [p0, p1): NP panels at a time, then
// one; s.w holds the thread's panels from panel `first` on.
template <typename T, int MR>
void backward_rows(const BackwardStep<T>& s, int64_t b0, int64_t p0, int64_t p1, int64_t first) {
  constexpr int NP = panels_for<T, 1>(MR);
  int64_t p = p0;
  for (; p + NP <= p1; p += NP) backward_tile<T, MR, NP>(s, b0, p, first);
  for (; p < p1; ++p) backward_tile<T, MR, 1>(s, b0, p, first);
}

template <typename T>
void backward_step(const BackwardStep<T>& s, int64_t p0, int64_t p1) {
  constexpr int MR = kMaxRows<T>;
  constexpr int NP = panels_for<T, 1>(MR);
  if (s.B >= MR) {
    // Groups of NP panels outer, rows inner: a group's panels are read from
    // cache once per step, d_gates (B x 4H) stays in L1/L2.
    for (int64_t p = p0; p < p1; p += NP) {
      const int64_t end = p + NP < p1 ? p + NP : p1;
      int64_t b = 0;
      for (; b + MR <= s.B; b += MR) backward_rows<T, MR>(s, b, p, end, p0);
      with_rows<MR>(s.B - b, [&](auto rows) {
        backward_rows<T, decltype(rows)::value>(s, b, p, end, p0);
      });
    }
    return;
  }
  with_rows<MR>(s.B, [&](auto rows) { backward_rows<T, decltype(rows)::value>(s, 0, p0, p1, p0); });
}


// ---- plain GEMM (weight gradients) -----------------------------------------------

// C[m0.., n0..] tile of MR rows x NP vectors (the last one n_last wide):
// acc = (first ? 0 : C), acc += Σ_{k in [k0, k1)} a(m, k) B[k, n], stored back.
template <typename T, int MR, int NP>
WMK_ALWAYS_INLINE void gemm_tile(const T* a, int64_t sam, int64_t sak, const T* b, int64_t ldb,
                                 int64_t k0, int64_t k1, T* c, int64_t ldc, int64_t m0,
                                 int64_t n0, int64_t n_last) {
  using V = Vectorized<T>;
  constexpr int64_t U = V::size();
  V acc[MR][NP];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q)
      acc[r][q] = k0 == 0 ? V(T(0))
                          : load_n(c + (m0 + r) * ldc + n0 + q * U, q + 1 == NP ? n_last : U);
  for (int64_t k = k0; k < k1; ++k) {
    V av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) av[r] = V(a[(m0 + r) * sam + k * sak]);
    const T* bk = b + k * ldb + n0;
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q) {
      const V bv = q + 1 == NP && n_last != U ? V::loadu(bk + q * U, n_last) : V::loadu(bk + q * U);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) acc[r][q] = at::vec::fmadd(av[r], bv, acc[r][q]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < NP; ++q)
      store_n(acc[r][q], c + (m0 + r) * ldc + n0 + q * U, q + 1 == NP ? n_last : U);
}

// Rows [m0, m1) of C [M, N] = A B, a(m, k) = a[m*sam + k*sak], B row-major
// [K, N]. Each element is one FMA chain over k = 0..K-1 (blocked in k, the
// partial sums go through C exactly), whatever the rows given.
template <typename T>
void gemm_rows(const T* a, int64_t sam, int64_t sak, const T* b, int64_t ldb, int64_t N,
               int64_t K, T* c, int64_t ldc, int64_t m0, int64_t m1) {
  constexpr int64_t U = Vectorized<T>::size();
  constexpr int MR = kAccumulators<T> / 4;
  constexpr int64_t kKc = 256;
  if (K == 0) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = 0; n < N; ++n) c[m * ldc + n] = T(0);
    return;
  }
  for (int64_t k0 = 0; k0 < K; k0 += kKc) {
    const int64_t k1 = k0 + kKc < K ? k0 + kKc : K;
    for (int64_t n0 = 0; n0 < N; n0 += 4 * U) {
      const int64_t left = N - n0;
      if (left >= 4 * U) {
        int64_t m = m0;
        for (; m + MR <= m1; m += MR) gemm_tile<T, MR, 4>(a, sam, sak, b, ldb, k0, k1, c, ldc, m, n0, U);
        with_rows<MR>(m1 - m, [&](auto rows) {
          gemm_tile<T, decltype(rows)::value, 4>(a, sam, sak, b, ldb, k0, k1, c, ldc, m, n0, U);
        });
      } else {
        // The last < 4U columns one vector at a time (the last one partial).
        for (int64_t nv = n0; nv < N; nv += U) {
          const int64_t w = N - nv < U ? N - nv : U;
          int64_t m = m0;
          for (; m + MR <= m1; m += MR) gemm_tile<T, MR, 1>(a, sam, sak, b, ldb, k0, k1, c, ldc, m, nv, w);
          with_rows<MR>(m1 - m, [&](auto rows) {
            gemm_tile<T, decltype(rows)::value, 1>(a, sam, sak, b, ldb, k0, k1, c, ldc, m, nv, w);
          });
        }
      }
    }
  }
}

template <typename T>
constexpr LstmTileKernels<T> kKernels{Vectorized<T>::size(), &pack_gate_rows<T>, &project<T>,
                                      &forward_step<T>, &pack_unit_columns<T>,
                                      &backward_step<T>, &gemm_rows<T>};

}  // namespace

const LstmTileKernels<float>& lstm_tile_kernels_float() { return kKernels<float>; }
const LstmTileKernels<double>& lstm_tile_kernels_double() { return kKernels<double>; }

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace wmkernels
