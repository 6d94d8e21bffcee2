"""The README's usage examples run as written, and its test command is the one CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in README and "<!-- test-command -->" in ci
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
    assert "python -m pytest" in command and "pip install --no-build-isolation -e ." in command


def test_relative_links_resolve_in_a_clone():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "README.md links no document of the repository"
    missing = [link for link in local if not (ROOT / link).resolve().is_relative_to(ROOT)
               or not (ROOT / link).exists()]
    assert not missing, f"README.md links outside the repository or to nothing: {missing}"


def requirement(name: str) -> str:
    """The requirement line of ``name`` in requirements-dev.txt, comment dropped."""
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        if re.match(rf"{name}\b", spec):
            return spec
    raise AssertionError(f"requirements-dev.txt does not name {name}")


def test_set_up_command_pins_what_the_tests_pin():
    """A newcomer following the set-up line gets the torch and the numpy the
    tests run with (numpy >= 2.4 breaks Triton 3.6's interpreter)."""
    set_up = re.search(r"## Set-up.*?```bash\n(.*?)\n```", README, flags=re.S).group(1)
    for name in ("torch", "numpy"):
        assert requirement(name) in set_up.replace('"', "").replace("'", ""), (name, set_up)


def test_test_command_runs_on_every_core_and_its_skips_are_documented():
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
    assert "-n auto" in command and requirement("pytest-xdist")
    assert "WMKERNELS_SKIP_AOT" in README.split("## Tests", 1)[1]
