"""Drop-in layers over ``wmkernels.ops`` (SPEC section 2).

- ``LSTM``, ``LSTMCell``: replacements for ``torch.nn.LSTM`` / ``LSTMCell``
  (same constructor, parameter names and state_dict, inputs and outputs).
- ``WorkingMemory``: stateless read / FIFO write / gated update of a memory ``[B, S, D]``.
- ``WMLSTM``, ``WMLSTMCell``: the working-memory LSTM of SPEC 1.4, whole sequence or one step.
- ``patch(model)``: swap every ``torch.nn.LSTM`` / ``LSTMCell`` of a model for the drop-ins.
"""
from wmkernels.nn.cell import LSTMCell
from wmkernels.nn.lstm import LSTM
from wmkernels.nn.memory import WorkingMemory
from wmkernels.nn.patch import patch
from wmkernels.nn.wm_lstm import WMLSTM, WMLSTMCell

__all__ = ["LSTM", "LSTMCell", "WMLSTM", "WMLSTMCell", "WorkingMemory", "patch"]
