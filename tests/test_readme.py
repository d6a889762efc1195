"""The README's Python API example runs as written (on the tiny Fashion-MNIST stand-in)."""

import json
import re
from pathlib import Path

import pytest

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
    run = tmp_path / "runs" / "api"
    plan = json.loads((run / "pair" / "plan.json").read_text())
    assert decisions == {layer["name"]: layer["decision"] for layer in plan["layers"]} and decisions["head"] == "reinit"
    assert f"network reusable: {plan['network_reusable']}" in printed[0]
    assert f"accuracy {json.loads((run / 'T' / 'train.json').read_text())['test_metric']:.3f};" in printed[0]
    swept = json.loads((run / "pair" / "replacement.json").read_text())
    assert swept["baseline"] == pytest.approx(plan["baseline"])  # the plan judged the sweep written beside it
    compared = json.loads((run / "pair" / "comparison.json").read_text())
    assert [layer["name"] for layer in compared["layers"]] == [layer["name"] for layer in plan["layers"]]
