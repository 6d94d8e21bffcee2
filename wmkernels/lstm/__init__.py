"""The LSTM family: ``lstm_cell`` and ``lstm_sequence``.

    lstm_cell_triton.py      lstm_cell in Triton
    lstm_sequence_triton.py  lstm_sequence in Triton (time loop inside the kernels)

Nothing is imported here: the Triton modules need ``TRITON_INTERPRET`` set
before they load on a machine without a GPU, and Triton may be absent.
"""
