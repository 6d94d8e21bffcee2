// The working-memory math (contract §1.3), written once for host and device code.
//
// One batch row at a time: the memory row is S slots of width D. Slots are
// reached through an accessor `slots(s) -> pointer to D elements`, so the same
// functions read a plain [S, D] block, the implicit ring of a FIFO memory
// (wm_lstm_sequence keeps only the written vectors) or a gradient ring.
//
// The loops over D go through a row-ops policy R (dot, dot3, axpy); the
// default ScalarRowOps is plain loops, usable in CUDA device code; the CPU
// kernels pass a policy built on at::vec::Vectorized (csrc/cpu/vec_row_ops.h).
// Everything else (masking, the all-masked-row rule, softmax and its
// derivative, erase/add and its derivative) lives here only.
#pragma once

#include <stdint.h>

#include <math.h>

#include <wmkernels/lstm_math.h>  // WMK_INLINE

namespace wmkernels {

// exp per element type (the softmax needs it; S values per row).
WMK_INLINE float mem_exp(float x) { return ::expf(x); }
WMK_INLINE double mem_exp(double x) { return ::exp(x); }

// Plain loops over D.
struct ScalarRowOps {
  template <typename T>
  static WMK_INLINE T dot(const T* x, const T* y, int64_t n) {
    T acc = T(0);
    for (int64_t d = 0; d < n; ++d) acc += x[d] * y[d];
    return acc;
  }
  // Σ x y z
  template <typename T>
  static WMK_INLINE T dot3(const T* x, const T* y, const T* z, int64_t n) {
    T acc = T(0);
    for (int64_t d = 0; d < n; ++d) acc += x[d] * y[d] * z[d];
    return acc;
  }
  // y += a x
  template <typename T>
  static WMK_INLINE void axpy(T a, const T* x, T* y, int64_t n) {
    for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
  }
};

// An [S, D] block, row-major.
template <typename T>
struct DenseSlots {
  T* base;
  int64_t D;
  WMK_INLINE T* operator()(int64_t s) const { return base + s * D; }
};

// ---- softmax over the slots ------------------------------------------------

// In place: scores [S] -> attention weights; slots with mask[s] == false (mask
// may be null: all readable) get weight 0. A row with no readable slot gets
// all zeros. Returns whether any slot was readable.
template <typename T>
WMK_INLINE bool masked_softmax(T* scores, const bool* mask, int64_t S) {
  bool any = false;
  T mx = T(0);
  for (int64_t s = 0; s < S; ++s) {
    if (mask != nullptr && !mask[s]) continue;
    if (!any || scores[s] > mx) mx = scores[s];
    any = true;
  }
  if (!any) {
    for (int64_t s = 0; s < S; ++s) scores[s] = T(0);
    return false;
  }
  T sum = T(0);
  for (int64_t s = 0; s < S; ++s) {
    const T p = (mask == nullptr || mask[s]) ? mem_exp(scores[s] - mx) : T(0);
    scores[s] = p;
    sum += p;
  }
  const T inv = T(1) / sum;  // sum >= 1: the max term is exp(0)
  for (int64_t s = 0; s < S; ++s) scores[s] *= inv;
  return true;
}

// Backward of a = softmax(z) restricted to the readable slots (mask[s]; mask
// null: every slot), as the reference's autograd computes it (softmax, then
// multiplied by the mask): g'_s = g_s on readable slots and g_s · 0 on the
// others (NaN where g_s is not finite), dz_s = a_s (g'_s − Σ_k a_k g'_k) on
// readable slots, exactly 0 on masked ones and throughout a row with nothing
// readable. Every product is taken, zero weights included: a slot with weight
// 0 and a non-finite g (a -inf score from an infinite memory slot) makes the
// row's dz NaN, as in the reference. g may alias dz.
//
// The difference is taken about g'_0 (when finite), using Σ_k a_k = 1:
// dz_s = a_s ((g'_s − g'_0) − Σ_k a_k (g'_k − g'_0)). Where the slots are
// nearly equal the g's are too and dz is a difference of nearly equal terms;
// this way its rounding error scales with their spread, not their size (equal
// slots give exactly 0, the true gradient, where the plain form leaves
// ε·|g|, which the weight gradient of the query sums over every step).
template <typename T>
WMK_INLINE void softmax_backward(const T* attn, const T* g, const bool* mask, int64_t S, T* dz) {
  bool any = mask == nullptr;
  const T first = (mask == nullptr || mask[0]) ? g[0] : g[0] * T(0);
  const T ref = first - first == T(0) ? first : T(0);  // g'_0 if finite
  T ag = T(0);
  for (int64_t s = 0; s < S; ++s) {
    const bool readable = mask == nullptr || mask[s];
    any = any || readable;
    ag += attn[s] * ((readable ? g[s] : g[s] * T(0)) - ref);
  }
  for (int64_t s = 0; s < S; ++s) {
    dz[s] = any && (mask == nullptr || mask[s]) ? attn[s] * ((g[s] - ref) - ag) : T(0);
  }
}

// ---- read: r = Σ_s softmax_s(scale · M_s·q) M_s ------------------------------

// attn [S], r [D] out. mask [S] or null.
template <typename T, typename R = ScalarRowOps, typename Slots>
WMK_INLINE void read_row(const Slots& M, const T* q, const bool* mask, T scale,
                         int64_t S, int64_t D, T* attn, T* r) {
  for (int64_t s = 0; s < S; ++s) {
    attn[s] = (mask == nullptr || mask[s]) ? scale * R::dot(M(s), q, D) : T(0);
  }
  masked_softmax(attn, mask, S);
  // Every slot, weight 0 included, as Σ_s attn_s M_s is in IEEE arithmetic:
  // an inf or NaN in the memory gives NaN in r, as in the reference.
  for (int64_t d = 0; d < D; ++d) r[d] = T(0);
  for (int64_t s = 0; s < S; ++s) R::axpy(attn[s], M(s), r, D);
}

// Backward of read_row. In: grad_r [D], grad_attn [S] (null: zero), the
// forward's attn [S], M, q, mask [S] (null: every slot readable). Out: grad_q
// [D] (overwritten); grad_M slots are ACCUMULATED into (dM(s) += ...), so
// callers chain other contributions. work [S] is scratch. Every slot takes
// part, weight 0 included, in IEEE arithmetic as in the reference (masked
// slots get a score gradient of exactly 0, see softmax_backward).
template <typename T, typename R = ScalarRowOps, typename Slots, typename GradSlots>
WMK_INLINE void read_backward_row(const T* grad_r, const T* grad_attn,
                                  const T* attn, const Slots& M, const T* q,
                                  const bool* mask, T scale, int64_t S, int64_t D,
                                  const GradSlots& dM, T* grad_q, T* work) {
  for (int64_t s = 0; s < S; ++s) {
    work[s] = R::dot(grad_r, M(s), D) + (grad_attn ? grad_attn[s] : T(0));
  }
  softmax_backward(attn, work, mask, S, work);  // work = d(scores)
  for (int64_t d = 0; d < D; ++d) grad_q[d] = T(0);
  for (int64_t s = 0; s < S; ++s) {
    const T dscore = scale * work[s];
    R::axpy(dscore, M(s), grad_q, D);
    R::axpy(attn[s], grad_r, dM(s), D);
    R::axpy(dscore, q, dM(s), D);
  }
}

// ---- FIFO shift-write: M_new[s] = M[s+1] (s < S-1), M_new[S-1] = v ---------

template <typename T, typename Slots, typename OutSlots>
WMK_INLINE void shift_write_row(const Slots& M, const T* v, int64_t S, int64_t D,
                                const OutSlots& out) {
  for (int64_t s = 0; s + 1 < S; ++s) {
    const T* src = M(s + 1);
    T* dst = out(s);
    for (int64_t d = 0; d < D; ++d) dst[d] = src[d];
  }
  T* last = out(S - 1);
  for (int64_t d = 0; d < D; ++d) last[d] = v[d];
}

// grad_M[0] = 0, grad_M[s] = grad_new[s-1]; grad_v = grad_new[S-1].
template <typename T, typename Slots, typename OutSlots>
WMK_INLINE void shift_write_backward_row(const Slots& grad_new, int64_t S, int64_t D,
                                         const OutSlots& grad_M, T* grad_v) {
  const T* last = grad_new(S - 1);
  for (int64_t d = 0; d < D; ++d) grad_v[d] = last[d];
  for (int64_t s = S - 1; s >= 1; --s) {
    const T* src = grad_new(s - 1);
    T* dst = grad_M(s);
    for (int64_t d = 0; d < D; ++d) dst[d] = src[d];
  }
  T* first = grad_M(0);
  for (int64_t d = 0; d < D; ++d) first[d] = T(0);
}

// ---- gated erase/add write: M_new = M ⊙ (1 − w eᵀ) + w aᵀ ----------------------

// One element: m (1 − w e) + w a, in that form: the shorter m − w (m e − a)
// gives inf − inf = NaN for an infinite m where the reference gives inf.
template <typename T>
WMK_INLINE T erase_add(const T& m, const T& w, const T& e, const T& a) {
  return m * (T(1) - w * e) + w * a;
}

// Writes out(s) for every slot; out may alias M.
template <typename T, typename Slots, typename OutSlots>
WMK_INLINE void write_row(const Slots& M, const T* w, const T* e, const T* a,
                          int64_t S, int64_t D, const OutSlots& out) {
  for (int64_t s = 0; s < S; ++s) {
    const T* m = M(s);
    T* o = out(s);
    const T ws = w[s];
    for (int64_t d = 0; d < D; ++d) o[d] = erase_add(m[d], ws, e[d], a[d]);
  }
}

// Backward of write_row. In: g = grad of M_new, M (the memory before the
// write), w, e, a. Out: grad_M(s) (may alias g: updated in place), grad_w [S]
// (overwritten), grad_e and grad_a [D] ACCUMULATED into.
//   dM = g (1 − w e),  dw_s = Σ_d g (a − m e),  de_d = −Σ_s g w m,  da_d = Σ_s g w.
template <typename T, typename R = ScalarRowOps, typename GSlots, typename Slots,
          typename OutSlots>
WMK_INLINE void write_backward_row(const GSlots& g, const Slots& M, const T* w,
                                   const T* e, const T* a, int64_t S, int64_t D,
                                   const OutSlots& grad_M, T* grad_w, T* grad_e,
                                   T* grad_a) {
  for (int64_t s = 0; s < S; ++s) {
    const T* gs = g(s);
    const T* m = M(s);
    const T ws = w[s];
    grad_w[s] = R::dot(gs, a, D) - R::dot3(gs, m, e, D);
    R::axpy(ws, gs, grad_a, D);
    T* dm = grad_M(s);
    for (int64_t d = 0; d < D; ++d) {
      const T gd = gs[d];
      grad_e[d] -= ws * gd * m[d];
      dm[d] = gd - ws * gd * e[d];
    }
  }
}

}  // namespace wmkernels
