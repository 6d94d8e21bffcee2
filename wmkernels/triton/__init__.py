"""The Triton building blocks shared by the op families' kernels.

    lstm_math.py     sigmoid, tanh and the LSTM cell (forward and backward), written once
    lstm_gates.py    gate-tile helpers of the recurrent kernels (products, the cell step)
    tiles.py         tile helpers shared by the kernels (row-block matrix products) and
                     the host-side launch heuristics
    schedule.py      how the recurrent kernels spread over programs and launches
                     (schedule_env.py: the setting; sync.py: the per-step barriers)
    launch.py        every launch (device guard, recorder)

The kernels themselves live with their op family: ``wmkernels.lstm``
(lstm_cell_triton, lstm_sequence_triton), ``wmkernels.memory``
(memory_ops_triton) and ``wmkernels.wm_lstm`` (wm_lstm_sequence_triton and
its split grid); the ahead-of-time compile check and the device probes are
tools (``wmkernels.tools.aot``, ``wmkernels.tools.probes``).

Every launch is wrapped as a ``torch.library.custom_op`` in the namespace
``wmkernels_triton`` with a fake implementation, so ``torch.compile`` traces it.
On CPU tensors the kernels run only under ``TRITON_INTERPRET=1``, which must be
set before a kernel module is imported.
"""
