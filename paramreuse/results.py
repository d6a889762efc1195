"""Result files: atomic JSON writes and reads, and the stage fingerprint used to resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from paramreuse.errors import ParamreuseError


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: tuples to lists, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


STALE_TMP_SECONDS = 60  # an atomic write lasts milliseconds; an older temporary file was left by a killed run


def prepare_out_dir(path: str | Path) -> Path:
    """Create the output folder, prove it is writable before any work starts, and remove stale temporary files."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise ParamreuseError(f"cannot write to {path} ({exc.strerror}); choose a writable --out folder") from None
    remove_stale_temporaries(path)
    return path


def remove_stale_temporaries(folder: Path, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files of :func:`write_atomic` that a killed run left behind."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # another process finished or removed it meanwhile
            continue
    return removed


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    prepare_out_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (see :func:`write_atomic`)."""
    return write_atomic(path, (json.dumps(json_safe(obj), indent=2) + "\n").encode())


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
    text = json.dumps(json_safe(obj), sort_keys=True)
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


class JsonlLog:
    """Finished work items appended to a JSON-lines file as they complete, so killed work resumes.

    The first line holds the fingerprint of the work; a file made for other work is started
    anew, and a last line cut short by a kill is dropped.
    """

    def __init__(self, path: str | Path | None, key: str):
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict] = {}
        if self.path is None:
            return
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                header = {}
            if header.get("fingerprint") == key:
                for line in lines[1:]:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    self.done[item["id"]] = item
        # Rewritten atomically: a kill now keeps the old log, never a truncated one.
        lines = [json.dumps({"fingerprint": key}), *(json.dumps(item) for item in self.done.values())]
        write_atomic(self.path, "".join(line + "\n" for line in lines).encode())

    def add(self, item: dict) -> None:
        """Record one finished item (it must carry an ``id``)."""
        self.done[item["id"]] = item
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(item)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """Remove the log once the work's result file is written."""
        if self.path is not None and self.path.exists():
            self.path.unlink()


def units_aligned_text(alignment: dict) -> str | None:
    """``N of M units aligned`` (and how many not) from ``comparison.json``'s alignment block; None in older files."""
    if "units_aligned" not in alignment:
        return None
    done, missed = alignment["units_aligned"], alignment.get("units_not_aligned", 0)
    return f"{done} of {done + missed} units aligned" + (f", {missed} not" if missed else "")
