"""The working-memory family: ``wm_read``, ``wm_shift_write``, ``wm_write``.

    memory_ops_triton.py  the three ops in Triton, and the memory tile helpers
                          the WM-LSTM kernels reuse

Nothing is imported here (Triton may be absent, and ``TRITON_INTERPRET`` must
be set before a Triton module loads).
"""
