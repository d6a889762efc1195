"""Set-up is quiet on success: building the package's metadata warns of nothing (issue 29: `make demo`
printed setuptools' license deprecation block three times)."""

import shutil
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_metadata_builds_without_a_deprecation_warning(tmp_path, monkeypatch):
    from setuptools import build_meta

    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "paramreuse").mkdir()
    (tmp_path / "paramreuse" / "__init__.py").write_text("")
    (tmp_path / "meta").mkdir()
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = build_meta.prepare_metadata_for_build_wheel(str(tmp_path / "meta"))
    assert not [w for w in caught if "deprecat" in str(w.message).lower()], [str(w.message)[:200] for w in caught]
    assert "License-Expression: MIT" in (tmp_path / "meta" / info / "METADATA").read_text()
