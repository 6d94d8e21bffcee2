// The bfloat16 tile kernels of the persistent LSTM forward (persistent_lstm.cpp):
// bf16 weights and h, products summed in fp32 by AVX512_BF16's vdpbf16ps,
// cell state and the pointwise step in fp32. Compiled once, with AVX-512 and
// avx512_bf16 (csrc/cpu/bf16/lstm_tiles_bf16.cpp), and used only where the
// CPU has them (cpu_capability() == "avx512_bf16").
//
// Hidden units are grouped in panels of U = 16 units (one fp32 vector) as in
// lstm_tiles.h. vdpbf16ps adds to each fp32 lane the products of one pair of
// bf16 elements, so the packed weights interleave pairs of k: panel p holds,
// for each k pair kp = 0 .. ceil(K/2)-1 and gate g, one 512-bit vector
// [w(u=0, 2kp), w(0, 2kp+1), w(1, 2kp), w(1, 2kp+1), ...]; an odd K's last pair
// and the units past H are zeros. The A operand (h or x) is broadcast one
// pair at a time (an odd K's last element alone, with a zero partner, so no
// element past the row is read).
//
// Every output element is one chain of vdpbf16ps over kp = 0, 1, ... from 0,
// then the other terms added in a fixed order: its bits do not depend on the
// tile it fell in, so not on the thread count or the partition.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>

namespace wmkernels {
namespace cpu {

// One forward step of the units of panels [p0, p1), all B rows (the fp32
// ForwardStep of lstm_tiles.h with h in bf16).
struct Bf16ForwardStep {
  int64_t B, H;
  const c10::BFloat16* w;       // the thread's packed w_hh panels (panel p0 first)
  const c10::BFloat16* h_prev;  // [B, H] h_{t-1}
  // Either the input projection ran before (x == nullptr): pre [B, 4H] holds
  // its pre-activations (biases in), the activated gates are written back
  // when save_act. Or it is fused into the step: each sum runs over x_t w_ih
  // (w_x: the thread's packed w_ih panels), then h w_hh; bias [4H] float32 or
  // nullptr is added; pre is where save_act writes the activated gates
  // (nullptr without save_act).
  const c10::BFloat16* x;       // [B, I] x_t, or nullptr
  int64_t I;
  const c10::BFloat16* w_x;
  const float* bias;
  float* pre;
  bool save_act;
  const float* c_prev;          // [B, H]
  float* c;                     // [B, H] c_t; may alias c_prev
  c10::BFloat16* h;             // [B, H] h_t, rounded to bf16: the state the next step reads
  c10::BFloat16* y;             // [B, H] output y_t when it differs from h (lengths), or nullptr
  const int64_t* lengths;       // [B] or nullptr; row b is frozen at t >= lengths[b]
  int64_t t;
};

struct LstmBf16Kernels {
  int64_t units;  // U = 16
  // Elements of one packed panel of a [4H, K] weight: ceil(K/2) * 4 * 2U.
  int64_t (*panel_size)(int64_t K);
  // w [4H, K] -> panels [p0, p1) (size (p1 - p0) * panel_size(K)).
  void (*pack_gate_rows)(const c10::BFloat16* w, int64_t H, int64_t K, int64_t p0, int64_t p1,
                         c10::BFloat16* out);
  // a [M, K] (rows lda apart) -> out[m, g*H + j] = Σ_k a[m, k] w[g*H + j, k]
  // (+ bias[g*H + j]) in fp32 for the units of panels [p0, p1); out [M, 4H].
  void (*project)(const c10::BFloat16* a, int64_t M, int64_t K, int64_t lda,
                  const c10::BFloat16* packed, const float* bias, int64_t H, int64_t p0,
                  int64_t p1, float* out);
  void (*forward_step)(const Bf16ForwardStep& s, int64_t p0, int64_t p1);
};

// The kernels, or nullptr where this build or CPU lacks avx512_bf16 (or
// WMKERNELS_CPU_CAPABILITY caps the instruction set below it).
const LstmBf16Kernels* lstm_bf16_kernels();

#if defined(WMK_HAVE_AVX512_BF16)
namespace AVX512_BF16 {
const LstmBf16Kernels& lstm_bf16_kernels();
}
#endif

}  // namespace cpu
}  // namespace wmkernels
