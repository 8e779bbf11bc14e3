"""Every JSON file piebench writes is strict JSON: no NaN or Infinity, ever.

Records and logs write a non-finite number as null (a value that could not be computed);
configurations, data recipes and manifests refuse one with a message naming the key, and a
configuration can never hold one (``--loss NAME`` without a weight is the string "default").
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from piebench import jsonio
from piebench.config import DEFAULT_WEIGHT, parse_loss, resolve
from piebench.errors import UsageError
from piebench.runs import atomic_write_json


def _strict_load(text: str):
    def refuse(word):
        raise AssertionError(f"non-standard JSON constant {word}")

    return json.loads(text, parse_constant=refuse)


def test_records_write_non_finite_numbers_as_null(tmp_path: Path):
    path = tmp_path / "record.json"
    atomic_write_json(path, {"metrics": {"psnr": float("nan"), "ssim": 0.5, "gain": float("inf")},
                             "per_user": [np.float32("nan"), np.float64(1.25), -float("inf")],
                             "arr": np.array([1.0, np.nan]), "n": np.int64(3), "dir": tmp_path, "ok": True})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert _strict_load(text) == {"metrics": {"psnr": None, "ssim": 0.5, "gain": None},
                                  "per_user": [None, 1.25, None], "arr": [1.0, None], "n": 3,
                                  "dir": str(tmp_path), "ok": True}


def test_refuse_names_the_key_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text('{"old": 1}\n')
    with pytest.raises(jsonio.NonFiniteError, match=r"train[.]stages[.]1[.]lr is nan: JSON has no NaN"):
        atomic_write_json(path, {"train": {"stages": [{}, {"lr": float("nan")}]}}, non_finite="refuse")
    assert path.read_text() == '{"old": 1}\n'  # the existing file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left behind
    with pytest.raises(ValueError, match="non_finite must be"):
        jsonio.dumps({}, non_finite="zero")


def test_unknown_types_still_go_to_default():
    assert jsonio.dumps({"f": len}, default=lambda o: "<fn>") == '{"f": "<fn>"}'
    with pytest.raises(TypeError):
        jsonio.dumps({"f": len})


def test_a_loss_without_weight_is_the_string_default_and_the_config_is_strict():
    assert parse_loss("gram") == ("gram", DEFAULT_WEIGHT)
    assert parse_loss("gram:0.5") == ("gram", 0.5)
    cfg = resolve("smoke", encoder="center", enhancer="sa", losses=["tv"])
    stages = [s for s in cfg["train"]["stages"] if "enhancer" in s["train"]]
    assert stages and all(s["losses"]["tv"] == DEFAULT_WEIGHT for s in stages)
    assert "loss.tv=default" in cfg["overrides"]
    text = jsonio.dumps(cfg, non_finite="refuse")  # what runs write as config.json
    assert _strict_load(text)["train"] == cfg["train"]


def test_default_weight_resolves_to_the_loss_default(registry):
    from piebench.build import build_losses

    stages = [{"name": "s", "train": ["enhancer"], "losses": {"tv": DEFAULT_WEIGHT, "l1": 1.0}}]
    dataset = SimpleNamespace(num_seen=2, resolution=(32, 32))
    losses = build_losses(stages, registry, dataset, encoder=None, refs=1)
    assert stages[0]["losses"] == {"tv": losses["tv"].default_weight, "l1": 1.0}
    assert stages[0]["losses"]["tv"] == 0.01


@pytest.mark.parametrize("item", ["train.stages.0.lr.encoder=nan", "train.grad_clip=inf", "eval.data.x=-inf",
                                  "train.stages.1.losses.l1=nan"])
def test_non_finite_configuration_values_are_refused_naming_the_key(item):
    key = item.split("=")[0]
    with pytest.raises(UsageError, match=rf"configuration value {key.replace('.', '[.]')} is -?(nan|inf)"):
        resolve("smoke", encoder="center", enhancer="sa", sets=[item])


def test_manifest_and_store_writers_refuse_non_finite(tmp_path: Path):
    from piebench.data.manifest import save_manifest

    with pytest.raises(jsonio.NonFiniteError, match=r"refs[.]0 is nan"):
        save_manifest({"refs": [float("nan")]}, tmp_path / "manifest.json")
    assert not (tmp_path / "manifest.json").exists()


def test_train_log_lines_are_strict():
    from piebench.train import _json_line

    line = _json_line({"step": 1, "loss": float("nan"), "l1": 0.25})
    assert _strict_load(line) == {"step": 1, "loss": None, "l1": 0.25}
