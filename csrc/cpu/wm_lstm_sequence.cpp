// CPU forward and backward of wm_lstm_sequence (contract §1.4), the time loop in
// C++. Per step, the matrix products run on the register-tiled kernels of
// tile_mm.h (weights transposed once per call, buffers allocated once per
// call), and the per-row work (read,
// cell, write) runs over batch rows with at::parallel_for: the vectorized
// LSTM rows of lstm_rows.h (the math of wmkernels/lstm_math.h) and the memory
// math of wmkernels/memory_math.h.
//
// One weight matrix Wcat = [w_hh; w_q; w_v; w_e] [N, H] (N = 4H + D + E) serves
// both directions: h_t Wcatᵀ gives the recurrent gate term and the query of
// step t+1 AND the value (and erase) pre-activations of step t, in one product
// per step; backward, the gradient of h_t is [dG_{t+1}, dq_{t+1}, dve_t] Wcat in
// one product, and all weight gradients of Wcat come from one product at the
// end, Dallᵀ [h0; h_1..h_T], where Dall [T+1, B, N] stacks those per-step rows
// (h_t and r_t are read back from the output y).
//
// Memory (see wm_lstm_sequence.h): fifo keeps no memory at all besides M0
// and the written vectors v_t: slot s of the memory before step t (t writes
// done) is M0[t+s] if t+s < S, else v_{t+s-S}. Gated keeps M after every K
// steps and recomputes the K states of a segment in backward from the saved
// read weights, erase and add vectors (pointwise work, no matrix product).
// Rows past their length keep h, c and M (no further writes) and output 0.
//
// Capacity (optional, int64 [T, B] in [1, S]): row b at step t reads only its
// c = capacity[t, b] active slots, fifo the last c (slots S-c..S-1, the shift
// runs as ever), gated the first c, which alone the gated write touches; the
// loops run over those c slots, so a row's read/write cost follows c, not S.
#include "wm_lstm_sequence.h"

#include <cmath>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sigmoid_cpu_dispatch.h>
#include <ATen/ops/tanh_cpu_dispatch.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <wmkernels/memory_math.h>

#include "lstm_rows.h"
#include "padding.h"
#include "tensor_checks.h"
#include "tile_mm.h"
#include "vec_row_ops.h"

namespace wmkernels {
namespace cpu {
namespace {

constexpr const char* kFwd = "wm_lstm_sequence_forward";
constexpr const char* kBwd = "wm_lstm_sequence_backward";

struct Sizes {
  int64_t T, B, I, H, S, D, E, N;
  bool gated;
};

bool parse_mode(const std::string& write_mode, const char* op) {
  TORCH_CHECK(write_mode == "fifo" || write_mode == "gated", "wmkernels::", op,
              ": write_mode must be 'fifo' or 'gated', got '", write_mode, "'");
  return write_mode == "gated";
}

// Lengths per row (all T when none), checked to lie in [0, T].
std::vector<int64_t> row_lengths(const std::optional<at::Tensor>& lengths, int64_t B,
                                 int64_t T, const char* op) {
  std::vector<int64_t> lens(B, T);
  if (!lengths.has_value() || !lengths->defined()) return lens;
  const at::Tensor& l = *lengths;
  TORCH_CHECK(l.device().is_cpu() && l.layout() == at::kStrided &&
                  l.scalar_type() == at::kLong && l.dim() == 1 && l.size(0) == B,
              "wmkernels::", op, ": lengths must be an int64 CPU tensor of shape [", B,
              "], got ", l.scalar_type(), " ", l.sizes(), " on ", l.device());
  const at::Tensor lc = l.contiguous();
  const int64_t* p = lc.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= T, "wmkernels::", op, ": lengths[", b, "] = ", p[b],
                " is outside [0, T=", T, "]");
    lens[b] = p[b];
  }
  return lens;
}

// Active slots per step and row, t * B + b (empty: every row all S slots),
// checked to be an int64 CPU tensor [T, B] with values in [1, S].
std::vector<int64_t> step_capacity(const std::optional<at::Tensor>& capacity, int64_t T,
                                   int64_t B, int64_t S, const char* op) {
  std::vector<int64_t> caps;
  if (!capacity.has_value() || !capacity->defined()) return caps;
  const at::Tensor& c = *capacity;
  TORCH_CHECK(c.device().is_cpu() && c.layout() == at::kStrided &&
                  c.scalar_type() == at::kLong && c.dim() == 2 && c.size(0) == T &&
                  c.size(1) == B,
              "wmkernels::", op, ": capacity must be an int64 CPU tensor of shape [", T, ", ",
              B, "], got ", c.scalar_type(), " ", c.sizes(), " on ", c.device());
  const at::Tensor cc = c.contiguous();
  const int64_t* p = cc.const_data_ptr<int64_t>();
  caps.assign(p, p + T * B);
  for (int64_t k = 0; k < T * B; ++k) {
    TORCH_CHECK(caps[k] >= 1 && caps[k] <= S, "wmkernels::", op, ": capacity[", k / B, ", ",
                k % B, "] = ", caps[k], " is outside [1, S=", S, "]");
  }
  return caps;
}

// The active slots of row b at step t: [first, first + count).
struct Active {
  int64_t first, count;
};

Active active(const std::vector<int64_t>& caps, int64_t t, int64_t b, int64_t B, int64_t S,
              bool gated) {
  const int64_t c = caps.empty() ? S : caps[t * B + b];
  return {gated ? 0 : S - c, c};
}

// The memory checkpoints gated mode keeps: ceil(T / K) - 1 (none in fifo).
// K >= 1 is checked first; ceil is T / K plus a remainder test, because
// T + K - 1 overflows int64 (undefined behaviour) for K near 2^63.
int64_t checkpoint_count(int64_t T, int64_t K, bool gated) {
  return gated && T > 0 ? T / K + (T % K != 0 ? 1 : 0) - 1 : 0;
}

// Wcat = [w_hh; w_q; w_v; (w_e)] [N, H].
at::Tensor cat_weights(const at::Tensor& w_hh, const at::Tensor& w_q, const at::Tensor& w_v,
                       const std::optional<at::Tensor>& w_e, bool gated) {
  return gated ? at::cat({w_hh, w_q, w_v, *w_e}, 0) : at::cat({w_hh, w_q, w_v}, 0);
}

// The memory before step t of a fifo row (t writes done): M0 then the v's.
template <typename T>
struct FifoSlots {
  const T* M0_row;  // [S, D]
  const T* v_all;   // [T, B, D]
  int64_t t, S, D, BD, b;
  const T* operator()(int64_t s) const {
    const int64_t p = t + s;
    return p < S ? M0_row + p * D : v_all + (p - S) * BD + b * D;
  }
};

// The gradient of that memory, kept as a ring of S slots indexed by the
// absolute position t + s (a shift-write moves no gradient data).
template <typename T>
struct RingSlots {
  RingSlots(T* row, int64_t t, int64_t S, int64_t D) : row(row), head(t % S), S(S), D(D) {}
  T* row;  // [S, D]
  int64_t head, S, D;
  T* operator()(int64_t s) const {
    const int64_t k = head + s;  // < 2S: no division per slot
    return row + (k < S ? k : k - S) * D;
  }
};

template <typename T>
void copy_row(const T* src, T* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] = src[k];
}

template <typename T>
void zero_row(T* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] = T(0);
}

// ---- checks ---------------------------------------------------------------

// The sizes, from x [T, B, I], M0 [B, S, D] and a tensor whose last
// dimension is H (h0 [B, H]), with the checks both entry
// points share.
Sizes checked_sizes(const char* op, const at::Tensor& x, const at::Tensor& M0,
                    const at::Tensor& h, const char* h_name, int64_t h_dim, bool gated,
                    int64_t K) {
  TORCH_CHECK(K >= 1, "wmkernels::", op, ": checkpoint interval K must be >= 1, got ", K);
  check_float_cpu(x, op, "x", 3);
  check_float_cpu(M0, op, "M0", 3);
  check_float_cpu(h, op, h_name, h_dim);
  Sizes z{};
  z.T = x.size(0), z.B = x.size(1), z.I = x.size(2), z.H = h.size(h_dim - 1);
  z.S = M0.size(1), z.D = M0.size(2), z.gated = gated;
  z.E = gated ? 2 * z.D : z.D;
  z.N = 4 * z.H + z.D + z.E;
  check_slots(op, z.S, z.D);
  TORCH_CHECK(z.H >= 1, "wmkernels::", op, ": hidden size H must be >= 1, got ", z.H);
  check_like(M0, x, op, "M0", {z.B, z.S, z.D});
  return z;
}

Sizes check_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& M0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const at::Tensor& w_rh, const at::Tensor& b, const at::Tensor& w_q,
                    const at::Tensor& b_q, const at::Tensor& w_v, const at::Tensor& b_v,
                    const std::optional<at::Tensor>& w_e, const std::optional<at::Tensor>& b_e,
                    bool gated, int64_t K) {
  const Sizes z = checked_sizes(kFwd, x, M0, h0, "h0", 2, gated, K);
  const int64_t B = z.B, H = z.H, D = z.D, I = z.I;
  check_like(h0, x, kFwd, "h0", {B, H});
  check_like(c0, x, kFwd, "c0", {B, H});
  check_like(w_ih, x, kFwd, "w_ih", {4 * H, I});
  check_like(w_hh, x, kFwd, "w_hh", {4 * H, H});
  check_like(w_rh, x, kFwd, "w_rh", {4 * H, D});
  check_like(b, x, kFwd, "b", {4 * H});
  check_like(w_q, x, kFwd, "w_q", {D, H});
  check_like(b_q, x, kFwd, "b_q", {D});
  check_like(w_v, x, kFwd, "w_v", {D, H});
  check_like(b_v, x, kFwd, "b_v", {D});
  const bool has_e = w_e.has_value() && w_e->defined() && b_e.has_value() && b_e->defined();
  TORCH_CHECK(has_e == gated, "wmkernels::", kFwd, ": w_e and b_e must be given exactly in ",
              "gated mode (write_mode is ", gated ? "gated" : "fifo", ")");
  if (gated) {
    check_like(*w_e, x, kFwd, "w_e", {D, H});
    check_like(*b_e, x, kFwd, "b_e", {D});
  }
  return z;
}

// ---- forward ----------------------------------------------------------------

template <typename T>
void forward_loop(const Sizes& z, const std::vector<int64_t>& lens,
                  const std::vector<int64_t>& caps, int64_t K, const at::Tensor& xproj, const at::Tensor& M0, const at::Tensor& w_rh,
                  const at::Tensor& Wcat, const at::Tensor& bias_cat, at::Tensor& y,
                  at::Tensor& h_state, at::Tensor& c_all, at::Tensor& act,
                  at::Tensor& attn, at::Tensor& q_all, at::Tensor& v_all, at::Tensor& e_all,
                  at::Tensor& ckpt, at::Tensor& Mwork) {
  const int64_t T_ = z.T, B = z.B, H = z.H, S = z.S, D = z.D, N = z.N;
  const T scale = T(1) / std::sqrt(static_cast<T>(D));
  at::Tensor P = at::empty({B, N}, xproj.options());       // h Wcatᵀ + bias
  at::Tensor Rg = at::empty({B, 4 * H}, xproj.options());  // r w_rhᵀ
  const at::Tensor WcatT = Wcat.t().contiguous(), w_rhT = w_rh.t().contiguous();
  const T* xp = xproj.const_data_ptr<T>();
  const T* M0p = M0.const_data_ptr<T>();
  const T* Pp = P.const_data_ptr<T>();
  const T* Rp = Rg.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  T* hp = h_state.mutable_data_ptr<T>();  // h of every row, updated in place
  T* cp = c_all.mutable_data_ptr<T>();
  T* ap = act.mutable_data_ptr<T>();
  T* alp = attn.mutable_data_ptr<T>();
  T* qp = q_all.mutable_data_ptr<T>();
  T* vp = v_all.mutable_data_ptr<T>();
  T* ep = z.gated ? e_all.mutable_data_ptr<T>() : nullptr;
  T* Mw = z.gated ? Mwork.mutable_data_ptr<T>() : nullptr;
  const int64_t BD = B * D, BH = B * H, HD = H + D;
  const at::Tensor r_of_y = y.narrow(2, H, D);  // r_t is written straight into y_t
  const int64_t row_work = S * D + 8 * H;
  const LstmRowKernels<T>& cell = lstm_row_kernels<T>();

  // Step t's read for row b (valid at t): q from P, attention over the
  // active slots of M_{t-1} (the others get weight 0).
  auto read = [&](int64_t t, int64_t b) {
    const int64_t i = t * B + b;
    T* q = qp + i * D;
    copy_row(Pp + b * N + 4 * H, q, D);
    const Active act_slots = active(caps, t, b, B, S, z.gated);
    T* a = alp + i * S;
    if (act_slots.count < S) zero_row(a, S);
    if (z.gated) {
      read_row<T, VecRowOps>(DenseSlots<T>{Mw + b * S * D, D}, q, nullptr, scale,
                             act_slots.count, D, a, yp + i * HD + H);
    } else {
      read_row<T, VecRowOps>(FifoSlots<T>{M0p + b * S * D, vp, t + act_slots.first, S, D, BD, b},
                             q, nullptr, scale, act_slots.count, D, a + act_slots.first,
                             yp + i * HD + H);
    }
  };
  auto skip_read = [&](int64_t t, int64_t b) {
    const int64_t i = t * B + b;
    zero_row(qp + i * D, D);
    zero_row(yp + i * HD, HD);
    zero_row(alp + i * S, S);
  };

  if (T_ > 0) {
    tile_mm_out(P, h_state, WcatT, bias_cat);
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) (0 < lens[b]) ? read(0, b) : skip_read(0, b);
    });
  }
  for (int64_t t = 0; t < T_; ++t) {
    tile_mm_out(Rg, r_of_y[t], w_rhT);
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t i = t * B + b;
        const T* c_prev = cp + t * BH + b * H;
        T* h = hp + b * H;
        T* c = cp + (t + 1) * BH + b * H;
        T* yrow = yp + i * HD;
        if (t < lens[b]) {
          T* a = ap + i * 4 * H;  // the gate pre-activations, activated in place
          const T* x_term = xp + i * 4 * H;
          const T* h_term = Pp + b * N;
          const T* r_term = Rp + b * 4 * H;
          for (int64_t k = 0; k < 4 * H; ++k) a[k] = x_term[k] + h_term[k] + r_term[k];
          cell.forward(a, c_prev, a, c, h, H);
          copy_row(h, yrow, H);
        } else {  // h stays; y_t is already zero (skip_read)
          copy_row(c_prev, c, H);
          zero_row(ap + i * 4 * H, 4 * H);
        }
      }
    });
    tile_mm_out(P, h_state, WcatT, bias_cat);
    // v_t and e_t of every row (ATen's vectorized kernels; rows past their
    // length get values nobody reads).
    at::Tensor v_t = v_all[t];
    at::cpu::tanh_out(v_t, P.narrow(1, 4 * H + D, D));
    if (z.gated) {
      at::Tensor e_t = e_all[t];
      at::cpu::sigmoid_out(e_t, P.narrow(1, 4 * H + 2 * D, D));
    }
    // Write of step t, then the read of step t+1 (no product in between).
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t i = t * B + b;
        if (z.gated && t < lens[b]) {  // the active slots only: the others keep their values
          const DenseSlots<T> M{Mw + b * S * D, D};
          write_row<T>(M, alp + i * S, ep + i * D, vp + i * D, active(caps, t, b, B, S, true).count,
                       D, M);
        }
        if (t + 1 < T_) (t + 1 < lens[b]) ? read(t + 1, b) : skip_read(t + 1, b);
      }
    });
    if (z.gated && (t + 1) % K == 0 && t + 1 < T_) ckpt[(t + 1) / K - 1].copy_(Mwork);
  }
}

// M_n of a fifo memory: the last S of M0 and the row's written vectors.
template <typename T>
void fifo_final_memory(const Sizes& z, const std::vector<int64_t>& lens, const at::Tensor& M0,
                       const at::Tensor& v_all, at::Tensor& M_n) {
  const T* M0p = M0.const_data_ptr<T>();
  const T* vp = v_all.const_data_ptr<T>();
  T* out = M_n.mutable_data_ptr<T>();
  const int64_t S = z.S, D = z.D;
  for (int64_t b = 0; b < z.B; ++b) {
    const FifoSlots<T> M{M0p + b * S * D, vp, lens[b], S, D, z.B * D, b};
    for (int64_t s = 0; s < S; ++s) copy_row(M(s), out + (b * S + s) * D, D);
  }
}


// ---- backward -----------------------------------------------------------------

// Reverse time loop. Dall [T+1, B, N] (zeros in): row t gets [dG_t, dq_t] and
// row t+1 gets dve_t = [dv_pre_t, (de_pre_t)]. dhc [B, H] in grad_h, out the
// part of dh0 not in Dall[0] Wcat; dc [B, H] in grad_c, out dc0; dM [B, S, D]
// in the gradient of M_n (fifo: as a ring, see RingSlots), out dM0.
template <typename T>
void backward_loop(const Sizes& z, const std::vector<int64_t>& lens,
                   const std::vector<int64_t>& caps, int64_t K, const at::Tensor& grad_y, const at::Tensor& M0, const at::Tensor& w_rh,
                   const at::Tensor& Wcat, const at::Tensor& c_all, const at::Tensor& act,
                   const at::Tensor& attn, const at::Tensor& q_all, const at::Tensor& v_all,
                   const at::Tensor& e_all, const at::Tensor& ckpt, at::Tensor& Dall,
                   at::Tensor& dhc, at::Tensor& dc, at::Tensor& dM) {
  const int64_t T_ = z.T, B = z.B, H = z.H, S = z.S, D = z.D, N = z.N;
  const T scale = T(1) / std::sqrt(static_cast<T>(D));
  const auto opt = Dall.options();
  at::Tensor tmp = at::empty({B, H}, opt);
  at::Tensor dR = at::empty({B, D}, opt);
  at::Tensor work = at::empty({B, S}, opt);
  at::Tensor dattn_w = at::empty({z.gated ? B : 0, S}, opt);
  // Gated: the memory before each step of the current segment, recomputed
  // from its checkpoint (K states of [B, S, D], freed at return).
  at::Tensor seg = at::empty({z.gated ? std::min(K, T_) : 0, B, S, D}, opt);
  const T* gy = grad_y.const_data_ptr<T>();
  const T* M0p = M0.const_data_ptr<T>();
  const T* cp = c_all.const_data_ptr<T>();
  const T* ap = act.const_data_ptr<T>();
  const T* alp = attn.const_data_ptr<T>();
  const T* qp = q_all.const_data_ptr<T>();
  const T* vp = v_all.const_data_ptr<T>();
  const T* ep = z.gated ? e_all.const_data_ptr<T>() : nullptr;
  T* Dp = Dall.mutable_data_ptr<T>();
  T* tp = tmp.mutable_data_ptr<T>();
  T* dRp = dR.mutable_data_ptr<T>();
  T* wp = work.mutable_data_ptr<T>();
  T* dwp = z.gated ? dattn_w.mutable_data_ptr<T>() : nullptr;
  T* segp = z.gated ? seg.mutable_data_ptr<T>() : nullptr;
  T* dhp = dhc.mutable_data_ptr<T>();
  T* dcp = dc.mutable_data_ptr<T>();
  T* dMp = dM.mutable_data_ptr<T>();
  const int64_t BD = B * D, BH = B * H, SD = S * D, BSD = B * S * D;
  const int64_t row_work = 2 * S * D + 8 * H;
  const LstmRowKernels<T>& cell = lstm_row_kernels<T>();

  for (int64_t t = T_ - 1; t >= 0; --t) {
    const int64_t start = z.gated ? (t / K) * K : 0;
    if (z.gated && (t == T_ - 1 || (t + 1) % K == 0)) {
      const at::Tensor first = start == 0 ? M0 : ckpt[start / K - 1];
      seg[0].copy_(first);
      at::parallel_for(0, B, row_grain((t - start + 1) * SD), [&](int64_t lo, int64_t hi) {
        for (int64_t b = lo; b < hi; ++b) {
          for (int64_t j = 1; j <= t - start; ++j) {
            const int64_t i = (start + j - 1) * B + b;
            const DenseSlots<T> prev{segp + (j - 1) * BSD + b * SD, D};
            const DenseSlots<T> next{segp + j * BSD + b * SD, D};
            if (start + j - 1 < lens[b]) {
              const int64_t c = active(caps, start + j - 1, b, B, S, true).count;
              write_row<T>(prev, alp + i * S, ep + i * D, vp + i * D, c, D, next);
              if (c < S) copy_row(prev(c), next(c), (S - c) * D);
            } else {
              copy_row(prev(0), next(0), SD);
            }
          }
        }
      });
    }
    auto dense = [&](T* base, int64_t b) { return DenseSlots<T>{base + b * SD, D}; };

    // A: backward of the write of step t -> dve_t in Dall[t+1], dM before it.
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        if (t >= lens[b]) continue;
        const int64_t i = t * B + b;
        T* dve = Dp + ((t + 1) * B + b) * N + 4 * H + D;
        const T* v = vp + i * D;
        if (z.gated) {  // inactive slots: M_t = M_{t-1}, their gradient passes unchanged
          const T* e = ep + i * D;
          write_backward_row<T, VecRowOps>(dense(dMp, b), dense(segp + (t - start) * BSD, b),
                                           alp + i * S, e, v, active(caps, t, b, B, S, true).count,
                                           D, dense(dMp, b), dwp + b * S, dve + D, dve);
          for (int64_t d = 0; d < D; ++d) dve[D + d] *= e[d] * (T(1) - e[d]);
        } else {
          T* slot = dMp + b * SD + (t % S) * D;
          copy_row(slot, dve, D);
          zero_row(slot, D);
        }
        for (int64_t d = 0; d < D; ++d) dve[d] *= T(1) - v[d] * v[d];
      }
    });
    // Gradient of h_t from steps t+1 (gates, query) and t (value, erase). At
    // the last step there is no step t+1: only the value (erase) block, so that
    // its zero rows never meet w_hh, w_q (0 · inf would be NaN). Likewise a row
    // whose last step is t takes no step t+1: its row is selected from its own
    // value-block product (the same bits as the full product's with finite
    // weights: tile_mm's one FMA chain per element from 0 adds its zero gate
    // and query entries as exact zeros).
    auto value_block = [&](at::Tensor out, const at::Tensor& rows) {
      tile_mm_out(out, rows.narrow(1, 4 * H + D, N - 4 * H - D),
                  Wcat.narrow(0, 4 * H + D, N - 4 * H - D));
    };
    if (t == T_ - 1) {
      value_block(tmp, Dall[t + 1]);
    } else {
      tile_mm_out(tmp, Dall[t + 1], Wcat);
      for (int64_t b = 0; b < B; ++b) {
        if (lens[b] == t + 1) value_block(tmp.narrow(0, b, 1), Dall[t + 1].narrow(0, b, 1));
      }
    }
    // C: cell backward -> dG_t in Dall[t].
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        if (t >= lens[b]) continue;
        const int64_t i = t * B + b;
        T* dh = tp + b * H;
        T* carried = dhp + b * H;
        const T* gyh = gy + i * (H + D);
        for (int64_t j = 0; j < H; ++j) {
          dh[j] += carried[j] + gyh[j];
          carried[j] = T(0);
        }
        cell.backward(ap + i * 4 * H, cp + t * BH + b * H, cp + (t + 1) * BH + b * H, dh,
                      dcp + b * H, Dp + i * N, dcp + b * H, H);
      }
    });
    tile_mm_out(dR, Dall[t].narrow(1, 0, 4 * H), w_rh);
    // E: read backward -> dq_t in Dall[t], dM before step t.
    at::parallel_for(0, B, row_grain(row_work), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        if (t >= lens[b]) continue;
        const int64_t i = t * B + b;
        T* dr = dRp + b * D;
        const T* gyr = gy + i * (H + D) + H;
        for (int64_t d = 0; d < D; ++d) dr[d] += gyr[d];
        T* dq = Dp + i * N + 4 * H;
        const Active act_slots = active(caps, t, b, B, S, z.gated);
        if (z.gated) {
          read_backward_row<T, VecRowOps>(dr, dwp + b * S, alp + i * S,
                                          dense(segp + (t - start) * BSD, b), qp + i * D, nullptr,
                                          scale, act_slots.count, D, dense(dMp, b), dq, wp + b * S);
        } else {
          const int64_t first = act_slots.first;
          read_backward_row<T, VecRowOps>(
              dr, static_cast<const T*>(nullptr), alp + i * S + first,
              FifoSlots<T>{M0p + b * SD, vp, t + first, S, D, BD, b}, qp + i * D, nullptr, scale,
              act_slots.count, D, RingSlots<T>{dMp + b * SD, t + first, S, D}, dq, wp + b * S);
        }
      }
    });
  }
}

Sizes check_backward(const at::Tensor& grad_y, const at::Tensor& grad_h,
                     const at::Tensor& grad_c, const at::Tensor& grad_M, const at::Tensor& x,
                     const at::Tensor& M0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const at::Tensor& w_rh, const at::Tensor& w_q, const at::Tensor& w_v,
                     const std::optional<at::Tensor>& w_e, const at::Tensor& h0,
                     const at::Tensor& y, const at::Tensor& c_all, const at::Tensor& act,
                     const at::Tensor& attn, const at::Tensor& q_all, const at::Tensor& v_all,
                     const at::Tensor& e_all, const at::Tensor& ckpt, bool gated, int64_t K) {
  const Sizes z = checked_sizes(kBwd, x, M0, h0, "h0", 2, gated, K);
  const int64_t T_ = z.T, B = z.B, H = z.H, S = z.S, D = z.D;
  check_like(grad_y, x, kBwd, "grad_y", {T_, B, H + D});
  check_like(grad_h, x, kBwd, "grad_h", {B, H});
  check_like(grad_c, x, kBwd, "grad_c", {B, H});
  check_like(grad_M, x, kBwd, "grad_M", {B, S, D});
  check_like(w_ih, x, kBwd, "w_ih", {4 * H, z.I});
  check_like(w_hh, x, kBwd, "w_hh", {4 * H, H});
  check_like(w_rh, x, kBwd, "w_rh", {4 * H, D});
  check_like(w_q, x, kBwd, "w_q", {D, H});
  check_like(w_v, x, kBwd, "w_v", {D, H});
  TORCH_CHECK((w_e.has_value() && w_e->defined()) == gated, "wmkernels::", kBwd,
              ": w_e must be given exactly in gated mode");
  if (gated) check_like(*w_e, x, kBwd, "w_e", {D, H});
  check_like(h0, x, kBwd, "h0", {B, H});
  check_like(y, x, kBwd, "y", {T_, B, H + D});
  check_like(c_all, x, kBwd, "c_all", {T_ + 1, B, H});
  check_like(act, x, kBwd, "act", {T_, B, 4 * H});
  check_like(attn, x, kBwd, "attn", {T_, B, S});
  check_like(q_all, x, kBwd, "q_all", {T_, B, D});
  check_like(v_all, x, kBwd, "v_all", {T_, B, D});
  check_like(e_all, x, kBwd, "e_all", {gated ? T_ : 0, B, D});
  const int64_t n_ckpt = checkpoint_count(T_, K, gated);
  check_like(ckpt, x, kBwd, "ckpt", {n_ckpt, B, S, D});
  return z;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor, at::Tensor>
wm_lstm_sequence_forward(const at::Tensor& x_in, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& M0_in, const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const at::Tensor& w_rh, const at::Tensor& b, const at::Tensor& w_q,
                         const at::Tensor& b_q, const at::Tensor& w_v, const at::Tensor& b_v,
                         const std::optional<at::Tensor>& w_e,
                         const std::optional<at::Tensor>& b_e,
                         const std::optional<at::Tensor>& lengths,
                         const std::optional<at::Tensor>& capacity,
                         const std::string& write_mode, int64_t K) {
  const bool gated = parse_mode(write_mode, kFwd);
  const Sizes z = check_forward(x_in, h0, c0, M0_in, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v,
                                w_e, b_e, gated, K);
  const std::vector<int64_t> lens = row_lengths(lengths, z.B, z.T, kFwd);
  const std::vector<int64_t> caps = step_capacity(capacity, z.T, z.B, z.S, kFwd);
  const int64_t T_ = z.T, B = z.B, H = z.H, S = z.S, D = z.D;
  const auto opt = x_in.options();
  const at::Tensor x = x_in.contiguous(), M0 = M0_in.contiguous();
  const at::Tensor Wcat = cat_weights(w_hh, w_q, w_v, w_e, gated);
  const at::Tensor zeros4h = at::zeros({4 * H}, opt);
  const at::Tensor bias_cat =
      gated ? at::cat({zeros4h, b_q, b_v, *b_e}) : at::cat({zeros4h, b_q, b_v});
  // The input projection of every step in one product, the bias folded in.
  const at::Tensor xproj = tile_mm(x.view({T_ * B, z.I}), w_ih.t().contiguous(), b.contiguous());

  at::Tensor y = at::empty({T_, B, H + D}, opt);
  at::Tensor h_state = h0.contiguous().clone();
  at::Tensor c_all = at::empty({T_ + 1, B, H}, opt);
  c_all[0].copy_(c0);
  at::Tensor act = at::empty({T_, B, 4 * H}, opt);
  at::Tensor attn = at::empty({T_, B, S}, opt);
  at::Tensor q_all = at::empty({T_, B, D}, opt);
  at::Tensor v_all = at::empty({T_, B, D}, opt);
  at::Tensor e_all = at::empty({gated ? T_ : 0, B, D}, opt);
  const int64_t n_ckpt = checkpoint_count(T_, K, gated);
  at::Tensor ckpt = at::empty({n_ckpt, B, S, D}, opt);
  at::Tensor M_n = gated ? M0.clone() : at::empty({B, S, D}, opt);  // gated: the working memory

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wmkernels_wm_lstm_sequence_forward", [&] {
    forward_loop<scalar_t>(z, lens, caps, K, xproj, M0, w_rh, Wcat, bias_cat, y, h_state, c_all, act,
                           attn, q_all, v_all, e_all, ckpt, M_n);
    if (!gated) fifo_final_memory<scalar_t>(z, lens, M0, v_all, M_n);
  });
  return {y, h_state, c_all[T_].clone(), M_n, c_all, act, attn, q_all, v_all, e_all, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
wm_lstm_sequence_backward(const at::Tensor& grad_y_in, const at::Tensor& grad_h,
                          const at::Tensor& grad_c, const at::Tensor& grad_M_in,
                          const at::Tensor& x_in, const at::Tensor& M0_in,
                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& w_rh, const at::Tensor& w_q, const at::Tensor& w_v,
                          const std::optional<at::Tensor>& w_e,
                          const std::optional<at::Tensor>& lengths,
                          const std::optional<at::Tensor>& capacity, const at::Tensor& h0_in,
                          const at::Tensor& y_in,
                          const at::Tensor& c_all_in, const at::Tensor& act_in,
                          const at::Tensor& attn_in,
                          const at::Tensor& q_all_in, const at::Tensor& v_all_in,
                          const at::Tensor& e_all_in, const at::Tensor& ckpt_in,
                          const std::string& write_mode, int64_t K) {
  const bool gated = parse_mode(write_mode, kBwd);
  const Sizes z = check_backward(grad_y_in, grad_h, grad_c, grad_M_in, x_in, M0_in, w_ih, w_hh,
                                 w_rh, w_q, w_v, w_e, h0_in, y_in, c_all_in, act_in,
                                 attn_in, q_all_in, v_all_in, e_all_in, ckpt_in, gated, K);
  const std::vector<int64_t> lens = row_lengths(lengths, z.B, z.T, kBwd);
  const std::vector<int64_t> caps = step_capacity(capacity, z.T, z.B, z.S, kBwd);
  const int64_t T_ = z.T, B = z.B, H = z.H, S = z.S, D = z.D, N = z.N;
  const auto opt = x_in.options();
  const at::Tensor grad_y = grad_y_in.contiguous(), x = x_in.contiguous();
  const at::Tensor M0 = M0_in.contiguous(), h0 = h0_in.contiguous(), y = y_in.contiguous();
  const at::Tensor c_all = c_all_in.contiguous(), act = act_in.contiguous();
  const at::Tensor attn = attn_in.contiguous();
  const at::Tensor q_all = q_all_in.contiguous(), v_all = v_all_in.contiguous();
  const at::Tensor e_all = e_all_in.contiguous(), ckpt = ckpt_in.contiguous();
  const at::Tensor Wcat = cat_weights(w_hh, w_q, w_v, w_e, gated);

  at::Tensor Dall = at::zeros({T_ + 1, B, N}, opt);
  at::Tensor dhc = grad_h.contiguous().clone();
  at::Tensor dc = grad_c.contiguous().clone();
  at::Tensor dM;
  if (gated) {
    dM = grad_M_in.contiguous().clone();
  } else {  // the ring: slot s of M_n sits at (lengths[b] + s) % S
    dM = at::empty({B, S, D}, opt);
    const at::Tensor gM = grad_M_in.contiguous();
    for (int64_t b = 0; b < B; ++b) {
      dM[b].copy_(gM[b].roll({lens[b] % S}, {0}));
    }
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wmkernels_wm_lstm_sequence_backward", [&] {
    backward_loop<scalar_t>(z, lens, caps, K, grad_y, M0, w_rh.contiguous(), Wcat, c_all, act, attn, q_all, v_all,
                            e_all, ckpt, Dall, dhc, dc, dM);
  });
  // h0 feeds the gates and query of step 0, not a value or erase vector. A row
  // of length 0 takes no step: its dh0 is the carried gradient, selected (its
  // zero row of Dall[0] times an inf in w_hh or w_q would be NaN).
  at::Tensor dh0 = at::add(tile_mm(Dall[0].narrow(1, 0, 4 * H + D), Wcat.narrow(0, 0, 4 * H + D)), dhc);
  for (int64_t b = 0; b < B; ++b) {
    if (lens[b] == 0) dh0[b].copy_(dhc[b]);
  }
  // Every weight gradient from the stacked per-step rows, in a few products.
  const at::Tensor Dflat = Dall.view({(T_ + 1) * B, N});
  // h_t and r_t of valid rows are in y; a row's y is zero past its length,
  // where its rows of Dall are zero too.
  const at::Tensor h_of_y = y.narrow(2, 0, H).reshape({T_ * B, H});
  // (h0 of a row of length 0 is never read: its zero row of Dall[0] must not meet it)
  const at::Tensor h0_read = zero_past_lengths(h0.unsqueeze(0), lengths)[0];
  // The transposed left operands are read in place (a contiguous copy of
  // them cost more than it saved: measured on the LSTM's weight gradients).
  const at::Tensor dWcat = tile_mm(Dflat.t(), at::cat({h0_read, h_of_y}));
  const at::Tensor dbias = Dflat.sum(0);
  const at::Tensor dG = Dall.narrow(0, 0, T_).narrow(2, 0, 4 * H).reshape({T_ * B, 4 * H});
  // zero past each row's length, by selection (their zero rows of dG times a NaN in w_ih are NaN)
  const at::Tensor dx =
      zero_past_lengths(tile_mm(dG, w_ih.contiguous()).view({T_, B, z.I}), lengths);
  const at::Tensor dGt = dG.t();
  const at::Tensor dw_ih = tile_mm(dGt, zero_past_lengths(x, lengths).view({T_ * B, z.I}));
  const at::Tensor dw_rh = tile_mm(dGt, y.narrow(2, H, D).reshape({T_ * B, D}));
  auto rows = [&](const at::Tensor& t, int64_t from, int64_t n) {
    return t.narrow(0, from, n).clone();  // own storage: outputs must not alias
  };
  const int64_t q0 = 4 * H, v0 = 4 * H + D, e0 = 4 * H + 2 * D;
  at::Tensor dw_e = gated ? rows(dWcat, e0, D) : at::empty({0}, opt);
  at::Tensor db_e = gated ? rows(dbias, e0, D) : at::empty({0}, opt);
  return {dx,
          dh0,
          dc,
          dM,
          dw_ih,
          rows(dWcat, 0, 4 * H),
          dw_rh,
          rows(dbias, 0, 4 * H),
          rows(dWcat, q0, D),
          rows(dbias, q0, D),
          rows(dWcat, v0, D),
          rows(dbias, v0, D),
          dw_e,
          db_e};
}

}  // namespace cpu
}  // namespace wmkernels

// The CPU implementations of these ops (their schemas: csrc/schema.cpp).
TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("wm_lstm_sequence_forward", &wmkernels::cpu::wm_lstm_sequence_forward);
  m.impl("wm_lstm_sequence_backward", &wmkernels::cpu::wm_lstm_sequence_backward);
}
