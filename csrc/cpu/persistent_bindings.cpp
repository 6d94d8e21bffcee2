// Registration of the ops added with the persistent CPU loops (a fragment of
// the wmkernels library, beside the schemas of csrc/bindings.cpp).
#include <torch/library.h>

#include "lstm_sequence.h"
#include "persistent_lstm.h"

TORCH_LIBRARY_FRAGMENT(wmkernels, m) {
  // lstm_sequence_forward without anything saved for a backward -> (y, h_n, c_n).
  m.def(
      "lstm_sequence_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor)");
  // Threads the last persistent loop ran on (tests).
  m.def("cpu_last_team_size() -> int",
        [] { return static_cast<int64_t>(wmkernels::cpu::persistent_last_team_size()); });
}

TORCH_LIBRARY_IMPL(wmkernels, CPU, m) {
  m.impl("lstm_sequence_inference", &wmkernels::cpu::lstm_sequence_inference);
}
