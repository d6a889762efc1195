"""The README's Python API example runs as written (on the tiny Fashion-MNIST stand-in)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs(fake_fmnist, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 1, "the README should hold exactly one runnable ```python example"
    monkeypatch.chdir(tmp_path)  # the example writes runs/api/
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 (the README's own code)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("T: accuracy ") and "network reusable: " in printed[0]
    decisions = eval(printed[1])  # the dict of unit -> decision it prints
    assert decisions["head"] == "reinit" and set(decisions.values()) <= {"reuse-frozen", "reuse-finetuned", "reinit"}
    for file in (
        "S/model.safetensors",
        "T/train.json",
        "pair/comparison.json",
        "pair/replacement.json",
        "pair/plan.json",
    ):
        assert (tmp_path / "runs" / "api" / file).is_file(), file
