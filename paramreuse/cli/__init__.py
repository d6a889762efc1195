"""The ``paramreuse`` command line: one module per verb, all calling the library."""

import typer

from paramreuse.cli.apply import apply_command
from paramreuse.cli.common import HelpCommand, HelpGroup
from paramreuse.cli.compare import compare_command
from paramreuse.cli.plan import plan_command
from paramreuse.cli.rank import rank_command
from paramreuse.cli.replace import replace_command
from paramreuse.cli.report import report_command
from paramreuse.cli.study import study_command
from paramreuse.cli.train import train_command
from paramreuse.cli.transfer import transfer_command

app = typer.Typer(
    name="paramreuse",
    help="Which parameters of a trained CNN can be reused for your task, how sure that is, and how much it helps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=HelpGroup,
)
app.command("study", cls=HelpCommand)(study_command)
app.command("train", cls=HelpCommand)(train_command)
app.command("compare", cls=HelpCommand)(compare_command)
app.command("replace", cls=HelpCommand)(replace_command)
app.command("plan", cls=HelpCommand)(plan_command)
app.command("transfer", cls=HelpCommand)(transfer_command)
app.command("apply", cls=HelpCommand)(apply_command)
app.command("report", cls=HelpCommand)(report_command)
app.command("rank", cls=HelpCommand)(rank_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
