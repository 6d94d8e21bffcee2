// Matrix products on the register-tiled kernels of lstm_tiles.h (gemm_rows),
// for the cpu backend's products that are not part of a persistent loop: the
// per-step products of the WM-LSTM ([B, K] x [K, N] with B of a few rows)
// and the weight gradients over all steps.
//
// Why not ATen's GEMM: on AMD CPUs torch's MKL takes its generic code path
// (mkl_blas_def_*), measured at about a third of the cores' AVX-512 rate for
// a 16-row product, and it repacks the weight at every call; and its
// summation order changes with the thread count for 5-11 rows. Here every
// output element is one fused multiply-add chain over k = 0, 1, ... whatever
// the partition, so the bits do not depend on the thread count.
#pragma once

#include <ATen/core/Tensor.h>

namespace wmkernels {
namespace cpu {

// out [M, N] = a [M, K] (any strides) x b [K, N] (unit column stride)
// (+ bias [N], contiguous, when defined); out has unit column stride. Rows
// and columns are cut into blocks spread over at::parallel_for's threads.
void tile_mm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                 const at::Tensor& bias = at::Tensor());

// The same into a new contiguous tensor.
at::Tensor tile_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias = at::Tensor());

}  // namespace cpu
}  // namespace wmkernels
