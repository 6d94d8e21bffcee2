// Team::run on torch's own OpenMP threads, and the spin-then-yield Barrier.
// Plain C++ (no ATen), so the ThreadSanitizer test builds it on its own; that
// build has no OpenMP (libgomp is not instrumented, so TSan cannot see its
// hand-offs) and runs the fallback launcher of std::threads, which exercises
// the same Barrier.
#include "team.h"

#include <algorithm>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace wmkernels {
namespace cpu {
namespace {

// Pause iterations before a waiter starts yielding its core: ~4000 x ~65
// cycles (Zen 4 PAUSE) is ~0.1 ms, longer than one step of the loops here.
constexpr int kSpins = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until ready() holds: spin, then yield.
template <typename Ready>
void spin_until(const Ready& ready) {
  for (int i = 0; !ready(); ++i) {
    if (i < kSpins) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

int run_alone(const Team::Work& fn) {
  Barrier single(1);
  fn(0, 1, single);
  return 1;
}

}  // namespace

void Barrier::wait() {
  if (n_ == 1) return;
  // The round can only move on once this thread has arrived, so `round` is
  // the one it waits in.
  const uint32_t round = round_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    round_.store(round + 1, std::memory_order_release);
    return;
  }
  spin_until([&] { return round_.load(std::memory_order_acquire) != round; });
}

#ifdef _OPENMP

int Team::run(int n, const Work& fn) {
  if (n <= 1 || omp_in_parallel()) return run_alone(fn);
  // A region of torch's own size when the team fits in it, as ATen's regions
  // are: libgomp then reuses the threads torch's last op left spinning
  // instead of resizing its pool (the team's extra threads idle through).
  const int region = std::max(n, omp_get_max_threads());
  Barrier barrier(n);
  std::atomic<int> size{0};
#pragma omp parallel num_threads(region)
  {
    const int tid = omp_get_thread_num();
    if (tid == 0) {
      // libgomp may give fewer threads than asked (thread limit, dynamic
      // adjustment): the team is the threads that came, known before anyone
      // meets at the barrier.
      const int got = std::min(omp_get_num_threads(), n);
      barrier.reset(got);
      size.store(got, std::memory_order_release);
    }
    int team = 0;
    spin_until([&] { return (team = size.load(std::memory_order_acquire)) != 0; });
    if (tid < team) fn(tid, team, barrier);
  }
  return size.load(std::memory_order_relaxed);
}

#else

int Team::run(int n, const Work& fn) {
  if (n <= 1) return run_alone(fn);
  Barrier barrier(n);
  std::vector<std::thread> workers;
  workers.reserve(n - 1);
  for (int tid = 1; tid < n; ++tid) {
    workers.emplace_back([&, tid] { fn(tid, n, barrier); });
  }
  fn(0, n, barrier);
  for (std::thread& w : workers) w.join();
  return n;
}

#endif

}  // namespace cpu
}  // namespace wmkernels
