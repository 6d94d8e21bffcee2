// ThreadSanitizer build of the team and its barrier (csrc/cpu/team.cpp and
// the exchange of tests/cpp/team_exchange.h), without ATen (an uninstrumented
// torch would drown the report) and without OpenMP (libgomp's hand-offs are
// invisible to TSan; team.cpp's std::thread launcher runs the same Barrier):
// 1, 2, 3 and 8 threads, more threads than cores included, two teams' calls
// in a row and a call racing another from a second thread. Built and run by
// CMakeLists.txt (ctest) and by tests/test_cpu_persistent.py with g++
// -fsanitize=thread; exit code 0 and no TSan report when all is well.
#include <cstdio>
#include <thread>

#include "../team_exchange.h"

int main() {
  int failures = 0;
  const int64_t width = 37, steps = 200;
  const auto expected = wmk_test::serial_exchange(width, steps);
  for (int n : {1, 2, 3, 8}) {
    for (int call = 0; call < 2; ++call) {
      int ran = 0;
      if (wmk_test::team_exchange(n, width, steps, ran) != expected || ran != n) {
        std::fprintf(stderr, "team of %d (call %d): wrong result or ran on %d threads\n", n, call, ran);
        ++failures;
      }
    }
  }
  int ran_a = 0, ran_b = 0;
  std::vector<int64_t> a, b;
  std::thread other([&] { b = wmk_test::team_exchange(3, width, steps, ran_b); });
  a = wmk_test::team_exchange(3, width, steps, ran_a);
  other.join();
  if (a != expected || b != expected) {
    std::fprintf(stderr, "concurrent calls: wrong result (ran on %d and %d threads)\n", ran_a, ran_b);
    ++failures;
  }
  std::printf("team tsan: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
