"""Result files: atomic JSON writes and reads, and the stage fingerprint used to resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from paramreuse.errors import ParamreuseError


def _clean(obj: Any) -> Any:
    """JSON-safe copy: tuples to lists, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def prepare_out_dir(path: str | Path) -> Path:
    """Create the output folder and prove it is writable before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise ParamreuseError(f"cannot write to {path} ({exc.strerror}); choose a writable --out folder") from None
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    prepare_out_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(obj), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamreuseError(f"{path} does not exist; run the stage that writes it first") from None
    except json.JSONDecodeError as exc:
        raise ParamreuseError(f"{path} is not valid JSON ({exc}); delete it to recompute") from None


def fingerprint(obj: Any) -> str:
    """A short stable hash of a configuration, stored with a stage's result to decide resumption."""
    text = json.dumps(_clean(obj), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_if_current(path: str | Path, key: str) -> dict | None:
    """The stored result at ``path`` when it was made with fingerprint ``key``, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return stored if stored.get("fingerprint") == key else None
