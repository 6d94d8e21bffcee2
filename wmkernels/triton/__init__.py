"""Triton kernels of every op of SPEC section 1, one module per op family.

    math.py         sigmoid, tanh and the LSTM cell (forward and backward), written once
    tiles.py        tile helpers shared by the kernels (row-block matrix products) and
                    the host-side launch heuristics
    cell.py         lstm_cell
    memory.py       wm_read, wm_shift_write, wm_write
    gates.py        gate-tile helpers of the recurrent kernels (products, the cell step)
    sequence.py     lstm_sequence (time loop inside the kernels)
    schedule.py     how the recurrent kernels spread over programs and launches
                    (schedule_env.py: the setting; sync.py: the per-step barriers)
    probes.py       device probes of the floor model (grid barrier, L2 reads)
    wm_sequence.py  wm_lstm_sequence, fifo and gated (time loop inside one launch)
    launch.py, aot.py  every launch (device guard, recorder); the ahead-of-time compile check

Every launch is wrapped as a ``torch.library.custom_op`` in the namespace
``wmkernels_triton`` with a fake implementation, so ``torch.compile`` traces it.
On CPU tensors the kernels run only under ``TRITON_INTERPRET=1``, which must be
set before this package is imported.
"""
