"""The judgements: J3 in ``kernels``, J1 and J2 in ``replacement`` (on the shots: ``crossfit``), the network
decision in ``network``, verdicts and thresholds in ``verdicts``, the plan rule and the plan in ``plan``;
``assess`` runs them on a pair.
"""

from paramreuse.judge.assess import Assessment, assess, compare_pair
from paramreuse.judge.crossfit import crossfit_sweep, network_evidence
from paramreuse.judge.kernels import Comparison, LayerDistance, compare_models
from paramreuse.judge.network import NetworkDecision, NetworkEvidence, decide_network
from paramreuse.judge.plan import RULE, Decision, Plan, decide, judge
from paramreuse.judge.replacement import Row, Sweep, SweepConfig, SweepInputs, replacement_sweep
from paramreuse.judge.verdicts import LayerVerdict, Thresholds

__all__ = ["RULE", "Assessment", "Comparison", "Decision", "LayerDistance", "LayerVerdict", "NetworkDecision", "NetworkEvidence", "Plan", "Row", "Sweep", "SweepConfig", "SweepInputs", "Thresholds", "assess", "compare_models", "compare_pair", "crossfit_sweep", "decide", "decide_network", "judge", "network_evidence", "replacement_sweep"]
