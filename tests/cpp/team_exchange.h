// The exchange pattern of the persistent loops on a Team, with no kernel
// around it: per step every thread writes its slice of a shared state and,
// after the barrier, reads all of it. Shared by the ATen-linked C++ tests and
// the ThreadSanitizer build (tests/cpp/tsan), which has no ATen.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/team.h"

namespace wmk_test {

// Runs `steps` steps on n threads over a state of `width` integers: state_t[j]
// = (Σ_i state_{t-1}[i] + j + t) mod 1000003, double-buffered like h_t (one
// barrier a step). Returns the final state and sets `ran` to the threads used.
inline std::vector<int64_t> team_exchange(int n, int64_t width, int64_t steps, int& ran) {
  std::vector<int64_t> buf(2 * width, 1);
  ran = wmkernels::cpu::Team::run(n, [&](int tid, int size, wmkernels::cpu::Barrier& barrier) {
    int64_t begin, end;
    wmkernels::cpu::team_slice(width, tid, size, begin, end);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t* prev = buf.data() + (t & 1) * width;
      int64_t* next = buf.data() + ((t + 1) & 1) * width;
      int64_t sum = 0;
      for (int64_t i = 0; i < width; ++i) sum += prev[i];
      for (int64_t j = begin; j < end; ++j) next[j] = (sum + j + t) % 1000003;
      barrier.wait();
    }
  });
  return std::vector<int64_t>(buf.begin() + (steps & 1) * width,
                              buf.begin() + (steps & 1) * width + width);
}

// The same recurrence on one thread without the team (the expected result).
inline std::vector<int64_t> serial_exchange(int64_t width, int64_t steps) {
  std::vector<int64_t> state(width, 1), next(width);
  for (int64_t t = 0; t < steps; ++t) {
    int64_t sum = 0;
    for (int64_t v : state) sum += v;
    for (int64_t j = 0; j < width; ++j) next[j] = (sum + j + t) % 1000003;
    state.swap(next);
  }
  return state;
}

}  // namespace wmk_test
