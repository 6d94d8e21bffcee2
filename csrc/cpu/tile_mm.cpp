// See tile_mm.h.
#include "tile_mm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "lstm_tiles.h"

namespace wmkernels {
namespace cpu {

void tile_mm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                 const at::Tensor& bias) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  TORCH_CHECK(b.size(0) == K && out.size(0) == M && out.size(1) == N, "tile_mm: sizes");
  TORCH_CHECK(N <= 1 || (b.stride(1) == 1 && out.stride(1) == 1), "tile_mm: column strides");
  TORCH_CHECK(!bias.defined() || (bias.numel() == N && bias.is_contiguous()), "tile_mm: bias");
  if (M == 0 || N == 0) return;
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "wmkernels_tile_mm", [&] {
    const LstmTileKernels<scalar_t>& k = lstm_tile_kernels<scalar_t>();
    const scalar_t* a_p = a.const_data_ptr<scalar_t>();
    const scalar_t* b_p = b.const_data_ptr<scalar_t>();
    const scalar_t* bias_p = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* c_p = out.mutable_data_ptr<scalar_t>();
    const int64_t sam = a.stride(0), sak = a.stride(1), ldb = b.stride(0), ldc = out.stride(0);
    // Many rows (the weight gradients over all steps): one block of rows per
    // thread, all columns, so each k-block of b is read once per thread and
    // stays in its L2 across the thread's row tiles (measured: 96-row blocks
    // re-streamed b per block, 1.2x the training time at T=256 B=16 H=256).
    // Few rows (a step's product): blocks of 4 vectors of columns (one tile's
    // width) spread the columns, i.e. the weight, over the threads.
    const int64_t threads = at::get_num_threads();
    const bool many_rows = M >= 96 * threads;
    const int64_t cols = many_rows ? N : 4 * k.units;
    const int64_t rows = many_rows ? ((M + threads - 1) / threads + 5) / 6 * 6 : 96;
    const int64_t col_blocks = (N + cols - 1) / cols, row_blocks = (M + rows - 1) / rows;
    at::parallel_for(0, col_blocks * row_blocks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t n0 = (task / row_blocks) * cols, m0 = (task % row_blocks) * rows;
        const int64_t n = N - n0 < cols ? N - n0 : cols, m1 = M - m0 < rows ? M : m0 + rows;
        k.gemm_rows(a_p, sam, sak, b_p + n0, ldb, n, K, c_p + n0, ldc, m0, m1);
        if (bias_p != nullptr) {
          for (int64_t m = m0; m < m1; ++m)
            for (int64_t j = 0; j < n; ++j) c_p[m * ldc + n0 + j] += bias_p[n0 + j];
        }
      }
    });
  });
}

at::Tensor tile_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, b.options());
  tile_mm_out(out, a, b, bias);
  return out;
}

}  // namespace cpu
}  // namespace wmkernels
