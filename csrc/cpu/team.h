// A persistent thread team for the CPU time loops (DeepCPU-style): the same
// threads stay alive for a whole sequence and meet once per step at a
// lightweight barrier, instead of a fork/join per step.
//
// Team::run(n, fn) runs fn(tid, size, barrier) on `size` threads at once and
// returns when all are done; all of them run concurrently, so fn may meet at
// `barrier` (of size). The threads are torch's own OpenMP threads (one
// parallel region per call, the caller is tid 0): the workers that torch's
// last op left spinning take the team's work at once, where a pool of our own
// would compete with them for the cores. size is n, or fewer when OpenMP gives
// fewer threads, or 1 inside a parallel region (a nested call); every kernel
// run on the team gives the same bits for any size. A child forked after
// the threads exist must set one thread, as for torch's own ops (GNU OpenMP
// cannot start a region there). Without OpenMP (the
// ThreadSanitizer build) the team is n std::threads started per call.
//
// Barrier: a sense-reversing counter (atomics with acquire/release). Waiters
// spin with a pause instruction for a while (a step is tens of microseconds),
// then yield the core (the machine may be oversubscribed: more threads than
// cores, or other processes); no mutex, no syscall on the fast path.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace wmkernels {
namespace cpu {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  // Resizes the barrier; only before any thread has called wait().
  void reset(int n) { n_ = n; }
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Blocks until all n threads have called wait() for this round. Everything a
  // thread wrote before its wait() is visible to every thread after theirs.
  void wait();

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<uint32_t> round_{0};
  int n_;
};

class Team {
 public:
  using Work = std::function<void(int tid, int n, Barrier& barrier)>;
  // fn on up to n >= 1 threads at once (see above). fn must not throw (a
  // thread that left the loop early would leave the others waiting at the
  // barrier). Returns the number of threads that ran.
  static int run(int n, const Work& fn);
};

// Slice [begin, end) of `count` items owned by `tid` of `n` (contiguous,
// sizes differ by at most one).
inline void team_slice(int64_t count, int tid, int n, int64_t& begin, int64_t& end) {
  begin = count * tid / n;
  end = count * (tid + 1) / n;
}

}  // namespace cpu
}  // namespace wmkernels
