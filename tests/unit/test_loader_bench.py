"""``piebench bench --sampler``: the loader benchmark's record, ratios and CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from piebench.cli import cli
from piebench.errors import UsageError
from piebench.loader_bench import LoaderSettings, bench_sampler, loader_table


def test_record_holds_consistent_ratios():
    rec = bench_sampler(LoaderSettings(protocols=("smoke",), refs=(1, 3), store_crops=1, repeats=3, warmup=1,
                                       train_repeats=1))
    assert rec["kind"] == "loader-bench" and [r["refs"] for r in rec["results"]] == [1, 3]
    for r in rec["results"]:
        assert r["batch"] == 8 and r["images"] == 8 * (2 + r["refs"]) and r["resolution"] == [64, 64]
        assert r["batch_mb_uint8"] * 2**20 == pytest.approx(r["images"] * 64 * 64 * 3)
        assert r["sampler_over_memcpy"] == pytest.approx(r["sampler_ms"] / r["memcpy_ms"])
        assert r["step_over_sampler"] == pytest.approx(r["train_step_ms"] / r["sampler_ms"])
        assert r["train_stage"] == "enhancer" and r["train_step_ms"] > 0 and r["memcpy_f32_ms"] > 0
    assert "step/sampler" in loader_table(rec)


def test_cli_sampler_mode_writes_a_record(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--sampler", "--protocols", "smoke", "--refs", "2", "--store-crops",
                                      "1", "--batches", "2", "--no-train", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sampler/memcpy" in result.output and "train step ms" not in result.output
    (path,) = (tmp_path / "bench").glob("sampler-cpu-*.json")
    assert json.loads(path.read_text())["results"][0]["refs"] == 2


def test_bad_settings_are_refused():
    with pytest.raises(UsageError, match="--refs"):
        LoaderSettings(refs=(0,)).check()
    result = CliRunner().invoke(cli, ["bench"])
    assert result.exit_code != 0 and "--enhancer" in result.output
