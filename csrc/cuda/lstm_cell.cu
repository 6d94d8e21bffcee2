// CUDA forward of lstm_cell: indexing and launch only; the math is the shared
// wmkernels/lstm_math.h that the CPU kernels (and their tests) run.
#include "lstm_cell.cuh"

#include <algorithm>

#include <wmkernels/lstm_math.h>

namespace wmkernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU; the grid-stride loop does the rest.
constexpr int64_t kMaxBlocks = 65535;

// One thread per (b, j) element of [batch, hidden], grid-stride loop.
// All indices are 64-bit: batch * 4 * hidden may exceed 2^31.
template <typename T>
__global__ void lstm_cell_forward_kernel(const T* __restrict__ gates,
                                         const T* __restrict__ c_prev,
                                         T* __restrict__ h, T* __restrict__ c,
                                         T* __restrict__ act, int64_t hidden,
                                         int64_t numel) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < numel; idx += stride) {
    const int64_t b = idx / hidden;
    const int64_t j = idx - b * hidden;
    const int64_t g0 = b * 4 * hidden + j;  // gate i of element (b, j)
    T i, f, g, o, c_new, h_new;
    lstm_cell_forward_point<T>(gates[g0], gates[g0 + hidden],
                               gates[g0 + 2 * hidden], gates[g0 + 3 * hidden],
                               c_prev[idx], i, f, g, o, c_new, h_new);
    act[g0] = i;
    act[g0 + hidden] = f;
    act[g0 + 2 * hidden] = g;
    act[g0 + 3 * hidden] = o;
    c[idx] = c_new;
    h[idx] = h_new;
  }
}

}  // namespace

template <typename T>
cudaError_t launch_lstm_cell_forward(const T* gates, const T* c_prev, T* h,
                                     T* c, T* act, int64_t batch,
                                     int64_t hidden, cudaStream_t stream) {
  if (batch < 0 || hidden < 0) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0 || hidden == 0) {
    return cudaSuccess;
  }
  // batch * 4 * hidden must fit in int64 (it does for any allocatable tensor,
  // but never let the index arithmetic wrap).
  if (hidden > INT64_MAX / 4 / batch) {
    return cudaErrorInvalidValue;
  }
  const int64_t numel = batch * hidden;
  const int64_t blocks =
      std::min<int64_t>((numel + kThreads - 1) / kThreads, kMaxBlocks);
  lstm_cell_forward_kernel<T><<<static_cast<unsigned int>(blocks), kThreads, 0,
                                stream>>>(gates, c_prev, h, c, act, hidden,
                                          numel);
  return cudaGetLastError();
}

template cudaError_t launch_lstm_cell_forward<float>(const float*, const float*,
                                                     float*, float*, float*,
                                                     int64_t, int64_t,
                                                     cudaStream_t);
template cudaError_t launch_lstm_cell_forward<double>(const double*,
                                                      const double*, double*,
                                                      double*, double*, int64_t,
                                                      int64_t, cudaStream_t);

}  // namespace cuda
}  // namespace wmkernels
