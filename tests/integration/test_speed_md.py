"""leaderboards/speed.md is exactly what its committed records generate, and says what the issue asks."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "leaderboards"


def _speed():
    spec = importlib.util.spec_from_file_location("speed", ROOT / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_md_regenerates_from_its_records():
    assert (ROOT / "speed.md").read_text() == _speed().render_speed(), \
        "leaderboards/speed.md differs from what leaderboards/records/speed generates (python leaderboards/speed.py)"


def test_star_is_at_least_as_fast_as_the_official_code_in_the_committed_records():
    speed = _speed()
    official = speed._newest(sorted(speed.RECORDS.glob("official-star-*.json")))
    assert {r["size"] for r in official["results"]} == {"1080p", "4k"} and official["threads"] == 1
    for r in official["results"]:
        assert r["ratio"] >= 1.0 and r["bit_equal"]
        assert r["peak_memory_mb"]["piebench"] <= r["peak_memory_mb"]["official"]
    bench = json.loads((speed.RECORDS / "star-curves-benchmark.json").read_text())["benchmarks"]
    ratios = {b["param"]: b["extra_info"]["ratio_star_vs_official"] for b in bench}
    assert set(ratios) == {f"{w}-{s}" for w in ("curve step", "end to end") for s in ("1080p", "4k")}
    assert min(ratios.values()) >= 1.0
    names = {r["enhancer"]["name"] for r in __import__("piebench.benchfiles", fromlist=["x"]).iter_bench_records(
        speed.RECORDS)}
    assert {"star", "lut3d", "csrnet", "hdrnet"} <= names


def test_each_table_shows_its_command_and_sections_follow_the_records(tmp_path):
    speed = _speed()
    text = speed.render_speed()
    for command in ("tools/star_official.py --official", "--benchmark-json leaderboards/records/speed",
                    "piebench bench --enhancer E --configuration paper", "piebench bench --sampler"):
        assert command in text
    assert "x bound" in text and "GB/s" in text
    part = tmp_path / "speed"
    shutil.copytree(speed.RECORDS, part)
    for f in part.glob("official-star-*.json"):
        f.unlink()
    assert "against the official StarEnhancer code" not in speed.render_speed(part)  # no record, no table
