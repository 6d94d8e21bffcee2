"""The working-memory LSTM: ``wm_lstm_sequence``, fifo and gated.

    wm_lstm_sequence_triton.py        the Triton op (one batch tile a program) and its launches
    wm_lstm_sequence_split_triton.py  the split grid (hidden units across programs)

Nothing is imported here (Triton may be absent, and ``TRITON_INTERPRET`` must
be set before a Triton module loads).
"""
