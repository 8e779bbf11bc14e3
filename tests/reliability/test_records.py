"""What a run leaves says everything, and its record survives a crash mid-write.

* ``config.json`` holds the parameters every component was built with: the encoder, the
  enhancer and each loss are rebuilt from that file alone with the checkpoint's shapes;
* ``record.plugins`` names the plugin and versions of every component, losses and metrics too;
* a process killed while it rewrites ``record.json`` leaves the previous record whole.

The first two read the suite's uninterrupted reference run (no extra training).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import torch
from rel_helpers import Child, kill_when_created

from piebench.interfaces import BuildContext
from piebench.plugins import get_registry


def _strict(text: str):
    def refuse(word):
        raise AssertionError(f"non-standard JSON constant {word}")

    return json.loads(text, parse_constant=refuse)


def _rebuild(kind: str, entry: dict, encoder=None):
    """A component built from its config.json entry alone (plus the rebuilt encoder it names)."""
    context = {k: v for k, v in entry["context"].items() if k not in ("encoder", "dataset")}
    ctx = BuildContext(**context, encoder=encoder if "encoder" in entry["context"] else None)
    return get_registry().get(kind, entry["name"]).build(ctx, **entry["params"])


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_components_rebuild_from_config_json_alone(reference_run):
    run_dir = reference_run["run_dir"]
    resolved = _strict((run_dir / "config.json").read_text())["resolved"]
    ckpt = torch.load(max((run_dir / "checkpoints").glob("ckpt-*.pt")), map_location="cpu", weights_only=False)
    encoder = _rebuild("encoder", resolved["encoder"])
    enhancer = _rebuild("enhancer", resolved["enhancer"], encoder)
    assert resolved["enhancer"]["context"]["encoder"] == "center"
    assert resolved["encoder"]["context"]["dataset"] == resolved["dataset"]["name"] == "pie-synth"
    for name, module in (("encoder", encoder), ("enhancer", enhancer)):
        assert _shapes(module.state_dict()) == _shapes(ckpt[name]), name
        assert sum(p.numel() for p in module.parameters()) == reference_run["record"]["parameters"][name]
    assert set(resolved["losses"]) == set(ckpt["losses"]) == {"center", "l1"}
    for name, state in ckpt["losses"].items():
        assert _shapes(_rebuild("loss", resolved["losses"][name], encoder).state_dict()) == _shapes(state), name
    assert resolved["losses"]["center"]["params"] == {"lr": 0.0005, "seed": 0}  # the builder's defaults
    assert resolved["dataset"]["name"] == "pie-synth" and resolved["dataset"]["params"]["resolution"] == 64
    assert set(resolved["metrics"]) == {"psnr", "ssim"}


def test_record_plugins_lists_every_component(reference_run):
    plugins = reference_run["record"]["plugins"]
    assert set(plugins) == {"encoder:center", "enhancer:sa", "dataset:pie-synth", "loss:center", "loss:l1",
                            "metric:psnr", "metric:ssim"}
    registry = get_registry()
    for key, entry in plugins.items():
        kind, name = key.split(":", 1)
        spec = registry.get(kind, name)
        assert entry == {"plugin": spec.plugin, "plugin_version": spec.plugin_version, "version": spec.version,
                         "paper": spec.paper}, key


WRITER = textwrap.dedent('''
    import sys
    from piebench.record import RunRecord

    rec = RunRecord.load(sys.argv[1])
    rec.data["notes"] = ["x" * (64 << 20)]  # 64 MiB: the write takes long enough to be killed in it
    rec.write()
''')


def test_a_crash_mid_write_leaves_the_old_record(reference_run, tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = (reference_run["run_dir"] / "record.json").read_bytes()
    (run_dir / "record.json").write_bytes(old)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    child = Child([str(script), str(run_dir / "record.json")], dict(os.environ), tmp_path / "child",
                  command=[sys.executable])
    name = kill_when_created(child, run_dir, lambda n: n.startswith(".record.json.") and n.endswith(".tmp"))
    assert child.proc.returncode == -9
    assert (run_dir / name).exists()  # killed between creating the temporary and renaming it
    assert (run_dir / "record.json").read_bytes() == old
    assert _strict(old.decode())["status"] == "finished"
