// The lstm_sequence time loops on a persistent thread team (team.h) with the
// tile kernels of lstm_tiles.h: each thread owns a fixed slice of the hidden
// units (whole panels of U units, all four gates), packs its slice of the
// weights once per call (sized to stay in its core's L2 where it fits: w_hh
// is 16·H² bytes in fp32, 1 MiB at H = 256, half of it per core on two), and
// meets the others once per step at a barrier, where h_t (forward) or
// d_gates_t (backward) is exchanged through a shared buffer.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// Forward. x [T, B, I], h0/c0 [B, H], w_ih [4H, I], w_hh [4H, H] contiguous,
// one float dtype; bias [4H] or undefined; lengths int64 [B] or undefined.
// bfloat16 (x, h0, c0 and the weights; bias then float32): the kernels of
// lstm_tiles_bf16.h (avx512_bf16 only, else an error naming it); act and cs
// are float32, y, h_n and c_n bfloat16.
// save: also return what the backward needs, act [T, B, 4H] (activated
// gates) and cs [T, B, H]; without it they are undefined and the gates never
// leave the registers: (y, h_n, c_n, act, cs).
// The input projection of all steps runs on the team first, each thread for
// its own units over all T·B rows (so no barrier before the recurrence).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
persistent_lstm_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                        const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias,
                        const at::Tensor& lengths, bool save);

// Backward of the recurrence: grad_y [T, B, H], grad_h_n, grad_c_n [B, H],
// c0 [B, H], w_hh [4H, H], act, cs as saved, all contiguous
//   -> (d_gates [T, B, 4H], grad_h0, grad_c0). d_gates lives in a buffer the
// calling thread reuses: valid until its next persistent_lstm_* call.
std::tuple<at::Tensor, at::Tensor, at::Tensor>
persistent_lstm_backward(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                         const at::Tensor& grad_c_n, const at::Tensor& c0,
                         const at::Tensor& w_hh, const at::Tensor& act, const at::Tensor& cs,
                         const at::Tensor& lengths);

// Σ over rows of a contiguous [M, N] -> [N], each column summed in row order
// (thread-count invariant).
at::Tensor column_sum(const at::Tensor& a);

// Threads the last persistent call ran on (tests: the team really ran).
int persistent_last_team_size();

}  // namespace cpu
}  // namespace wmkernels
