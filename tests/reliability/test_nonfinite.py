"""A loss (or its gradient) that turns NaN at step 9: one-line error naming step and term, last checkpoint kept.

The test losses come from a plugin (``rel_faulty``) loaded with PIEBENCH_LOAD_PLUGINS and are
added to the enhancer stage with ``--loss``; that stage starts at step 7, so their third call
is step 9, after the checkpoints of steps 4, 6 and 8.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_helpers import (
    RUN_ARGS,
    error_lines,
    find_run_dir,
    loadable_ckpt_steps,
    loss_log,
    piebench,
    plugin_env,
    read_record,
)

CASES = {"test-nan": "non-finite loss at step 9", "test-nangrad": "non-finite gradients at step 9"}


@pytest.mark.parametrize("loss", list(CASES))
def test_non_finite_stops_naming_step_and_term(loss: str, tmp_path: Path, plugin_root: Path):
    runs = tmp_path / "runs"
    env = plugin_env(plugin_root, modules="rel_observer,rel_faulty")
    res = piebench(*RUN_ARGS, "--quiet", "--loss", loss, "--runs-dir", str(runs), env=env)
    assert res.returncode == 1, res.stderr
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert CASES[loss] in lines[0] and f"'{loss}'" in lines[0], lines[0]
    assert "'l1'" not in lines[0]  # the l1 term (finite, finite gradient) is not blamed
    assert "step 8" in lines[0]  # where the last good checkpoint is
    run_dir = find_run_dir(runs)
    rec = read_record(run_dir)
    assert rec["status"] == "failed" and CASES[loss] in rec["reason"] and loss in rec["reason"]
    assert rec["compute"]["steps"] == 8
    assert loadable_ckpt_steps(run_dir / "checkpoints")[-1] == 8  # the last good checkpoint stays
    log = loss_log(run_dir)
    assert [e["step"] for e in log] == list(range(1, 9))
    assert all(v == v for e in log for k, v in e.items() if isinstance(v, float))  # no NaN was logged
