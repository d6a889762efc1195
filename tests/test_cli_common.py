"""Options the CLI declares once and every verb shares."""

import typer
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.cli.common import Backend, BackendChoice, with_backend


def test_with_backend_declares_the_four_options_once_and_hands_over_one_value():
    seen = {}

    @with_backend
    def verb(x: int = 1, backend: BackendChoice = BackendChoice()):
        seen.update(x=x, backend=backend)

    cli = typer.Typer()
    cli.command()(verb)
    result = CliRunner().invoke(cli, ["--x", "2", "--backend", "ray", "--address", "auto", "--cpus-per-job", "2"])
    assert result.exit_code == 0, result.output
    assert seen == {"x": 2, "backend": BackendChoice(Backend.ray, "auto", 2.0, None)}
    CliRunner().invoke(cli, [])
    assert seen["backend"] == BackendChoice()  # the defaults: in-process


def test_every_verb_that_runs_jobs_has_the_backend_options():
    for verb in ("study", "replace", "plan", "transfer", "rank"):
        text = CliRunner().invoke(app, [verb, "--help"], terminal_width=200).output
        assert all(option in text for option in ("--backend", "--address", "--cpus-per-job", "--gpus-per-job")), verb


def test_the_sweep_options_reach_the_fields_they_name():
    """--no-cache, --no-adaptive and --tolerance set cached, adaptive and tolerance (a positional call once shifted them)."""
    from paramreuse.cli.replace import sweep_config

    default = sweep_config("unit", False, False, False, None, 3)
    assert (default.cached, default.adaptive, default.tolerance, default.network_rows, default.seed) == (True, True, None, True, 3)
    naive = sweep_config("unit,bn.stats", True, True, True, 0.05, 0)
    assert (naive.params, naive.recalibrate_bn, naive.cached, naive.adaptive, naive.tolerance) == (("unit", "bn.stats"), True, False, False, 0.05)
