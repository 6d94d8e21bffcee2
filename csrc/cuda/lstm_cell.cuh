// CUDA launchers of the lstm_cell kernels. Raw pointers, sizes and a stream:
// nothing from torch, so these compile with plain nvcc (CMake compile check)
// and the torch-facing launcher that unpacks tensors stays thin.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace wmkernels {
namespace cuda {

// Forward of lstm_cell over contiguous row-major buffers:
//   gates [batch, 4*hidden] (pre-activations, order i, f, g, o),
//   c_prev [batch, hidden] -> h, c [batch, hidden], act [batch, 4*hidden]
//   (activated gates, saved for backward).
// Launches nothing when batch * hidden == 0. Returns the launch error, if any.
// Instantiated for float and double.
template <typename T>
cudaError_t launch_lstm_cell_forward(const T* gates, const T* c_prev, T* h,
                                     T* c, T* act, int64_t batch,
                                     int64_t hidden, cudaStream_t stream);

}  // namespace cuda
}  // namespace wmkernels
