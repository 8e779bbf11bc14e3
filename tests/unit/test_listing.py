"""`piebench list`: every built-in shows a description and its paper reference."""

from __future__ import annotations

import json

from click.testing import CliRunner

from piebench.cli import cli


def test_every_component_lists_a_description_and_a_paper():
    res = CliRunner().invoke(cli, ["list", "--json", "--no-params"])
    assert res.exit_code == 0, res.output
    listing = json.loads(res.output)
    assert set(listing) == {"encoders", "enhancers", "losses", "datasets", "metrics", "loggers"}
    assert [r["name"] for r in listing["loggers"]] == ["tensorboard"]
    for kind in ("encoders", "enhancers", "losses", "datasets", "loggers"):
        for row in listing[kind]:
            assert row["description"], (kind, row["name"])
            assert row["paper"], (kind, row["name"])
            assert row["plugin"] and row["plugin_version"], (kind, row["name"])


def test_parameter_counts_are_counted_by_building_the_models():
    res = CliRunner().invoke(cli, ["list", "enhancers", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["csrnet"]["parameters"]["paper"] == 36_489
    assert rows["lut3d"]["parameters"]["paper"] == 593_516
    assert rows["hdrnet"]["parameters"]["paper"] == 482_080
    assert rows["star"]["parameters"]["paper"] == 2_626_566 + 11_462_459
    assert abs(rows["pienet"]["parameters"]["paper"] - 16.39e6) / 16.39e6 < 0.05
    assert rows["identity"]["parameters"]["small"] == 0
