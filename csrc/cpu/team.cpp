// The thread pool behind Team (team.h) and the spin-then-yield Barrier.
// Plain C++ (no ATen), so the ThreadSanitizer test builds it on its own.
#include "team.h"

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

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

// Workers are tid 1..n-1 of a run; they sleep on `posted` between runs (one
// wake-up per call, not per step). Threads are detached and the pool is never
// freed: it lives until the process exits.
struct Pool {
  std::mutex busy;  // held by the run in progress
  std::mutex m;
  std::condition_variable posted;
  uint64_t job = 0;  // guarded by m
  const Team::Work* fn = nullptr;
  Barrier* barrier = nullptr;
  int n = 0;
  std::atomic<int> finished{0};
  int workers = 0;  // guarded by busy

  void grow(int count) {
    for (; workers < count; ++workers) {
      std::thread([this, tid = workers + 1] { serve(tid); }).detach();
    }
  }

  void serve(int tid) {
    uint64_t seen = 0;
    for (;;) {
      const Team::Work* f;
      Barrier* b;
      int size;
      {
        std::unique_lock<std::mutex> lock(m);
        posted.wait(lock, [&] { return job != seen; });
        seen = job;
        f = fn;
        b = barrier;
        size = n;
      }
      if (tid < size) {
        (*f)(tid, size, *b);
        finished.fetch_add(1, std::memory_order_release);
      }
    }
  }
};

std::mutex pool_mutex;
Pool* the_pool = nullptr;

// A forked child has none of the parent's worker threads: it starts a new pool
// (the old one, and its possibly held mutexes, are left behind unused).
void forget_pool_in_child() { the_pool = nullptr; }

Pool* pool() {
  std::lock_guard<std::mutex> lock(pool_mutex);
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, &forget_pool_in_child);
    return true;
  }();
  (void)registered;
  if (the_pool == nullptr) the_pool = new Pool();
  return the_pool;
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

int Team::run(int n, const Work& fn) {
  if (n > 1) {
    Pool* p = pool();
    std::unique_lock<std::mutex> busy(p->busy, std::try_to_lock);
    if (busy.owns_lock()) {
      Barrier barrier(n);
      p->grow(n - 1);
      p->finished.store(0, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(p->m);
        p->fn = &fn;
        p->barrier = &barrier;
        p->n = n;
        ++p->job;
      }
      p->posted.notify_all();
      fn(0, n, barrier);
      spin_until([&] { return p->finished.load(std::memory_order_acquire) == n - 1; });
      return n;
    }
  }
  Barrier single(1);
  fn(0, 1, single);
  return 1;
}

}  // namespace cpu
}  // namespace wmkernels
