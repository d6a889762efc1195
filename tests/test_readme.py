"""The README's Python API examples run as written (on the tiny Fashion-MNIST stand-in)."""

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs(fake_fmnist, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 2, "the README should hold two runnable ```python examples: the judgement, the plan in one's code"
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


def test_readme_plan_in_your_own_code_runs(fake_fmnist, tmp_path, monkeypatch, capsys):
    """The second example: load the first one's plan.json and S, apply it, train with one's own loop."""
    import torch

    import paramreuse as pr

    first, second = python_blocks(README.read_text())
    monkeypatch.chdir(tmp_path)
    exec(compile(first, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 (the README's own code)
    capsys.readouterr()
    namespace = {"__name__": "readme"}
    exec(compile(second, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    printed = capsys.readouterr().out.strip()
    model, applied, plan = namespace["model"], namespace["applied"], namespace["plan"]
    assert printed == f"{len(applied.frozen)} frozen tensors; test accuracy {pr.evaluate(model, namespace['shots'].test):.3f}"
    from paramreuse.models.units import inventory
    from paramreuse.transfer.strategies import unit_prefixes

    source, _ = pr.load_checkpoint(tmp_path / "runs" / "api" / "S" / "model.safetensors")
    frozen = {p for u in inventory(model) if plan.decisions().get(u.name) == "reuse-frozen" for p in unit_prefixes(u)}
    assert set(applied.frozen) == {name for name, _ in model.named_parameters() if name.rpartition(".")[0] in frozen}
    for name, p in model.named_parameters():  # frozen units kept S's values through the loop
        if name in applied.frozen:
            assert not p.requires_grad and torch.equal(p, source.state_dict()[name]), name
