"""The README and docs/: a README a newcomer reads in minutes, every docs page linked from it, and their
commands and Python examples run as written (the Python on the tiny Fashion-MNIST stand-in; every
`paramreuse` command line parsed by the CLI itself; the worked example end to end, marked slow)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

try:  # the click that typer parses with: its own copy from typer 0.29 on
    import typer._click.exceptions as CLICK
except ImportError:  # pragma: no cover - older typer
    import click.exceptions as CLICK

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_DOC = ROOT / "docs" / "python.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
MAX_LINES = 200
# Pages written beside this one and linked before they land: checked like any other once they exist.
LANDING = {"docs/speed.md"}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def shell_blocks(text: str) -> list[str]:
    """The fenced blocks without a language or marked as shell (not python, toml, json)."""
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL) if lang in ("", "bash", "sh")]


def commands(text: str) -> list[list[str]]:
    """Every `paramreuse VERB ...` line of the shell blocks, as the arguments after `paramreuse`."""
    found = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():  # a line continued with a backslash is one
            if not re.match(r"\s*(\S*/)?paramreuse ", line):
                continue
            words = shlex.split(line, comments=True)
            at = next((i for i, w in enumerate(words) if w == "paramreuse" or w.endswith("/paramreuse")), None)
            if at is not None and len(words) > at + 1 and not words[at + 1].startswith("-"):
                found.append(words[at + 1 :])
    return found


def test_the_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)\)", text))
    assert {f"docs/{page.name}" for page in PAGES} <= linked
    # the two set-up commands, first thing after what paramreuse answers
    assert "make demo" in shell_blocks(text)[0] and "make test" in shell_blocks(text)[0]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_relative_links_point_into_the_tree(page):
    for target in re.findall(r"\]\(([^)#:]+?)(?:#[^)]*)?\)", page.read_text()):
        path = (page.parent / target).resolve()
        if str(path.relative_to(ROOT)) in LANDING and not path.exists():
            continue
        assert path.exists(), f"{page.name} links to {target}, which is not in the tree"


COMMANDS = [(page.name, args) for page in [README, *PAGES] for args in commands(page.read_text())]


def test_the_readme_and_docs_hold_commands():
    assert {page for page, _ in COMMANDS} >= {"README.md", "architectures.md", "ray.md"}
    assert sum(page == "README.md" for page, _ in COMMANDS) >= 4


@pytest.mark.parametrize("page, args", COMMANDS, ids=[f"{p}:{' '.join(a)[:40]}" for p, a in COMMANDS])
def test_every_command_in_the_readme_and_docs_parses(page, args):
    """Each verb exists and takes the flags and values written (the CLI's own parser; nothing runs)."""
    from paramreuse.cli import app

    group = typer.main.get_command(app)
    verb, rest = args[0], args[1:]
    assert verb in group.commands, f"{page}: no verb {verb}"
    placeholder = any(w in ("...", "…") for w in rest)
    try:
        group.commands[verb].make_context(verb, [w for w in rest if w not in ("...", "…")])
    except CLICK.MissingParameter:
        assert placeholder, f"{page}: `paramreuse {' '.join(args)}` lacks a required option"  # `...`: filled in by the reader
    except CLICK.ClickException as exc:
        pytest.fail(f"{page}: `paramreuse {' '.join(args)}`: {exc.format_message()}")


def test_docs_python_example_runs(fake_fmnist, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(PYTHON_DOC.read_text())
    assert len(blocks) == 2, "docs/python.md should hold two runnable ```python examples: the judgement, the plan in one's code"
    monkeypatch.chdir(tmp_path)  # the example writes runs/api/
    exec(compile(blocks[0], "docs/python.md", "exec"), {"__name__": "readme"})  # noqa: S102 (the docs' own code)
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


def test_docs_plan_in_your_own_code_runs(fake_fmnist, tmp_path, monkeypatch, capsys):
    """The second example: load the first one's plan.json and S, apply it, train with one's own loop."""
    import torch

    import paramreuse as pr

    first, second = python_blocks(PYTHON_DOC.read_text())
    monkeypatch.chdir(tmp_path)
    exec(compile(first, "docs/python.md", "exec"), {"__name__": "readme"})  # noqa: S102 (the docs' own code)
    capsys.readouterr()
    namespace = {"__name__": "readme"}
    exec(compile(second, "docs/python.md", "exec"), namespace)  # noqa: S102 (the docs' own code)
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


@pytest.mark.slow
def test_the_readme_worked_example_runs_as_written(fake_fmnist, tmp_path):
    """Steps 1-5 of the README, line by line, with this interpreter for `.venv/bin/...` (minutes: a quick study)."""
    lines = [line for block in shell_blocks(README.read_text()) for line in block.splitlines()
             if line.startswith(".venv/bin/")]  # fmt: skip
    assert len(lines) == 7
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for line in lines:
        words = shlex.split(line)
        program = [sys.executable] if words[0] == ".venv/bin/python" else [sys.executable, "-m", "paramreuse"]
        done = subprocess.run(program + words[1:], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    answer = json.loads((tmp_path / "runs" / "byo" / "results.json").read_text())["answer"]
    assert answer["model"].startswith("runs/byo/model.safetensors")
    assert (tmp_path / "runs" / "byo-apply" / "model.safetensors").is_file()


def test_the_config_page_example_loads(tmp_path):
    """docs/config.md's TOML example is a valid study config, with the values it shows."""
    from paramreuse.config import load_toml
    from paramreuse.study import StudyConfig

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "config.md").read_text(), flags=re.DOTALL)
    assert blocks
    (tmp_path / "study.toml").write_text(blocks[0])
    config = load_toml(StudyConfig, tmp_path / "study.toml")
    assert (config.target.classes, config.target.shots, config.training.epochs) == ("5,7,9", 20, 20)
    assert config.thresholds.layer_tolerance == 0.03
