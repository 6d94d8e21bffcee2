"""``WMKERNELS_TRITON_SCHEDULE``: which schedule the recurrent Triton kernels
run (``schedule.py`` says what each does). Free of Triton imports, so the
package checks the variable at import, with its other settings."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

SCHEDULE_ENV = "WMKERNELS_TRITON_SCHEDULE"
KINDS = ("tile", "steps", "persistent")


@dataclass(frozen=True)
class Schedule:
    kind: str = "tile"
    reversed: bool = False


def requested() -> Schedule:
    """The schedule ``WMKERNELS_TRITON_SCHEDULE`` asks for (``ValueError`` when unreadable)."""
    text = os.environ.get(SCHEDULE_ENV, "tile").strip().lower() or "tile"
    kind, colon, order = text.partition(":")
    if kind not in KINDS or (colon and order != "reversed"):
        raise ValueError(f"{SCHEDULE_ENV}={text!r}: expected one of {', '.join(KINDS)}, "
                         "optionally followed by ':reversed'")
    return Schedule(kind, order == "reversed")


@contextlib.contextmanager
def using(text: str) -> Iterator[Schedule]:
    """Run the block with ``WMKERNELS_TRITON_SCHEDULE=text`` (checked first)."""
    previous = os.environ.get(SCHEDULE_ENV)
    os.environ[SCHEDULE_ENV] = text
    try:
        yield requested()
    finally:
        if previous is None:
            del os.environ[SCHEDULE_ENV]
        else:
            os.environ[SCHEDULE_ENV] = previous
