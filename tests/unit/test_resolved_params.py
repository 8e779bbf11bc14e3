"""What a component was built with (config.json's "resolved"): signature defaults, then the
configuration's parameters, then the user's, as strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from piebench import jsonio
from piebench.build import builder_params, describe, json_safe
from piebench.interfaces import BuildContext
from piebench.registry import Spec


def _build(ctx, *, width: int = 8, scales: tuple = (1, 2), gamma: float = float("inf"), where: Path = Path("/x"),
           **extra):
    return None


SPEC = Spec(kind="enhancer", name="toy", build=_build, configurations={"small": {"width": 4}, "paper": {}},
            version="3", plugin="tp", plugin_version="0.2", paper="a paper")


def test_defaults_then_configuration_then_user_parameters():
    assert builder_params(SPEC) == {"width": 4, "scales": (1, 2), "gamma": float("inf"), "where": Path("/x")}
    assert builder_params(SPEC, "paper", {"scales": [3], "other": 1}) == \
        {"width": 8, "scales": [3], "gamma": float("inf"), "where": Path("/x"), "other": 1}


def test_an_entry_is_strict_json_with_the_plugin_and_context():
    ctx = BuildContext(num_users=5, num_refs=2, image_size=32, encoder=torch.nn.Identity())
    entry = describe(SPEC, ctx, encoder_name="angular")
    text = jsonio.dumps(entry)
    assert "Infinity" not in text
    assert json.loads(text) == {
        "name": "toy", "plugin": "tp", "plugin_version": "0.2", "version": "3", "paper": "a paper",
        "configuration": "small",  # the one built when none is named
        "params": {"width": 4, "scales": [1, 2], "gamma": None, "where": "/x"},
        "context": {"num_users": 5, "num_refs": 2, "image_size": 32, "pretrained": False, "encoder": "angular"}}


def test_json_safe_values():
    assert json_safe({"t": torch.tensor([1.0, 2.0]), 1: {3, 1}, "a": np.arange(2), "n": np.float32(0.5)}) == \
        {"t": [1.0, 2.0], "1": [1, 3], "a": [0, 1], "n": 0.5}
    assert json_safe(torch.zeros(3, 64)) == {"shape": [3, 64], "dtype": "torch.float32"}
    assert json_safe(_build) == f"{__name__}._build"
    assert json_safe(object()).startswith("<object object")
