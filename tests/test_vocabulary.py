"""The names that cross a boundary are declared once and read the same on both sides."""

from paramreuse.judge import plan
from paramreuse.report import verdict as report_verdict
from paramreuse.tasks import TASKS
from paramreuse.transfer import strategies
from paramreuse.vocabulary import BUDGETS, ORACLES, REUSE_DECISIONS, Budget, Decision


def test_decisions_are_their_plan_json_names():
    assert [d.value for d in Decision] == ["reuse-frozen", "reuse-finetuned", "reinit"]
    assert f"{Decision.FROZEN}" == "reuse-frozen" and Decision("reinit") is Decision.REINIT
    assert REUSE_DECISIONS == ("reuse-frozen", "reuse-finetuned")
    assert plan.Decision is Decision and report_verdict.Decision is Decision


def test_the_report_and_the_grid_flag_the_same_oracles():
    assert strategies.ORACLES is ORACLES and report_verdict.ORACLES is ORACLES


def test_a_budget_knows_its_data_options():
    assert BUDGETS == ("shots", "validation-set")
    assert Budget("shots").data_options == {"val_per_class": 0} and Budget.VALIDATION_SET.data_options == {}


def test_the_report_knows_the_units_of_every_tasks_metric_without_importing_tasks():
    for task in TASKS.values():
        assert report_verdict.CONTRACT_UNITS[task.metric_name] == task.units
