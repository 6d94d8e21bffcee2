// with_rows: the dispatch of a tail of rows to a tile of that many rows,
// shared by the tile kernels compiled per instruction set (isa/, bf16/).
// Include it only from those translation units: it lives in the namespace
// CPU_CAPABILITY of each, so each copy keeps its own body (see
// lstm_rows_isa.cpp for why no plain shared inline helper is called there).
#pragma once

#include <cstdint>
#include <type_traits>

namespace wmkernels {
namespace cpu {
namespace CPU_CAPABILITY {

// f(std::integral_constant<int, n>) for 0 < n < MR (a tail of n rows, one
// tile); nothing for n = 0.
template <int MR, typename F>
inline __attribute__((always_inline)) void with_rows(int64_t n, const F& f) {
  static_assert(MR <= 6, "tile rows");
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: if constexpr (MR > 2) f(std::integral_constant<int, 2>{}); break;
    case 3: if constexpr (MR > 3) f(std::integral_constant<int, 3>{}); break;
    case 4: if constexpr (MR > 4) f(std::integral_constant<int, 4>{}); break;
    case 5: if constexpr (MR > 5) f(std::integral_constant<int, 5>{}); break;
    default: break;
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace wmkernels
