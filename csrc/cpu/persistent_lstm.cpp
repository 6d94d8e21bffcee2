// See persistent_lstm.h.
#include "persistent_lstm.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include "lstm_rows.h"
#include "lstm_tiles.h"
#include "lstm_tiles_bf16.h"
#include "team.h"

namespace wmkernels {
namespace cpu {

namespace {

std::atomic<int> last_team_size{0};

// Which copy of the tile kernels: the one of cpu_capability().
enum class Isa { kDefault, kAvx2, kAvx512 };

Isa chosen_isa() {
  static const Isa isa = [] {
    const char* c = cpu_capability();
    if (std::strncmp(c, "avx512", 6) == 0) return Isa::kAvx512;  // avx512 or avx512_bf16
    if (std::strcmp(c, "avx2") == 0) return Isa::kAvx2;
    return Isa::kDefault;
  }();
  return isa;
}

// A 64-byte aligned scratch array of one thread.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : p_(static_cast<T*>(std::aligned_alloc(64, ((n * sizeof(T) + 63) / 64 + 1) * 64))) {}
  ~Scratch() { std::free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The team size for `parallel_units` independent slices of work: at most
// at::get_num_threads() and at most parallel_units; 1 inside a parallel region.
int team_size(int64_t parallel_units) {
  if (at::in_parallel_region()) return 1;
  int64_t n = at::get_num_threads();
  if (n > parallel_units) n = parallel_units;
  return n < 1 ? 1 : static_cast<int>(n);
}

// A buffer of `numel` elements kept by the calling thread between calls, for
// what an inference call computes and does not return (the pre-activations):
// a fresh one of tens of MB (64 MB at T=128 B=64 H=512) is mapped and
// page-faulted anew at every call, and two threads faulting at once contend
// in the kernel (perf: ~5% of such a call at 2 threads). Up to 256 MB is kept.
at::Tensor reusable_scratch(int64_t numel, const at::TensorOptions& opts) {
  constexpr int64_t kKeptBytes = int64_t(256) << 20;
  thread_local at::Tensor kept;
  const int64_t bytes = numel * static_cast<int64_t>(opts.dtype().itemsize());
  if (bytes > kKeptBytes) return at::empty({numel}, opts);
  if (!kept.defined() || kept.numel() < numel || kept.dtype() != opts.dtype()) {
    kept = at::Tensor();  // free the smaller one first
    kept = at::empty({numel}, opts);
  }
  return kept.narrow(0, 0, numel);
}

// Points a forward step (ForwardStep or Bf16ForwardStep) at step t's state
// (BH = B·H elements a step): h_{t-1} and h_t in y, or with lengths in the
// two buffers of h_buf (read one, write the other) while y_t gets the output;
// c_{t-1} and c_t in cs when save keeps every step's c, else the one running c.
template <typename Step, typename HT, typename CT>
void point_at_step(Step& s, int64_t t, int64_t BH, const HT* h0, HT* h_buf, HT* y, const CT* c0,
                   CT* cs, bool save) {
  s.t = t;
  if (h_buf != nullptr) {
    s.h_prev = t == 0 ? h0 : h_buf + ((t - 1) & 1) * BH;
    s.h = h_buf + (t & 1) * BH;
    s.y = y + t * BH;
  } else {
    s.h_prev = t == 0 ? h0 : y + (t - 1) * BH;
    s.h = y + t * BH;
  }
  if (save) {
    s.c_prev = t == 0 ? c0 : cs + (t - 1) * BH;
    s.c = cs + t * BH;
  } else {
    s.c_prev = s.c = cs;
  }
}

int run_team(int64_t panels, const Team::Work& work) {
  const int n = Team::run(team_size(panels), work);
  last_team_size.store(n, std::memory_order_relaxed);
  return n;
}

}  // namespace

template <>
const LstmTileKernels<float>& lstm_tile_kernels<float>() {
  switch (chosen_isa()) {
#if defined(WMK_HAVE_AVX512)
    case Isa::kAvx512: return AVX512::lstm_tile_kernels_float();
#endif
#if defined(WMK_HAVE_AVX2)
    case Isa::kAvx2: return AVX2::lstm_tile_kernels_float();
#endif
    default: return DEFAULT::lstm_tile_kernels_float();
  }
}

template <>
const LstmTileKernels<double>& lstm_tile_kernels<double>() {
  switch (chosen_isa()) {
#if defined(WMK_HAVE_AVX512)
    case Isa::kAvx512: return AVX512::lstm_tile_kernels_double();
#endif
#if defined(WMK_HAVE_AVX2)
    case Isa::kAvx2: return AVX2::lstm_tile_kernels_double();
#endif
    default: return DEFAULT::lstm_tile_kernels_double();
  }
}

const LstmBf16Kernels* lstm_bf16_kernels() {
#if defined(WMK_HAVE_AVX512_BF16)
  if (std::strcmp(cpu_capability(), "avx512_bf16") == 0) return &AVX512_BF16::lstm_bf16_kernels();
#endif
  return nullptr;
}

at::Tensor column_sum(const at::Tensor& a) {
  const int64_t M = a.size(0), N = a.size(1);
  at::Tensor out = at::empty({N}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "wmkernels_column_sum", [&] {
    const scalar_t* a_p = a.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) o[n] = scalar_t(0);
      for (int64_t m = 0; m < M; ++m) {
        const scalar_t* row = a_p + m * N;
        for (int64_t n = n0; n < n1; ++n) o[n] += row[n];
      }
    });
  });
  return out;
}

int persistent_last_team_size() { return last_team_size.load(std::memory_order_relaxed); }

namespace {

// persistent_lstm_forward in bfloat16 (lstm_tiles_bf16.h): the weights packed
// in bf16 pairs, the input projection and the pre-activations, c and what
// save keeps (act, cs) in fp32; h, y, h_n and c_n in bf16.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
persistent_lstm_forward_bf16(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                             const at::Tensor& w_ih, const at::Tensor& w_hh,
                             const at::Tensor& bias, const at::Tensor& lengths, bool save) {
  using bf16 = c10::BFloat16;
  const LstmBf16Kernels* k = lstm_bf16_kernels();
  TORCH_CHECK(k != nullptr, "wmkernels: lstm_sequence in bfloat16 on the CPU needs the avx512_bf16 "
              "instruction set; this CPU (or WMKERNELS_CPU_CAPABILITY) gives ", cpu_capability());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const auto opts = x.options();
  const auto f32 = opts.dtype(at::kFloat);
  at::Tensor y = at::empty({T, B, H}, opts);
  // With B >= kFuseRows the input projection runs inside each step (no T·B·4H
  // float32 buffer to write and read back; measured, 1 thread, no_grad:
  // T=256 B=16 I=H=256 25.6 -> 23.2 ms, T=128 B=64 I=H=512 209 -> 170 ms);
  // below, one product over all steps first keeps the short, latency-bound
  // steps short.
  constexpr int64_t kFuseRows = 6;
  const bool fused = B >= kFuseRows;
  at::Tensor pre = save || !fused ? at::empty({T, B, 4 * H}, f32) : at::Tensor();
  at::Tensor cs = save ? at::empty({T, B, H}, f32) : c0.to(at::kFloat).contiguous();
  at::Tensor h_buf = lengths.defined() ? at::empty({2, B, H}, opts) : at::Tensor();
  if (T == 0 || B == 0) {
    return {y, h0.clone(), c0.clone(), save ? pre : at::Tensor(), save ? cs : at::Tensor()};
  }
  const at::Tensor c0_f = c0.to(at::kFloat).contiguous();
  const int64_t U = k->units, panels = (H + U - 1) / U;
  const bf16* x_p = ptr<bf16>(x);
  const bf16* h0_p = ptr<bf16>(h0);
  const float* c0_p = ptr<float>(c0_f);
  const bf16* w_ih_p = ptr<bf16>(w_ih);
  const bf16* w_hh_p = ptr<bf16>(w_hh);
  const float* bias_p = ptr<float>(bias);
  const int64_t* len_p = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
  bf16* y_p = y.mutable_data_ptr<bf16>();
  float* pre_p = pre.defined() ? pre.mutable_data_ptr<float>() : nullptr;
  float* cs_p = cs.mutable_data_ptr<float>();
  bf16* hb_p = h_buf.defined() ? h_buf.mutable_data_ptr<bf16>() : nullptr;
  run_team(panels, [&](int tid, int n, Barrier& barrier) {
    int64_t p0, p1;
    team_slice(panels, tid, n, p0, p1);
    const int64_t mine = p1 - p0;
    Scratch<bf16> w_pack(mine * k->panel_size(H));
    Scratch<bf16> w_x(mine * k->panel_size(I));
    k->pack_gate_rows(w_ih_p, H, I, p0, p1, w_x.get());
    if (!fused) k->project(x_p, T * B, I, I, w_x.get(), bias_p, H, p0, p1, pre_p);
    k->pack_gate_rows(w_hh_p, H, H, p0, p1, w_pack.get());
    Bf16ForwardStep s{B, H, w_pack.get(), nullptr, nullptr, I, w_x.get(), bias_p, nullptr,
                      save, nullptr, nullptr, nullptr, nullptr, len_p, 0};
    for (int64_t t = 0; t < T; ++t) {
      point_at_step(s, t, B * H, h0_p, hb_p, y_p, c0_p, cs_p, save);
      if (fused) s.x = x_p + t * B * I;
      s.pre = pre_p != nullptr ? pre_p + t * B * 4 * H : nullptr;
      k->forward_step(s, p0, p1);
      if (t + 1 < T) barrier.wait();
    }
  });
  at::Tensor h_n = h_buf.defined() ? h_buf[(T - 1) & 1].clone() : y[T - 1].clone();
  if (!save) return {y, h_n, cs.to(opts.dtype()), at::Tensor(), at::Tensor()};
  return {y, h_n, cs[T - 1].to(opts.dtype()), pre, cs};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
persistent_lstm_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                        const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias,
                        const at::Tensor& lengths, bool save) {
  if (x.scalar_type() == at::kBFloat16) {
    return persistent_lstm_forward_bf16(x, h0, c0, w_ih, w_hh, bias, lengths, save);
  }
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const auto opts = x.options();
  at::Tensor y = at::empty({T, B, H}, opts);
  // The input projection, then (save) the activated gates in place; without
  // save a buffer kept by this thread between calls (nobody sees it).
  at::Tensor pre = save ? at::empty({T, B, 4 * H}, opts) : reusable_scratch(T * B * 4 * H, opts);
  // save: c of every step; else the running c, updated in place.
  at::Tensor cs = save ? at::empty({T, B, H}, opts) : c0.clone();
  // With lengths the state h differs from y (0 past a row's length): two
  // buffers, written in turn (a step reads one and writes the other).
  at::Tensor h_buf = lengths.defined() ? at::empty({2, B, H}, opts) : at::Tensor();
  if (T == 0 || B == 0) {
    return {y, h0.clone(), c0.clone(), save ? pre : at::Tensor(), save ? cs : at::Tensor()};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wmkernels_persistent_lstm_forward", [&] {
    using T_ = scalar_t;
    const LstmTileKernels<T_>& k = lstm_tile_kernels<T_>();
    const int64_t U = k.units, panels = (H + U - 1) / U;
    const T_* x_p = ptr<T_>(x);
    const T_* h0_p = ptr<T_>(h0);
    const T_* c0_p = ptr<T_>(c0);
    const T_* w_ih_p = ptr<T_>(w_ih);
    const T_* w_hh_p = ptr<T_>(w_hh);
    const T_* bias_p = ptr<T_>(bias);
    const int64_t* len_p = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    T_* y_p = y.mutable_data_ptr<T_>();
    T_* pre_p = pre.mutable_data_ptr<T_>();
    T_* cs_p = cs.mutable_data_ptr<T_>();
    T_* hb_p = h_buf.defined() ? h_buf.mutable_data_ptr<T_>() : nullptr;
    run_team(panels, [&](int tid, int n, Barrier& barrier) {
      int64_t p0, p1;
      team_slice(panels, tid, n, p0, p1);
      const int64_t mine = p1 - p0;
      Scratch<T_> w_pack(mine * (I > H ? I : H) * 4 * U);
      k.pack_gate_rows(w_ih_p, H, I, p0, p1, w_pack.get());
      k.project(x_p, T * B, I, I, w_pack.get(), bias_p, H, p0, p1, pre_p);
      k.pack_gate_rows(w_hh_p, H, H, p0, p1, w_pack.get());
      ForwardStep<T_> s{B, H, w_pack.get(), nullptr, nullptr, save, nullptr,
                        nullptr, nullptr, nullptr, len_p, 0};
      for (int64_t t = 0; t < T; ++t) {
        point_at_step(s, t, B * H, h0_p, hb_p, y_p, c0_p, cs_p, save);
        s.pre = pre_p + t * B * 4 * H;
        k.forward_step(s, p0, p1);
        if (t + 1 < T) barrier.wait();
      }
    });
  });
  at::Tensor h_n = h_buf.defined() ? h_buf[(T - 1) & 1].clone() : y[T - 1].clone();
  if (!save) return {y, h_n, cs, at::Tensor(), at::Tensor()};
  return {y, h_n, cs[T - 1].clone(), pre, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor>
persistent_lstm_backward(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                         const at::Tensor& grad_c_n, const at::Tensor& c0,
                         const at::Tensor& w_hh, const at::Tensor& act, const at::Tensor& cs,
                         const at::Tensor& lengths) {
  const int64_t T = grad_y.size(0), B = grad_y.size(1), H = grad_y.size(2);
  at::Tensor d_gates = reusable_scratch(T * B * 4 * H, grad_y.options()).view({T, B, 4 * H});
  at::Tensor grad_h = grad_h_n.clone(at::MemoryFormat::Contiguous);
  at::Tensor grad_c = grad_c_n.clone(at::MemoryFormat::Contiguous);
  if (T == 0 || B == 0) return {d_gates, grad_h, grad_c};
  AT_DISPATCH_FLOATING_TYPES(grad_y.scalar_type(), "wmkernels_persistent_lstm_backward", [&] {
    using T_ = scalar_t;
    const LstmTileKernels<T_>& k = lstm_tile_kernels<T_>();
    const int64_t U = k.units, panels = (H + U - 1) / U;
    const T_* gy_p = ptr<T_>(grad_y);
    const T_* c0_p = ptr<T_>(c0);
    const T_* w_hh_p = ptr<T_>(w_hh);
    const T_* act_p = ptr<T_>(act);
    const T_* cs_p = ptr<T_>(cs);
    const int64_t* len_p = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    T_* dg_p = d_gates.mutable_data_ptr<T_>();
    T_* gh_p = grad_h.mutable_data_ptr<T_>();
    T_* gc_p = grad_c.mutable_data_ptr<T_>();
    run_team(panels, [&](int tid, int n, Barrier& barrier) {
      int64_t p0, p1;
      team_slice(panels, tid, n, p0, p1);
      Scratch<T_> w_pack((p1 - p0) * 4 * H * U);
      k.pack_unit_columns(w_hh_p, H, p0, p1, w_pack.get());
      BackwardStep<T_> s{B, H, w_pack.get(), nullptr, nullptr, nullptr, nullptr, nullptr,
                         gh_p, gc_p, nullptr, len_p, 0};
      // Steps T-1 .. 0, then the final one (t = -1): grad_h0 += d_gates[0] w_hh.
      for (int64_t t = T - 1; t >= -1; --t) {
        s.t = t;
        s.dg_next = t + 1 < T ? dg_p + (t + 1) * B * 4 * H : nullptr;
        if (t >= 0) {
          s.act = act_p + t * B * 4 * H;
          s.c_prev = t == 0 ? c0_p : cs_p + (t - 1) * B * H;
          s.c = cs_p + t * B * H;
          s.grad_y = gy_p + t * B * H;
          s.dg = dg_p + t * B * 4 * H;
        } else {
          s.act = nullptr;
        }
        k.backward_step(s, p0, p1);
        if (t >= 0) barrier.wait();
      }
    });
  });
  return {d_gates, grad_h, grad_c};
}

}  // namespace cpu
}  // namespace wmkernels
