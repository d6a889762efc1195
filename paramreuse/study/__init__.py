"""The main job: train S, make T, T_scratch and T_full, compare them, write results and a report.

Each stage persists its result as it completes; running the study again loads finished
stages (same configuration fingerprint) instead of recomputing them.

- :mod:`paramreuse.study.config`: the study's configuration and its data;
- :mod:`paramreuse.study.run`: the stages, the evidence and the recommended model.
"""

from paramreuse.study.config import (
    ALIGNMENTS,
    DataConfig,
    StudyConfig,
    StudyData,
    StudyTraining,
    apply_length,
    load_study_data,
    quick,
    target_spec,
)
from paramreuse.study.run import PAIR_FILES, RESULTS_FILE, run_study, transfer_study

__all__ = [
    "ALIGNMENTS",
    "PAIR_FILES",
    "RESULTS_FILE",
    "DataConfig",
    "StudyConfig",
    "StudyData",
    "StudyTraining",
    "apply_length",
    "load_study_data",
    "quick",
    "run_study",
    "target_spec",
    "transfer_study",
]
