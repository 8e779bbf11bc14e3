"""tools/gpu_check.sh --dry-run: the GPU check's whole code path on the CPU with tiny sizes."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest
import torch

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "tools" / "gpu_check.sh"


def _run(*args, timeout=600):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_writes_the_report_and_refuses_to_overwrite_it(tmp_path):
    out = tmp_path / "check"
    proc = _run("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    assert report["mode"] == "dry-run" and report["plan"]["device"] == "cpu"
    assert [t["pair"] for t in report["train"]] == ["angular+sa", "star+star"]
    for t in report["train"]:
        assert t["status"] == "finished" and t["steps"] == 4 and t["amp"] == "bf16" and t["channels_last"]
        assert t["steps_per_s"] == pytest.approx(1e3 / t["step_ms_p50"]) and t["sampler_ms_p50"] > 0
        assert t["sampler_vs_step"] == pytest.approx(t["sampler_ms_p50"] / t["step_ms_p50"])
        assert not t["compile"]
    assert [(b["enhancer"], b["amp"]) for b in report["bench"]] == [
        (e, a) for e in ("star", "lut3d", "csrnet") for a in ("fp32", "bf16")]
    for b in report["bench"]:
        assert b["size"] == "64x48" and b["images_per_s"] > 0 and b["p50_ms"] <= b["p95_ms"]
        assert b["full_res_ns_per_px"] > 0
    assert [a["enhancer"] for a in report["agreement"]] == ["star", "lut3d", "csrnet"]
    for a in report["agreement"]:
        assert a["pass"] == (a["psnr_db"] > 40) and a["max_abs_diff"] > 0  # bf16 really ran: outputs differ
    assert any("compile was NOT exercised" in n for n in report["notes"])  # said, not silently skipped
    assert "compile was NOT exercised" in md and "| angular+sa | no |" in md and "## Verdict" in md
    assert all(report["checks"].values())

    again = _run("--dry-run", "--out", str(out), timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real check would run")
    proc = _run("--out", str(tmp_path / "x"), timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
