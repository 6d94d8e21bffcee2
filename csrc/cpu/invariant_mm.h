// Matrix products over few rows whose result does not depend on the thread
// count. torch's GEMM (MKL) splits a product of 5-11 rows between threads in
// a way that changes the summation order (results up to ~1e-6 apart in
// float32 between 1 and 2 threads; 1-4 rows and 12 or more were found
// invariant): at B = 1-3 the input projection of a short sequence and the
// gradient of x are such products. Here few rows (up to kFewRows) are cut
// into a partition fixed by the row count alone, blocks of kBlockRows rows,
// each block one product (sequential inside at::parallel_for's team, and of a
// size found invariant anyway): the same sums whatever the thread count.
// Measured (EPYC Zen 4, 2 cores under load, 1 thread, T·B = 9-10, I = 96,
// H = 65): the two products take ~2.2x as long in 4-row blocks, ~3% of the
// op's forward and backward; from 12 rows MKL is left alone (27 rows in
// blocks cost ~6% of the op for nothing).
#pragma once

#include <algorithm>
#include <optional>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

namespace wmkernels {
namespace cpu {

// (bias +) a b for a [R, K], b [K, N] (any strides), bias [N] or none -> [R, N].
inline at::Tensor invariant_addmm(const std::optional<at::Tensor>& bias, const at::Tensor& a,
                                  const at::Tensor& b) {
  constexpr int64_t kFewRows = 16, kBlockRows = 4;
  const int64_t R = a.size(0);
  if (R > kFewRows) return bias.has_value() ? at::addmm(*bias, a, b) : at::mm(a, b);
  at::Tensor out = at::empty({R, b.size(1)}, a.options());
  const int64_t blocks = (R + kBlockRows - 1) / kBlockRows;
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t r0 = k * kBlockRows, n = std::min(kBlockRows, R - r0);
      at::Tensor block = out.narrow(0, r0, n);
      if (bias.has_value()) {
        at::addmm_out(block, *bias, a.narrow(0, r0, n), b);
      } else {
        at::mm_out(block, a.narrow(0, r0, n), b);
      }
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace wmkernels
