"""Bad input to `piebench run`: one line, exit 2, no traceback, no run directory left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from piebench.cli import COMMANDS, cli, main

CASES = {
    "unknown encoder": (["--encoder", "angularr", "--enhancer", "sa"], "unknown encoder 'angularr' (did you mean 'angular'?)"),
    "unknown enhancer": (["--encoder", "angular", "--enhancer", "nope"], "choose one of: "),
    "refs 0": (["--encoder", "angular", "--enhancer", "sa", "--refs", "0"], "must be at least 1"),
    "bad loss weight": (["--encoder", "angular", "--enhancer", "sa", "--loss", "gram:abc"], "is not a number"),
    "unknown loss": (["--encoder", "angular", "--enhancer", "sa", "--loss", "gramm:0.1"], "unknown loss 'gramm'"),
    "incompatible pair": (["--encoder", "gram", "--enhancer", "sa"], "consumes maps, which encoder 'gram' does not provide"),
    "unknown protocol": (["--encoder", "angular", "--enhancer", "sa", "--protocol", "smok"], "unknown protocol 'smok'"),
    "typo in --set": (["--encoder", "angular", "--enhancer", "sa", "--set", "train.batch_user=2"], "unknown key"),
    "unknown schedule": (["--encoder", "angular", "--enhancer", "sa", "--schedule", "three-stage"], "unknown schedule"),
    # one past the last CUDA device: refused with or without a GPU (none: "CUDA is not available")
    "no such cuda device": (["--encoder", "angular", "--enhancer", "sa", "--device",
                             f"cuda:{torch.cuda.device_count()}"], "--device cuda:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path: Path, capsys):
    args, expected = CASES[case]
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["run", *args, "--runs-dir", str(runs), "--steps", "2", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("piebench: warning")]
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert not runs.exists() or not any(runs.rglob("record.json"))


def test_missing_runs_dir_parent(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--encoder", "angular", "--enhancer", "sa", "--steps", "2", "--quiet",
              "--runs-dir", str(tmp_path / "no" / "such" / "runs")])
    assert exc.value.code == 2
    assert "parent does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_help_summaries_match_the_commands_and_help_loads_none_of_them():
    """``piebench --help`` shows each command's own first sentence without importing its module."""
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name, (_, _, summary) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command.name == name
        assert click.Command(name, help=summary).get_short_help_str(1000) == command.get_short_help_str(1000), name
    probe = ("import sys\nfrom piebench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('piebench.commands.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and "users-curve" in out
    assert out.strip().splitlines()[-1] == "[]"
