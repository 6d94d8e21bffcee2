"""examples/memory_tasks.py and examples/char_lm.py: the tasks' data say what
they claim, the bits-per-character measure is right, and small versions of both
runs train, score and write their reports (JSON, markdown, PNG)."""
from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples(monkeypatch):
    """The example modules, imported as the scripts import each other (siblings)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import char_lm
    import common
    import memory_tasks

    return memory_tasks, char_lm, common


def test_copy_batch_recalls_the_shown_symbols(examples, fresh_seed):
    memory_tasks, _, _ = examples
    length, delay, symbols = 4, 3, 6
    x, targets, mask = memory_tasks.copy_batch(5, length, delay, symbols, torch.Generator().manual_seed(fresh_seed))
    assert x.shape == (2 * length + delay, 5, symbols + 1)
    shown = x[:length, :, :symbols].argmax(-1)
    assert torch.equal(targets[mask].view(length, 5), shown)
    assert x[length:length + delay].abs().sum() == 0  # the delay is blank
    assert torch.all(x[length + delay:, :, symbols] == 1) and mask.sum() == length * 5


def test_recall_batch_asks_for_a_stored_keys_value(examples, fresh_seed):
    memory_tasks, _, _ = examples
    pairs, keys, values, batch = 5, 7, 4, 64
    x, targets, mask = memory_tasks.recall_batch(batch, pairs, keys, values,
                                                 torch.Generator().manual_seed(fresh_seed))
    assert x.shape == (pairs + 2, batch, keys + values + 1)
    assert torch.equal(mask.nonzero()[:, 0], torch.full((batch,), pairs + 1))  # the step after the query
    assert x[pairs + 1].abs().sum() == 0  # a blank answer step
    for b in range(batch):
        stored = {int(x[t, b, :keys].argmax()): int(x[t, b, keys:keys + values].argmax()) for t in range(pairs)}
        assert len(stored) == pairs  # distinct keys
        assert x[:pairs, b].sum() == 2 * pairs and x[pairs, b].sum() == 2  # one key + one value; key + flag
        asked = int(x[pairs, b, :keys].argmax())
        assert targets[pairs + 1, b] == stored[asked]


def test_equal_parameter_counts(examples):
    _, _, common = examples
    wm = common.build("gated", 17, 8, 64, 16, 32)
    lstm = common.build("lstm", 17, 8, 64, 16, 32)
    assert isinstance(lstm.rnn, torch.nn.LSTM)
    assert abs(common.parameter_count(lstm) - common.parameter_count(wm)) <= 0.02 * common.parameter_count(wm)


def test_bits_per_character_of_a_uniform_model_is_log2_v(examples):
    """A model whose logits are all equal scores exactly log2(V) bits per character."""
    _, char_lm, _ = examples

    class Uniform(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 50), None

    data = torch.randint(0, 50, (1000,))
    assert char_lm.bits_per_character(Uniform(), data, 16, 8) == pytest.approx(math.log2(50))


def test_memory_tasks_small_run_writes_its_report(examples, tmp_path):
    memory_tasks, _, common = examples
    report = memory_tasks.main(["--quick", "--out", str(tmp_path)])
    runs = report["results"]
    assert {(r["task"], r["kind"]) for r in runs} == {(t, k) for t in ("copy", "recall") for k in common.KINDS}
    assert all(0 <= r["accuracy"] <= 1 and math.isfinite(r["loss"]) for r in runs)
    assert json.loads((tmp_path / "memory_tasks.json").read_text())["results"] == runs
    assert all(len(r["curve"]) == 3 for r in runs)  # a learning-curve point every 10 of 30 steps
    table = (tmp_path / "memory_tasks.md").read_text()
    assert "WMLSTM fifo (reference)" in table and "torch.nn.LSTM (equal params)" in table
    assert (tmp_path / "memory_tasks.png").read_bytes()[:4] == b"\x89PNG"


def test_char_lm_small_run_learns_and_writes_its_report(examples, tmp_path):
    """Two short epochs on a slice of the text take every model well under the
    uniform log2(V) bits per character."""
    _, char_lm, common = examples
    report = char_lm.main(["--quick", "--out", str(tmp_path)])
    uniform = math.log2(report["sizes"]["vocabulary"])
    for run in report["runs"]:
        assert run["curve"][-1]["held_out_bpc"] < uniform - 1, run
    assert {run["kind"] for run in report["runs"]} == set(common.KINDS)
    assert "held-out bits/char" in (tmp_path / "char_lm.md").read_text()
    assert (tmp_path / "char_lm.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("script", ["char_lm", "memory_tasks"])
def test_help_shows_the_whole_description(examples, script, capsys):
    module = {"memory_tasks": examples[0], "char_lm": examples[1]}[script]
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    first_paragraph = " ".join(module.__doc__.split("\n\n")[0].split())
    assert first_paragraph in shown  # was cut after the docstring's first line, mid-sentence


def test_memory_tasks_rerun_of_one_model_reuses_the_others(examples, tmp_path):
    """--kinds gated --reuse: the gated runs are trained again (the same numbers as
    in the full run: same seeds), the others' runs and the timings are the earlier
    report's, and the markdown says so; a report made with other options is refused."""
    memory_tasks, _, _ = examples
    first = memory_tasks.main(["--quick", "--out", str(tmp_path / "all")])
    again = memory_tasks.main(["--quick", "--out", str(tmp_path / "one"), "--kinds", "gated",
                               "--reuse", str(tmp_path / "all" / "memory_tasks.json")])
    key = lambda r: (r["task"], r["level"], r["kind"], r["seed"])
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds_per_step"}
    assert sorted(map(key, again["results"])) == sorted(map(key, first["results"]))
    assert ({key(r): strip(r) for r in again["results"]} == {key(r): strip(r) for r in first["results"]})
    assert again["timings"] == first["timings"] and again["reused"]["kinds"] == ["lstm", "fifo"]
    assert "Rows of lstm, fifo and the step timings are reused" in (tmp_path / "one" / "memory_tasks.md").read_text()
    with pytest.raises(SystemExit, match="other options.*lr"):
        memory_tasks.main(["--quick", "--out", str(tmp_path / "x"), "--kinds", "gated", "--lr", "0.5",
                           "--reuse", str(tmp_path / "all" / "memory_tasks.json")])
    with pytest.raises(SystemExit, match="--reuse"):
        memory_tasks.main(["--quick", "--out", str(tmp_path / "x"), "--kinds", "gated"])


@pytest.fixture
def capacity_recall(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import capacity_recall

    return capacity_recall


def test_mixed_recall_batch_pads_recall_examples_of_both_groups(capacity_recall, fresh_seed):
    """Rows of the first half hold few pairs, of the second many; each row is a
    recall example of its own length (pairs + 2), zeros past it, its one answer
    step the last, asking for a stored key's value."""
    keys, values, batch, few, many = 9, 4, 12, [1, 2], [5, 6]
    (x, lengths), targets, mask = capacity_recall.mixed_recall_batch(
        batch, few, many, keys, values, torch.Generator().manual_seed(fresh_seed))
    pairs = lengths - 2
    assert set(pairs[:batch // 2].tolist()) <= set(few) and set(pairs[batch // 2:].tolist()) <= set(many)
    assert x.shape == (int(lengths.max()), batch, keys + values + 1)
    for b in range(batch):
        n = int(pairs[b])
        assert x[n + 2:, b].abs().sum() == 0 and not mask[n + 2:, b].any()
        assert mask[:, b].nonzero().flatten().tolist() == [n + 1]
        stored = {int(x[t, b, :keys].argmax()): int(x[t, b, keys:keys + values].argmax()) for t in range(n)}
        assert len(stored) == n and targets[n + 1, b] == stored[int(x[n, b, :keys].argmax())]


def test_capacity_recall_small_run_writes_its_report(capacity_recall, tmp_path):
    report = capacity_recall.main(["--quick", "--out", str(tmp_path)])
    runs = report["results"]
    assert {(r["mode"], r["policy"]) for r in runs} == {(m, p) for m in ("fifo", "gated")
                                                        for p in ("none", "1.0", "0.5")}
    assert all(0 <= a <= 1 for r in runs for a in r["accuracy"].values())
    for mode in ("fifo", "gated"):
        t = report["timings"][mode]
        assert t["none"]["ratio"] == 1.0 and t["none"]["mean_capacity"] == 6  # --quick: S = 6
        assert t["0.5"]["mean_capacity"] < t["1.0"]["mean_capacity"] <= 6
    assert "capacity_from_lengths(·, 1.0)" in (tmp_path / "capacity_recall.md").read_text()
    assert (tmp_path / "capacity_recall.png").read_bytes()[:4] == b"\x89PNG"
