"""Every encoder and every enhancer runs under the smoke protocol (a few steps each).

Each encoder is paired with `sa` (or the first compatible enhancer); each enhancer with
`angular` (or the first compatible encoder). A run must finish, write a record whose metrics
are finite, and refuse incompatible pairs before writing anything.
"""

from __future__ import annotations

import json
import math

import pytest

from piebench.build import first_compatible
from piebench.config import resolve
from piebench.errors import UsageError
from piebench.plugins import get_registry
from piebench.runner import run_experiment

REGISTRY = get_registry()
# Oracle encoders need the run's dataset to be built, so their partner is named here.
PAIRS = sorted({(e, first_compatible(REGISTRY, encoder=e) or ("adain" if e.startswith("oracle") else None))
                for e in REGISTRY.names("encoder")}
               | {(first_compatible(REGISTRY, enhancer=h, preferred=("angular", "star", "lab-stats")), h)
                  for h in REGISTRY.names("enhancer")}, key=lambda p: (str(p[0]), str(p[1])))
FAST = ["eval.max_photos=2", "eval.data.crops_per_scene=12", "eval.data.seen_users=4", "eval.data.unseen_users=2",
        "train.checkpoint_every=1000"]


@pytest.mark.parametrize(("encoder", "enhancer"), PAIRS, ids=[f"{e}+{h}" for e, h in PAIRS])
def test_pair_runs_under_smoke(encoder, enhancer, tmp_path):
    assert encoder and enhancer, "every model must have a compatible partner"
    cfg = resolve("smoke", encoder=encoder, enhancer=enhancer, steps=4, sets=FAST)
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    assert rec["status"] == "finished"
    # every stage trains its steps unless the record says that stage had nothing to train
    skipped = {s["name"] for s in cfg["train"]["stages"]
               if f"stage '{s['name']}' skipped (nothing to train)" in rec["notes"]}
    expected = sum(s["steps"] for s in cfg["train"]["stages"] if s["name"] not in skipped)
    assert rec["compute"]["steps"] == rec["compute"]["total_steps"] == expected, (rec["compute"], rec["notes"])
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    assert len(log) == expected and {e.get("stage") for e in log} <= {s["name"] for s in cfg["train"]["stages"]} - skipped
    for group in ("seen", "unseen"):
        psnr = rec["metrics"][group]["psnr"]["mean"]
        assert math.isfinite(psnr) and 5 < psnr < 60, (group, psnr)
    assert (run_dir / "per_image.csv").stat().st_size > 0


def test_incompatible_pair_is_refused_before_anything_is_written(tmp_path):
    cfg = resolve("smoke", encoder="gram", enhancer="sa", steps=2)
    with pytest.raises(UsageError, match="consumes maps.*'gram' does not provide"):
        run_experiment(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("record.json"))
