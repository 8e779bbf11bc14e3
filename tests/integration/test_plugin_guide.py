"""docs/plugins.md kept true: its example package, installed as a distribution, runs end to end.

The guide marks each example file's code block with ``file=PATH`` after the language (a file
may be split over several blocks, concatenated in order), the commands to try with
``run=try-it`` and quoted output lines with ``output=NAME``. The package is written exactly as
printed and installed as a distribution (``<name>-<version>.dist-info`` with the entry points of
its ``pyproject.toml``, as pip writes them); the guide's commands run as child processes in an
empty directory. The misbehaving variants (a builder returning a bound method, an observer that
raises) are checked in-process against the lines the guide quotes; their CLI path (``list``,
``run``, strict mode) is exercised by tests/reliability/test_broken_plugins.py.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
FILES = ("pyproject.toml", "tintkit/__init__.py", "tintkit/models.py", "tintkit/data.py", "tintkit/plugin.py")
COMPONENTS = ("mean-colour", "tint", "tint-l1", "tint-err", "tint-squares", "tint-log")
_BLOCK = re.compile(r"^```(\w+) (file|run|output)=(\S+)\n(.*?)^```$", re.M | re.S)
_FENCE = re.compile(r"^```.*$", re.M)


def guide_blocks(tag: str) -> dict[str, str]:
    """The guide's ``tag=NAME`` blocks by NAME, blocks of one NAME concatenated in order."""
    text = GUIDE.read_text()
    assert len(_FENCE.findall(text)) % 2 == 0, "docs/plugins.md has an unclosed code fence"
    out: dict[str, str] = {}
    for m in _BLOCK.finditer(text):
        if m.group(2) == tag:
            out[m.group(3)] = out.get(m.group(3), "") + m.group(4)
    return out


def install(files: dict[str, str], root: Path) -> Path:
    """Write the package into ``root`` with a dist-info made from its pyproject.toml; returns ``root``."""
    project = tomllib.loads(files["pyproject.toml"])["project"]
    for rel, text in files.items():
        if rel != "pyproject.toml":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                     for group, eps in project.get("entry-points", {}).items())
    (info / "entry_points.txt").write_text(groups)
    return root


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text``."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|--")]


def start(command: str, cwd: Path, env: dict) -> subprocess.Popen:
    args = shlex.split(command)
    assert args[0] == "piebench", command
    return subprocess.Popen([sys.executable, "-m", "piebench", *args[1:]], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> SimpleNamespace:
    out, err = proc.communicate(timeout=600)
    return SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err)


def test_the_guide_has_every_example_file_and_the_hooks_as_they_are():
    """Strict parsing (a missing, renamed or extra file fails), and the guide's hook signatures and
    typed fields are those of piebench.hookspecs and piebench.registry."""
    from piebench import hookspecs
    from piebench.registry import TYPED_KEYS

    files = guide_blocks("file")
    assert sorted(files) == sorted(FILES)
    assert all(text.strip() for text in files.values())
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["entry-points"]["piebench"] == {"tintkit": "tintkit.plugin"}
    text = GUIDE.read_text()
    hooks = [f for name, f in vars(hookspecs).items() if inspect.isfunction(f) and name.startswith(("register_", "on_"))]
    assert len(hooks) == 10
    for f in hooks:
        signature = f"{f.__name__}({', '.join(inspect.signature(f).parameters)})"
        if f.__name__.startswith("on_"):
            assert f"`{signature}`" in text, signature
        else:
            assert f"`{f.__name__}`" in text, f.__name__
    assert "docs/plugins.md" in hookspecs.__doc__
    for kind, keys in TYPED_KEYS.items():
        for key in keys:
            assert re.search(rf"^\| [a-z, ]*\b{kind}\b[a-z, ]* \| `{key}` \|", text, re.M), (kind, key)
    commands = guide_blocks("run")["try-it"].strip().splitlines()
    assert [shlex.split(c)[:2] for c in commands] == [["piebench", "list"], ["piebench", "run"], ["piebench", "run"],
                                                      ["piebench", "leaderboard"], ["piebench", "report"]]


@pytest.mark.slow
def test_the_example_package_trains_and_its_metric_shows_everywhere_without_splitting(tmp_path: Path):
    site, work = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    work.mkdir()
    install(guide_blocks("file"), site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing, first_run, second_run, board, report = guide_blocks("run")["try-it"].strip().splitlines()
    procs = [start(c, work, env) for c in (listing, first_run, second_run)]  # independent: run side by side
    res_list, res_first, res_second = (finish(p) for p in procs)

    # piebench list: the six components, from plugin tintkit 0.1.0, without a single warning
    assert res_list.returncode == 0, res_list.stderr
    assert "warning" not in res_list.stderr and "Traceback" not in res_list.stderr, res_list.stderr
    rows = {cells[0]: cells for cells in table_rows(res_list.stdout)}
    for name in COMPONENTS:
        assert rows[name][1] == "tintkit 0.1.0", rows.get(name)

    # the first run: trained 48 steps (the encoder stage is skipped, as the guide says), the metric's column
    assert res_first.returncode == 0, res_first.stderr[-3000:]
    header = next(line for line in res_first.stdout.splitlines() if line.startswith("| users"))
    assert "tint err ↓" in header
    records = {}
    for path in (work / "runs").rglob("record.json"):
        rec = json.loads(path.read_text())
        records[rec["seed"]] = (path.parent, rec)
    run_dir, rec = records[0]
    assert rec["status"] == "finished"
    assert rec["compute"]["steps"] == 48
    assert any("stage 'encoder' skipped" in note for note in rec["notes"]), rec["notes"]
    assert rec["plugins"]["encoder:mean-colour"] == {**rec["plugins"]["encoder:mean-colour"], "plugin": "tintkit",
                                                     "plugin_version": "0.1.0", "version": "1"}
    assert rec["plugins"]["dataset:tint-squares"]["plugin"] == "tintkit"
    assert "loss.tint-l1=default" in rec["overrides"]
    tint_err = rec["metrics"]["seen"]["tint-err"]["mean"]
    assert 0 < tint_err < 255 and rec["metric_variants"]["tint-err"] == "L1 of the per-image channel means, x255"
    assert rec["metrics"]["seen"]["n_users"] == 4 and rec["metrics"]["unseen"]["n_users"] == 2

    # the observer wrote what the guide says: start, one line per step, eval (with the metric), end
    events = [json.loads(line) for line in (run_dir / "tint-log.jsonl").read_text().splitlines()]
    assert events[0] == {"event": "start", "encoder": "mean-colour", "seed": 0}
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 49))
    assert [e for e in events if e["event"] == "eval"] == [
        {"event": "eval", "psnr": rec["metrics"]["seen"]["psnr"]["mean"], "tint_err": tint_err}]
    assert events[-1] == {"event": "end", "status": "finished"}

    # the second run (seed 1, no --metric): no column, same evaluation spec and training recipe
    assert res_second.returncode == 0, res_second.stderr[-3000:]
    assert "tint err" not in res_second.stdout
    run_dir2, rec2 = records[1]
    assert "tint-err" not in rec2["metrics"]["seen"]
    assert json.loads((run_dir2 / "tint-log.jsonl").read_text().splitlines()[-2])["tint_err"] is None
    assert rec2["protocol"]["eval_hash"] == rec["protocol"]["eval_hash"]

    res_board, res_report = (finish(p) for p in [start(c, work, env) for c in (board, report)])
    # one table, one row of 2 seeds, with the metric's column filled from the first run
    assert res_board.returncode == 0, res_board.stderr
    assert res_board.stdout.count("\n## ") + res_board.stdout.startswith("## ") == 1, res_board.stdout
    table = table_rows(res_board.stdout)
    head, body = table[0], table[1:]
    assert len(body) == 1, res_board.stdout
    row = dict(zip(head, body[0], strict=True))
    assert (row["encoder"], row["enhancer"], row["seeds"]) == ("mean-colour", "tint", "2")
    assert row["tint err ↓ seen"] == f"{tint_err:.2f}"

    assert res_report.returncode == 0, res_report.stderr[-3000:]
    html = (work / "report" / "index.html").read_text()
    assert "tint err ↓" in html and "mean-colour" in html


def _forget_tintkit() -> None:
    for name in [m for m in sys.modules if m == "tintkit" or m.startswith("tintkit.")]:
        del sys.modules[name]


@pytest.fixture
def variant(tmp_path: Path, monkeypatch):
    """The example package with ``plugin.py`` edited by ``(old, new)`` pairs, imported as ``tintkit``."""

    def make(*edits: tuple[str, str]):
        files = dict(guide_blocks("file"))
        for old, new in edits:
            assert files["tintkit/plugin.py"].count(old) == 1, old
            files["tintkit/plugin.py"] = files["tintkit/plugin.py"].replace(old, new)
        install(files, tmp_path / "site")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        _forget_tintkit()
        return importlib.import_module("tintkit.plugin")

    (tmp_path / "site").mkdir()
    yield make
    _forget_tintkit()


def _manager(module):
    from piebench.plugins import PluginInfo, PluginManager

    manager = PluginManager()
    manager.add_module(PluginInfo("tintkit", "tintkit.plugin", "piebench-tintkit", "0.1.0"), module)
    manager.collect()
    return manager


def test_a_builder_returning_a_method_is_the_line_the_guide_quotes(variant):
    from piebench.contract import probe

    module = variant(("return TintEnhancer(ctx.encoder.dim, hidden)", "return TintEnhancer(ctx.encoder.dim, hidden).forward"))
    manager = _manager(module)
    assert manager.warnings == []
    lines = probe(manager.registry, ["encoder", "enhancer", "loss", "metric", "dataset"], {"tintkit"})
    assert [f"piebench: warning: {line}" for line in lines] == [guide_blocks("output")["builder"].strip()]


def test_a_raising_observer_is_the_line_the_guide_quotes(variant, tmp_path: Path, monkeypatch, capsys):
    from piebench.errors import RunFailed
    from piebench.record import RunRecord

    module = variant(('_log(run, event="step", step=step, loss=losses["loss"])', 'raise ValueError("disk quota")'))
    step = {"stage": "enhancer", "losses": {"loss": 0.5, "time_s": 0.01}, "lrs": {"enhancer": 1e-3}}

    def run(name: str) -> SimpleNamespace:
        (tmp_path / name).mkdir()
        record = {"status": "running"}
        return SimpleNamespace(config={"encoder": {"name": "mean-colour"}, "seed": 0}, run_dir=tmp_path / name,
                               record=record, loggers=("tint-log",),
                               save=RunRecord(record, tmp_path / name / "record.json").write)

    monkeypatch.delenv("PIEBENCH_STRICT_PLUGINS", raising=False)
    manager, ctx = _manager(module), run("lenient")
    manager.call_lifecycle("on_run_start", run=ctx)
    capsys.readouterr()
    for i in (1, 2):
        manager.call_lifecycle("on_step_end", run=ctx, step=i, **step)
    manager.call_lifecycle("on_run_end", run=ctx, record=ctx.record)
    quoted = guide_blocks("output")["observer"].strip()
    assert capsys.readouterr().err.strip().splitlines() == [quoted]  # once, then skipped
    assert [json.loads(line)["event"] for line in (ctx.run_dir / "tint-log.jsonl").read_text().splitlines()] == ["start"]
    line = quoted.removeprefix("piebench: warning: ").split("; its lifecycle hooks")[0]
    assert ctx.record["notes"] == [f"{line}; its lifecycle hooks were skipped for the rest of the run"]

    monkeypatch.setenv("PIEBENCH_STRICT_PLUGINS", "1")
    manager, ctx = _manager(module), run("strict")
    with pytest.raises(RunFailed) as err:
        manager.call_lifecycle("on_step_end", run=ctx, step=1, **step)
    assert str(err.value) == line and f"`piebench: error: {line}`" in GUIDE.read_text()
    saved = json.loads((ctx.run_dir / "record.json").read_text())
    assert (saved["status"], saved["reason"]) == ("failed", line)
