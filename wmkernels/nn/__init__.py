"""Drop-in layers over ``wmkernels.ops`` (contract §2).

- ``LSTM``, ``LSTMCell``: replacements for ``torch.nn.LSTM`` / ``LSTMCell``
  (same constructor, parameter names and state_dict, inputs and outputs).
- ``WorkingMemory``: stateless read / FIFO write / gated update of a memory ``[B, S, D]``.
- ``WMLSTM``, ``WMLSTMCell``: the working-memory LSTM of contract §1.4, whole sequence or one step.
- ``patch(model)``: swap every ``torch.nn.LSTM`` / ``LSTMCell`` of a model for the drop-ins.

The layer classes are registered as safe globals, so a model saved whole
(``torch.save(model)``) loads with ``torch.load``'s default ``weights_only=True``
as far as these layers go (other classes of the model need the same, as for any
module saved whole).
"""
import torch

from wmkernels.nn.cell import LSTMCell
from wmkernels.nn.lstm import LSTM
from wmkernels.nn.memory import WorkingMemory
from wmkernels.nn.patch import patch
from wmkernels.nn.wm_lstm import WMLSTM, WMLSTMCell

torch.serialization.add_safe_globals([LSTM, LSTMCell, WMLSTM, WMLSTMCell, WorkingMemory])

__all__ = ["LSTM", "LSTMCell", "WMLSTM", "WMLSTMCell", "WorkingMemory", "patch"]
