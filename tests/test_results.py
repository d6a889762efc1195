"""Result files: content hashes, atomic writes and what a killed run leaves behind."""

import os
import time

import torch

from paramreuse.models.state_dicts import state_digest
from paramreuse.results import prepare_out_dir, write_json


def test_state_digest_hashes_every_byte_dtype_shape_and_order():
    a = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5])}
    assert state_digest(a) == state_digest({k: v.clone() for k, v in a.items()})
    variants = [
        {"w": torch.tensor([3.0, 2.0, 1.0]), "b": torch.tensor([0.5])},  # same sum and abs sum: reordered values
        {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "b": torch.tensor([0.5])},
        {"w": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([0.5])},
        {"b": torch.tensor([0.5]), "w": torch.tensor([1.0, 2.0, 3.0])},  # key order
        {"w": torch.tensor([1.0, 2.0, torch.nextafter(torch.tensor(3.0), torch.tensor(4.0)).item()]), "b": torch.tensor([0.5])},  # one ulp
    ]
    digests = {state_digest(v) for v in variants} | {state_digest(a)}
    assert len(digests) == len(variants) + 1


def test_a_channel_permuted_state_has_another_digest():
    torch.manual_seed(0)
    conv = torch.randn(4, 3, 3, 3)
    assert state_digest({"conv": conv}) != state_digest({"conv": conv[[1, 0, 3, 2]]})


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    write_json(tmp_path / "done.json", {"a": 1})
    stale, fresh = tmp_path / ".plan.json.x1.tmp", tmp_path / ".plan.json.x2.tmp"
    stale.write_text("{half")
    fresh.write_text("{half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    prepare_out_dir(tmp_path)
    assert not stale.exists() and fresh.exists()  # a write in flight (seconds old) is never touched
    assert (tmp_path / "done.json").read_text().strip().startswith("{")
