#include <cstdio>

#include "check.h"

int main() {
  run_lstm_math_tests();
  run_lstm_cell_cpu_tests();
  run_memory_ops_tests();
  run_memory_wm_lstm_tests();
  run_lstm_sequence_cpu_tests();
  run_persistent_team_tests();
  std::printf("%d checks, %d failures\n", wmk_test::checks(), wmk_test::failures());
  return wmk_test::failures() == 0 ? 0 : 1;
}
