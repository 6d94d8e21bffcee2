"""Loading wmkernels._C: a missing or out-of-date extension makes the cpu
backend unavailable with the reason, and never breaks ``import wmkernels``."""
import subprocess
import sys
import textwrap

from wmkernels import cpu_extension


def test_out_of_date_extension_is_reported(monkeypatch):
    monkeypatch.setattr(cpu_extension, "REQUIRED_OPS", cpu_extension.REQUIRED_OPS + ("no_such_op",))
    reason = cpu_extension._load()
    assert reason is not None and "out of date" in reason and "no_such_op" in reason


def test_loaded_extension_has_every_required_op():
    assert cpu_extension._load() is None


def test_import_without_extension_works_and_says_why():
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "wmkernels._C":
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, Block())
        import torch, wmkernels
        reason = wmkernels.availability(torch.device("cpu"))["cpu"]
        assert reason is not None and "blocked by the test" in reason, reason
        h, c = wmkernels.ops.lstm_cell(torch.randn(2, 8), torch.randn(2, 2))  # auto: the reference
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
