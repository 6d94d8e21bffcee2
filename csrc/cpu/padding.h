// Padding past a row's length is "don't care" (a PackedSequence never holds
// it): a NaN or inf there must reach no output and no gradient. The kernels
// skip those steps, but a weight gradient summed over every step, dW = dGᵀ x,
// multiplies their zero rows of dG by x, and 0 · NaN is NaN. This replaces
// them by zeros first, by selection (so too the initial state of a row of
// length 0, which no step reads).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/ge.h>

namespace wmkernels {
namespace cpu {

// x [T, B, F] with x[t, b] = 0 where t >= lengths[b] (lengths: int64 [B] on
// the CPU, already checked; none: x itself). Also for the initial state as
// [1, B, F]: zero for the rows of length 0, which never read it.
inline at::Tensor zero_past_lengths(const at::Tensor& x, const std::optional<at::Tensor>& lengths) {
  if (!lengths.has_value() || !lengths->defined() || x.numel() == 0) return x;
  const at::Tensor steps = at::arange(x.size(0), lengths->options()).unsqueeze(1);  // [T, 1]
  const at::Tensor padded = at::ge(steps, lengths->unsqueeze(0));                   // [T, B]
  if (!padded.any().item<bool>()) return x;
  return x.masked_fill(padded.unsqueeze(2), 0);
}

}  // namespace cpu
}  // namespace wmkernels
