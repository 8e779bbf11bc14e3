"""``piebench run --log tensorboard``: the event files read back with TensorBoard's own reader.

One tiny real run (lab-stats + csrnet, a few steps); the scalars must be the
numbers of ``train_log.jsonl`` (TensorBoard stores float32), the metrics those of the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from piebench.cli import cli

FAST = ["--encoder", "lab-stats", "--enhancer", "csrnet", "--steps", "4", "--set", "eval.max_photos=3",
        "--set", "train.threads=1", "--quiet"]


def invoke(args: list[str]):
    with threadpool_limits(1):
        return CliRunner().invoke(cli, args, catch_exceptions=True)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    res = invoke(["run", *FAST, "--runs-dir", str(runs), "--log", "tensorboard"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return next(runs.rglob("record.json")).parent


def _accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_equal_the_training_log_and_the_record(logged):
    acc = _accumulator(logged)
    log = [json.loads(line) for line in (logged / "train_log.jsonl").read_text().splitlines()]
    last = len(log)
    assert last >= 2 and [e["step"] for e in log] == list(range(1, last + 1))
    tags = set(acc.Tags()["scalars"])
    terms = {k for e in log for k, v in e.items() if k not in ("step", "stage", "time_s", "lr")}
    groups = {g for e in log for g in e["lr"]}
    assert {"loss/loss", "lr/enhancer"} <= {f"loss/{t}" for t in terms} | {f"lr/{g}" for g in groups}
    assert {t for t in tags if t.split("/")[0] in ("loss", "lr")} == \
        {f"loss/{t}" for t in terms} | {f"lr/{g}" for g in groups}
    for term in terms:
        got = {ev.step: ev.value for ev in acc.Scalars(f"loss/{term}")}
        want = {e["step"]: float(np.float32(e[term])) for e in log if term in e}
        assert got == want, term
    for group in groups:
        got = {ev.step: ev.value for ev in acc.Scalars(f"lr/{group}")}
        assert got == {e["step"]: float(np.float32(e["lr"][group])) for e in log if group in e["lr"]}, group
    rec = json.loads((logged / "record.json").read_text())
    for group in ("seen", "unseen"):
        for metric in ("psnr", "ssim", "steering"):
            (ev,) = acc.Scalars(f"eval/{group}/{metric}")
            assert ev.step == last and ev.value == float(np.float32(rec["metrics"][group][metric]["mean"]))


def test_figures_grid_and_labelled_embeddings(logged):
    acc = _accumulator(logged)
    images = set(acc.Tags()["images"])
    assert {"figures/control_heatmap", "figures/tsne", "image_grid"} <= images
    heat = acc.Images("figures/control_heatmap")[0]
    assert heat.width > 300 and heat.height > 300
    grid = acc.Images("image_grid")[0]
    assert grid.width > grid.height > 0  # photos x (input + 6 users), two rows per photo
    # the projector: a config naming the tensor and its metadata, labels = user names of the run
    config = (logged / "tensorboard" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "preference' in config
    meta_file = next((logged / "tensorboard").rglob("metadata.tsv"))
    rows = [line.split("\t") for line in meta_file.read_text().splitlines()]
    assert rows[0] == ["user", "group", "photo"]
    vectors = np.load(logged / "control.npz")["vectors"]
    assert len(rows) - 1 == len(vectors)
    per_image = (logged / "per_image.csv").read_text()
    names = {r[0] for r in rows[1:]}
    assert len(names) > 2 and all(n in per_image for n in names) and {r[1] for r in rows[1:]} == {"seen", "unseen"}


def test_inactive_without_log_and_unknown_logger_refused(tmp_path):
    res = invoke(["run", *FAST, "--steps", "1", "--runs-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    run_dir = next((tmp_path / "a").rglob("record.json")).parent
    assert not (run_dir / "tensorboard").exists()
    res = invoke(["run", *FAST, "--runs-dir", str(tmp_path / "b"), "--log", "tensorbord"])
    from piebench.errors import UsageError

    assert isinstance(res.exception, UsageError) and "unknown logger 'tensorbord'" in str(res.exception)
    assert "tensorboard" in str(res.exception) and not (tmp_path / "b").exists()
