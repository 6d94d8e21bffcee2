// Run-time choice among the per-instruction-set copies of the LSTM row
// kernels (lstm_rows.h). WMK_HAVE_AVX2 / WMK_HAVE_AVX512 / WMK_HAVE_AVX512_BF16
// are defined by the build (setup.py, CMakeLists.txt) when it compiled those
// copies (x86-64 only).
#include "lstm_rows.h"

#include <cstdlib>
#include <cstring>

namespace wmkernels {
namespace cpu {
namespace {

enum class Capability { kDefault = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

Capability hardware_capability() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
#if defined(WMK_HAVE_AVX512)
  const bool avx512 =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma");
#if defined(WMK_HAVE_AVX512_BF16)
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return Capability::kAvx512Bf16;
#endif
  if (avx512) return Capability::kAvx512;
#endif
#if defined(WMK_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
      __builtin_cpu_supports("f16c")) {
    return Capability::kAvx2;
  }
#endif
#endif
  return Capability::kDefault;
}

Capability chosen_capability() {
  static const Capability chosen = [] {
    Capability best = hardware_capability();
    const char* env = std::getenv("WMKERNELS_CPU_CAPABILITY");
    if (env != nullptr) {
      Capability wanted = best;
      if (std::strcmp(env, "default") == 0) wanted = Capability::kDefault;
      if (std::strcmp(env, "avx2") == 0) wanted = Capability::kAvx2;
      if (std::strcmp(env, "avx512") == 0) wanted = Capability::kAvx512;
      if (std::strcmp(env, "avx512_bf16") == 0) wanted = Capability::kAvx512Bf16;
      if (wanted < best) best = wanted;
    }
    return best;
  }();
  return chosen;
}

}  // namespace

const char* cpu_capability() {
  switch (chosen_capability()) {
    case Capability::kAvx512Bf16: return "avx512_bf16";
    case Capability::kAvx512: return "avx512";
    case Capability::kAvx2: return "avx2";
    default: return "default";
  }
}

namespace {

// The kernel getters of one instruction set.
struct Copy {
  const LstmRowKernels<float>& (*float_kernels)();
  const LstmRowKernels<double>& (*double_kernels)();
};

const Copy& chosen_copy() {
  static const Copy copy = []() -> Copy {
    switch (chosen_capability()) {
#if defined(WMK_HAVE_AVX512)
      case Capability::kAvx512Bf16:  // the AVX-512 copy; bf16 has its own kernels
      case Capability::kAvx512:
        return {&AVX512::lstm_row_kernels_float, &AVX512::lstm_row_kernels_double};
#endif
#if defined(WMK_HAVE_AVX2)
      case Capability::kAvx2:
        return {&AVX2::lstm_row_kernels_float, &AVX2::lstm_row_kernels_double};
#endif
      default:
        return {&DEFAULT::lstm_row_kernels_float, &DEFAULT::lstm_row_kernels_double};
    }
  }();
  return copy;
}

}  // namespace

template <>
const LstmRowKernels<float>& lstm_row_kernels<float>() {
  return chosen_copy().float_kernels();
}

template <>
const LstmRowKernels<double>& lstm_row_kernels<double>() {
  return chosen_copy().double_kernels();
}

}  // namespace cpu
}  // namespace wmkernels
