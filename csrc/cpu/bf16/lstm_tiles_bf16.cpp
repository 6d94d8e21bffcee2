// The bfloat16 tile kernels of lstm_tiles_bf16.h. Compiled once, with the
// AVX-512 flags plus -mavx512bf16 and CPU_CAPABILITY=AVX512_BF16 (setup.py,
// CMakeLists.txt), so every inline function of ATen's vector headers lands in
// a namespace of its own and no bf16 instruction leaks into the AVX-512 copy.
//
// A tile is MR batch rows x NP panels x 4 gates of fp32 accumulators (at most
// 24 of the 32 vector registers), the A operand (h or x) broadcast one bf16
// pair at a time, the packed weights loaded one vector (16 units x 2 k) at a
// time, k pairs innermost; the pointwise cell step runs in fp32 on the
// accumulators (vec_math.h, the fp32 kernels' formulas), h is rounded to bf16
// (round to nearest even) when stored.
#include "cpu/lstm_tiles_bf16.h"

#include <immintrin.h>

#include "cpu/tile_rows.h"
#include "cpu/vec_math.h"

namespace wmkernels {
namespace cpu {
namespace CPU_CAPABILITY {
namespace {

using V = at::vec::Vectorized<float>;
static_assert(V::size() == 16, "the bf16 kernels are AVX-512 code");

#define WMK_ALWAYS_INLINE inline __attribute__((always_inline))

constexpr int64_t U = 16;
constexpr int64_t kPairVec = 2 * U;  // bf16 elements of one packed vector
constexpr int kMaxRows = 6;          // 6 rows x 4 gates = 24 accumulators

constexpr int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
constexpr int panels_for(int MR) { return clamp_int(24 / (MR * 4), 1, 4); }

int64_t panel_size(int64_t K) { return (K + 1) / 2 * 4 * kPairVec; }

WMK_ALWAYS_INLINE const uint16_t* bits(const c10::BFloat16* p) {
  return reinterpret_cast<const uint16_t*>(p);
}
WMK_ALWAYS_INLINE uint16_t* bits(c10::BFloat16* p) { return reinterpret_cast<uint16_t*>(p); }

// Lanes [0, n) of a vector of U.
WMK_ALWAYS_INLINE __mmask16 lanes(int64_t n) {
  return n >= U ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

WMK_ALWAYS_INLINE V load_f32(const float* p, __mmask16 m) { return V(_mm512_maskz_loadu_ps(m, p)); }
WMK_ALWAYS_INLINE void store_f32(const V& v, float* p, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }

// fp32 -> bf16, round to nearest even (NaN stays NaN), stored to lanes m.
WMK_ALWAYS_INLINE void store_bf16(const V& v, uint16_t* p, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}

WMK_ALWAYS_INLINE void dot_pair(__m512& acc, const __m512i& a, const __m512i& w) {
  acc = _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)w);
}

template <int MR, int NP>
WMK_ALWAYS_INLINE void zero(__m512 (&acc)[MR][NP][4]) {
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) acc[r][q][g] = _mm512_setzero_ps();
}

// acc[r][q][g] += Σ_k a[r*lda + k] w(panel q, gate g, k) for the packed panels
// at w, panel_stride apart: one vdpbf16ps chain over the k pairs.
template <int MR, int NP>
WMK_ALWAYS_INLINE void add_products(const uint16_t* a, int64_t lda, const uint16_t* w, int64_t K,
                                    int64_t panel_stride, __m512 (&acc)[MR][NP][4]) {
  const int64_t pairs = K / 2;
  auto step = [&](int64_t kp, const __m512i (&av)[MR]) __attribute__((always_inline)) {
    const uint16_t* wk = w + kp * 4 * kPairVec;
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m512i wv = _mm512_loadu_si512(wk + q * panel_stride + g * kPairVec);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) dot_pair(acc[r][q][g], av[r], wv);
      }
    }
  };
  for (int64_t kp = 0; kp < pairs; ++kp) {
    __m512i av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      uint32_t v;
      __builtin_memcpy(&v, a + r * lda + 2 * kp, sizeof(v));
      av[r] = _mm512_set1_epi32(static_cast<int>(v));
    }
    step(kp, av);
  }
  if (K & 1) {  // the last element alone, its partner zero
    __m512i av[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) av[r] = _mm512_set1_epi32(a[r * lda + K - 1]);
    step(pairs, av);
  }
}

template <int MR, int NP>
WMK_ALWAYS_INLINE void accumulate(const uint16_t* a, int64_t lda, const uint16_t* w, int64_t K,
                                  int64_t panel_stride, __m512 (&acc)[MR][NP][4]) {
  zero(acc);
  add_products(a, lda, w, K, panel_stride, acc);
}

// ---- packing ----------------------------------------------------------------

void pack_gate_rows(const c10::BFloat16* w_in, int64_t H, int64_t K, int64_t p0, int64_t p1,
                    c10::BFloat16* out_in) {
  const uint16_t* w = bits(w_in);
  uint16_t* out = bits(out_in);
  const int64_t pairs = (K + 1) / 2;
  for (int64_t p = p0; p < p1; ++p) {
    uint16_t* panel = out + (p - p0) * panel_size(K);
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t u = 0; u < U; ++u) {
        const int64_t j = p * U + u;
        uint16_t* dst = panel + g * kPairVec + 2 * u;
        for (int64_t kp = 0; kp < pairs; ++kp) dst[kp * 4 * kPairVec] = dst[kp * 4 * kPairVec + 1] = 0;
        if (j >= H) continue;
        const uint16_t* row = w + (g * H + j) * K;
        for (int64_t k = 0; k < K; ++k) dst[(k / 2) * 4 * kPairVec + (k & 1)] = row[k];
      }
    }
  }
}

// ---- input projection ---------------------------------------------------------

template <int MR>
WMK_ALWAYS_INLINE void project_tile(const uint16_t* a, int64_t K, int64_t lda, const uint16_t* w,
                                    const float* bias, int64_t H, int64_t m0, int64_t p,
                                    float* out) {
  __m512 acc[MR][1][4];
  accumulate<MR, 1>(a + m0 * lda, lda, w, K, 0, acc);
  const int64_t j0 = p * U;
  const __mmask16 m = lanes(H - j0);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* row = out + (m0 + r) * 4 * H + j0;
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      V v(acc[r][0][g]);
      if (bias != nullptr) v = v + load_f32(bias + g * H + j0, m);
      store_f32(v, row + g * H, m);
    }
  }
}

void project(const c10::BFloat16* a_in, int64_t M, int64_t K, int64_t lda,
             const c10::BFloat16* packed, const float* bias, int64_t H, int64_t p0, int64_t p1,
             float* out) {
  const uint16_t* a = bits(a_in);
  // Panels outer: one panel stays in cache while the rows stream.
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* w = bits(packed) + (p - p0) * panel_size(K);
    int64_t m = 0;
    for (; m + kMaxRows <= M; m += kMaxRows) project_tile<kMaxRows>(a, K, lda, w, bias, H, m, p, out);
    with_rows<kMaxRows>(M - m, [&](auto rows) {
      project_tile<decltype(rows)::value>(a, K, lda, w, bias, H, m, p, out);
    });
  }
}

// ---- forward step ----------------------------------------------------------------

// The pointwise step runs over the tile's rows in a rolled loop (the
// accumulators go through the stack once): unrolled, the six rows' cell math
// spilled registers and ran slower (measured, 1 thread, T=256 B=16 I=H=256:
// 29.4 -> 25.6 ms for the whole call).
template <int MR, int NP>
WMK_ALWAYS_INLINE void forward_tile(const Bf16ForwardStep& s, int64_t b0, int64_t p, int64_t p0) {
  const int64_t H = s.H, stride = panel_size(H);
  __m512 acc[MR][NP][4];
  zero(acc);
  if (s.x != nullptr) {  // the input projection fused in: x_t w_ih, then h w_hh
    const int64_t x_stride = panel_size(s.I);
    add_products(bits(s.x) + b0 * s.I, s.I, bits(s.w_x) + (p - p0) * x_stride, s.I, x_stride, acc);
  }
  add_products(bits(s.h_prev) + b0 * H, H, bits(s.w) + (p - p0) * stride, H, stride, acc);
#pragma GCC unroll 1
  for (int r = 0; r < MR; ++r) {
    const int64_t b = b0 + r;
    const bool active = s.lengths == nullptr || s.t < s.lengths[b];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      const int64_t j0 = (p + q) * U;
      const __mmask16 m = lanes(H - j0);
      float* pre = s.pre != nullptr ? s.pre + b * 4 * H + j0 : nullptr;
      const float* added = s.x != nullptr ? s.bias + j0 : pre;  // nullptr: no bias
      const float* c_prev = s.c_prev + b * H + j0;
      float* c = s.c + b * H + j0;
      uint16_t* h = bits(s.h) + b * H + j0;
      uint16_t* y = s.y != nullptr ? bits(s.y) + b * H + j0 : nullptr;
      if (active) {
        V gates[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          gates[k] = V(acc[r][q][k]);
          if (added != nullptr) gates[k] = gates[k] + load_f32(added + k * H, m);
        }
        V i, f, g, o, cv, hv;
        lstm_cell_forward_point<V>(gates[0], gates[1], gates[2], gates[3], load_f32(c_prev, m), i,
                                   f, g, o, cv, hv);
        if (s.save_act) {
          store_f32(i, pre, m);
          store_f32(f, pre + H, m);
          store_f32(g, pre + 2 * H, m);
          store_f32(o, pre + 3 * H, m);
        }
        store_f32(cv, c, m);
        store_bf16(hv, h, m);
        if (y != nullptr) store_bf16(hv, y, m);
      } else {
        if (c != c_prev) store_f32(load_f32(c_prev, m), c, m);
        _mm256_mask_storeu_epi16(h, m, _mm256_maskz_loadu_epi16(m, bits(s.h_prev) + b * H + j0));
        if (y != nullptr) _mm256_mask_storeu_epi16(y, m, _mm256_setzero_si256());
      }
    }
  }
}

// Tiles of MR rows at b0 over panels [p0, p1): NP panels at a time, then one;
// s.w holds the thread's panels from panel `first` on.
template <int MR>
void forward_rows(const Bf16ForwardStep& s, int64_t b0, int64_t p0, int64_t p1, int64_t first) {
  constexpr int NP = panels_for(MR);
  int64_t p = p0;
  if constexpr (NP > 1) {
    for (; p + NP <= p1; p += NP) forward_tile<MR, NP>(s, b0, p, first);
  }
  for (; p < p1; ++p) forward_tile<MR, 1>(s, b0, p, first);
}

void forward_step(const Bf16ForwardStep& s, int64_t p0, int64_t p1) {
  if (s.B >= kMaxRows) {
    // Panels outer, rows inner: each panel of the slice is read from cache
    // once per step, h (B x H) stays in L1/L2.
    for (int64_t p = p0; p < p1; ++p) {
      int64_t b = 0;
      for (; b + kMaxRows <= s.B; b += kMaxRows) forward_rows<kMaxRows>(s, b, p, p + 1, p0);
      with_rows<kMaxRows>(s.B - b, [&](auto rows) {
        forward_rows<decltype(rows)::value>(s, b, p, p + 1, p0);
      });
    }
    return;
  }
  // Fewer rows than a tile: one tile of all B rows, several panels wide.
  with_rows<kMaxRows>(s.B, [&](auto rows) { forward_rows<decltype(rows)::value>(s, 0, p0, p1, p0); });
}

constexpr LstmBf16Kernels kKernels{U, &panel_size, &pack_gate_rows, &project, &forward_step};

}  // namespace

const LstmBf16Kernels& lstm_bf16_kernels() { return kKernels; }

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace wmkernels
