"""When a drop-in layer runs torch's own forward instead of wmkernels' ops."""
from __future__ import annotations

from torch import Tensor

from wmkernels import ops


def runs_on_torch(op: str, x: Tensor, *tensors, with_projection: bool = False, **sizes: int) -> bool:
    """True when the layer whose op is ``op`` should run torch's own forward
    for input ``x``: under ``torch.autocast`` (its casts are torch's to decide;
    the ops compute in their inputs' dtype), or where ``op``'s backend for these
    tensors is ``aten`` (``tensors``: every input and weight, for whether a
    gradient is wanted; ``sizes``: the call's dimensions, for auto's rules;
    ``with_projection``: an LSTM with ``proj_size > 0``, always aten's, or a
    ``BackendUnavailableError`` where another backend is named)."""
    if ops.autocast_enabled(x.device.type):
        return True
    inference = ops.wants_no_gradient(x, *tensors)
    return ops.chosen_backend(op, x.device, x.dtype, inference, with_projection=with_projection,
                              **sizes) == "aten"
