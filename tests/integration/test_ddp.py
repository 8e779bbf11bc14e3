"""Data parallel on the CPU: two gloo processes train exactly like one process on the same global batch.

The fast test spawns two processes that run the real trainer (angular encoder with BatchNorm,
sa enhancer, the joint schedule: l1 plus the angular metric loss) for a few steps, and
compares their parameters, BatchNorm statistics and logged losses with a one-process run;
only rank 0 may write checkpoints and logs. The slow test runs ``torchrun ... -m piebench run``
end to end and compares the sharded, gathered evaluation with a one-process run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

STEPS = 3
SETS = ["eval.data.resolution=32", "eval.data.crops_per_scene=6", "train.batch_users=4", "train.per_user=2",
        "train.refs=2", "train.checkpoint_every=2"]


def _config() -> dict:
    """The joint schedule at 32 px; small learning rates, so that Adam's sign-like first steps do not
    turn float reduction-order noise in near-zero gradients into differences of a whole step."""
    from piebench import config as C

    return C.resolve("smoke", encoder="angular", enhancer="sa", schedule="joint", steps=STEPS, sets=SETS,
                     lr_encoder=2e-6, lr_enhancer=2e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, dist=None) -> dict:
    """Build the joint-schedule components, train STEPS steps into ``out``, return the final state."""
    from piebench.build import Components, build_dataset, build_losses, build_models, plan_stages
    from piebench.data.device_store import build_sampler
    from piebench.plugins import get_registry
    from piebench.train import Trainer

    torch.set_num_threads(1)
    cfg = _config()
    registry = get_registry()
    dataset = build_dataset(cfg, registry)
    torch.manual_seed(cfg["seed"])
    encoder, enhancer = build_models(cfg, registry, dataset)
    stages, notes = plan_stages(cfg, encoder, enhancer)
    losses = build_losses(stages, registry, dataset, encoder, cfg["train"]["refs"])
    comps = Components(dataset=dataset, encoder=encoder, enhancer=enhancer, losses=losses, stages=stages)
    sampler = build_sampler(dataset, cfg, device="cpu", pairs=False)
    if dist is not None:
        dist.prepare_models([encoder, enhancer, *losses.values()], cfg["seed"])
        sampler = dist.shard_sampler(sampler)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ckpt").mkdir()
    trainer = Trainer(comps, sampler, cfg, out / "ckpt", device="cpu", log_path=out / "log.jsonl",
                      progress=False, dist=dist)
    trainer.fit()
    return {"encoder": encoder.state_dict(), "enhancer": enhancer.state_dict(), "log": trainer.log,
            "images": trainer.images_seen, "batch": sampler.sample().input.shape[0]}


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from piebench.distributed import setup

    dist = setup("cpu")
    assert dist.active and dist.backend == "gloo"
    state = _train(Path(root) / f"rank{rank}", dist)
    torch.save(state, Path(root) / f"result{rank}.pt")


def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _train(tmp_path / "single")
    results = [torch.load(tmp_path / f"result{r}.pt", weights_only=False) for r in range(2)]
    assert results[0]["batch"] == results[1]["batch"] == single["batch"] // 2  # each rank holds half a batch
    for module in ("encoder", "enhancer"):
        ref = single[module]
        for rank, res in enumerate(results):
            for name, value in ref.items():
                if value.is_floating_point():
                    diff = (res[module][name] - value).abs().max().item()
                    assert diff < 1e-6, f"rank {rank} {module}.{name} differs by {diff}"
                else:
                    assert torch.equal(res[module][name], value), f"rank {rank} {module}.{name}"
    moved = max((single["enhancer"][k] - v).abs().max().item()
                for k, v in _fresh_enhancer_state().items() if v.is_floating_point())
    assert moved > 1e-5  # the comparison is not between untrained models
    for a, b in zip(results[0]["log"], single["log"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert results[0]["images"] == single["images"]
    # only rank 0 wrote: checkpoints and the step log
    assert sorted(p.name for p in (tmp_path / "rank0" / "ckpt").iterdir()) == ["ckpt-0000002.pt", "ckpt-0000003.pt"]
    assert len((tmp_path / "rank0" / "log.jsonl").read_text().splitlines()) == STEPS
    assert list((tmp_path / "rank1" / "ckpt").iterdir()) == [] and not (tmp_path / "rank1" / "log.jsonl").exists()


def _fresh_enhancer_state() -> dict:
    from piebench.build import build_dataset, build_models
    from piebench.plugins import get_registry

    cfg = _config()
    registry = get_registry()
    torch.manual_seed(cfg["seed"])
    return build_models(cfg, registry, build_dataset(cfg, registry))[1].state_dict()


def test_one_process_context_is_a_no_op():
    from piebench.distributed import DistContext

    dist = DistContext()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    dist.reduce_gradients([p])
    emb, users = torch.rand(4, 2), torch.arange(4)
    assert torch.equal(p.grad, torch.full((3,), 2.0)) and dist.gather_embeddings(emb, users)[0] is emb
    assert dist.shard_manifest({"entries": [1, 2, 3]}) == {"entries": [1, 2, 3]} and dist.is_main


@pytest.mark.slow
def test_torchrun_end_to_end_matches_one_process(tmp_path):
    args = ["-m", "piebench", "run", "--encoder", "angular", "--enhancer", "sa", "--steps", "2", "--quiet",
            "--set", "eval.max_photos=3", "--set", "train.threads=1", "--set", "train.checkpoint_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), *args, "--runs-dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("record: ") == 1  # rank 0 alone reports
    one = subprocess.run([sys.executable, *args, "--runs-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    (run2,), (run1,) = (list((tmp_path / d).glob("smoke/*/*")) for d in ("two", "one"))
    rec = json.loads((run2 / "record.json").read_text())
    assert rec["status"] == "finished" and rec["speed"]["world_size"] == 2 and rec["speed"]["backend"] == "gloo"
    assert sorted(p.name for p in (run2 / "checkpoints").iterdir()) == ["ckpt-0000001.pt", "ckpt-0000002.pt"]
    a, b = pd.read_csv(run2 / "per_image.csv"), pd.read_csv(run1 / "per_image.csv")
    assert list(a["photo"]) == list(b["photo"]) and list(a["user"]) == list(b["user"])  # gathered in manifest order
    assert (a["psnr"] - b["psnr"]).abs().max() < 1e-3


def test_sharded_evaluation_merges_to_the_one_process_result():
    from piebench_plugins.datasets.pie_synth import build_pie_synth

    from piebench.data.manifest import build_manifest
    from piebench.distributed import DistContext
    from piebench.evaluate import evaluate, merge_eval
    from piebench.interfaces import BuildContext
    from piebench.metrics import psnr
    from piebench.plugins import get_registry

    ds = build_pie_synth(None, resolution=16, crops_per_scene=6)
    manifest = build_manifest(ds, refs=2, draws=2, seed=3, max_photos=5)
    registry = get_registry()
    torch.manual_seed(0)
    encoder = registry.get("encoder", "angular").create(BuildContext(num_users=ds.num_seen, num_refs=2), "small")
    enhancer = registry.get("enhancer", "adain").create(BuildContext(num_refs=2, encoder=encoder), "small")

    def run(m):
        return evaluate(encoder, enhancer, ds, m, metrics={"psnr": psnr}, pairs=False, progress=False)

    full = run(manifest)
    parts = [run(DistContext(rank=r, world_size=3).shard_manifest(manifest)) for r in range(3)]
    parts.append(None)  # a rank without entries
    merged = merge_eval(parts, manifest)
    pd.testing.assert_frame_equal(merged.per_image, full.per_image)
    for name in ("mse_out_tgt", "mse_tgt_tgt", "group_photos", "embeddings", "embedding_users", "vectors",
                 "vector_photos"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(full, name), err_msg=name)
    assert [e["photo"] for e in DistContext(rank=1, world_size=3).shard_manifest(manifest)["entries"]] == \
        [e["photo"] for e in manifest["entries"][1::3]]
