"""examples/train_copy_task.py runs and learns: 40 steps of a short copy task
take the loss well below chance (ln K), which only recalling can do (the
symbols are uniform and independent)."""
from __future__ import annotations

import importlib.util
import math
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_copy_task.py"


def test_copy_task_learns(fresh_seed, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))  # the example imports its siblings
    spec = importlib.util.spec_from_file_location("train_copy_task", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    loss = example.main(["--steps", "40", "--batch", "16", "--length", "3", "--delay", "1",
                         "--seed", str(fresh_seed)])
    assert loss < 0.8 * math.log(6), capsys.readouterr().out
