// TORCH_CHECKs shared by the memory-op and WM-LSTM entry points (defence in
// depth: wmkernels.ops checks first; a direct call must still never read or
// write out of bounds).
#pragma once

#include <cstdint>
#include <initializer_list>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace wmkernels {
namespace cpu {

// A defined, strided CPU tensor of `dim` dimensions, float32 or float64 (or
// bfloat16 where the op takes it).
inline void check_float_cpu(const at::Tensor& t, const char* op, const char* name,
                            int64_t dim, bool bf16 = false) {
  TORCH_CHECK(t.defined(), "wmkernels::", op, ": ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "wmkernels::", op, " (CPU): ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, "wmkernels::", op, ": ", name,
              " must be a strided (dense) tensor, got layout ", t.layout());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                  (bf16 && t.scalar_type() == at::kBFloat16),
              "wmkernels::", op, " (CPU): ", name, " must be ",
              bf16 ? "float32, float64 or bfloat16" : "float32 or float64", ", got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "wmkernels::", op, ": ", name, " must be ", dim,
              "-D, got shape ", t.sizes());
}

// check_float_cpu + the dtype of `like` + exactly these sizes.
inline void check_like(const at::Tensor& t, const at::Tensor& like, const char* op,
                       const char* name, std::initializer_list<int64_t> sizes,
                       bool bf16 = false) {
  check_float_cpu(t, op, name, static_cast<int64_t>(sizes.size()), bf16);
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "wmkernels::", op, ": ", name,
              " has dtype ", t.scalar_type(), ", expected ", like.scalar_type());
  TORCH_CHECK(t.sizes().equals(sizes), "wmkernels::", op, ": ", name,
              " must have shape ", at::IntArrayRef(sizes), ", got ", t.sizes());
}

// The memory's S and D must be at least 1 (contract §5).
inline void check_slots(const char* op, int64_t S, int64_t D) {
  TORCH_CHECK(S >= 1 && D >= 1, "wmkernels::", op,
              ": the memory needs S >= 1 slots of width D >= 1, got S=", S, ", D=", D);
}

}  // namespace cpu
}  // namespace wmkernels
