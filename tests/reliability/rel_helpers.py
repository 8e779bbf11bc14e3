"""Shared pieces of the reliability suite: the tiny run, child processes, watchers, test plugins.

Runs are real ``python -m piebench`` child processes; faults are real signals sent by this
(parent) process when an observed event happens (a checkpoint file appears, the evaluation
bar moves), never mocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A tiny two-stage run with a stateful loss (center: learned centres with their own LR) and the
#: cosine schedule: 30 steps = 6 encoder + 24 enhancer; checkpoints at 4, 6 (stage end), 8, ..., 28, 30.
TOTAL_STEPS = 30
STAGE1_STEPS = 6
RUN_ARGS = ["run", "--encoder", "center", "--enhancer", "sa", "--steps", str(TOTAL_STEPS),
            "--set", "train.checkpoint_every=4", "--set", "eval.max_photos=3", "--set", "train.threads=1",
            "--set", 'eval.metrics=["psnr", "ssim"]']

OBSERVER = '''
"""Test plugin: appends lifecycle events (JSON lines) to $PIEBENCH_TEST_EVENTS."""
import json, os, time
from piebench import hookimpl


def _emit(**event):
    path = os.environ.get("PIEBENCH_TEST_EVENTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), **event}) + "\\n")


@hookimpl
def on_run_start(run):
    _emit(event="start", key=run.run_key, resumed_from=run.record.get("resumed_from_step"),
          run_dir=str(run.run_dir))


@hookimpl
def on_step_end(run, stage, step, losses):
    _emit(event="step", step=step, stage=stage)


@hookimpl
def on_eval_end(run, metrics):
    _emit(event="eval_end")
    # Still inside evaluation: a test may hold the run here to signal it deterministically.
    time.sleep(float(os.environ.get("PIEBENCH_TEST_EVAL_HOLD", "0")))


@hookimpl
def on_run_end(run, record):
    _emit(event="end", key=run.run_key, status=record["status"])
'''

FAULTY = '''
"""Test plugin: losses that go non-finite at a chosen step and an enhancer of the wrong shape."""
import torch
import torch.nn.functional as F
from torch import nn
from piebench import hookimpl
from piebench.interfaces import Enhancer, Loss


class NanAt(Loss):
    """L1, but NaN from its ``at``-th call on."""

    kind = "image"

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = int(at), 0

    def forward(self, output, target, batch=None):
        self.calls += 1
        loss = F.l1_loss(output, target)
        return loss * float("nan") if self.calls >= self.at else loss


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradAt(NanAt):
    """A finite L1 whose gradient is NaN from its ``at``-th call on."""

    def forward(self, output, target, batch=None):
        self.calls += 1
        if self.calls >= self.at:
            output = _NanGrad.apply(output)
        return F.l1_loss(output, target)


class HalfSize(Enhancer):
    """Returns half the input size: the wrong shape."""

    consumes = frozenset({"vector"})

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x, pref):
        return self.gain * x[:, :, ::2, ::2]


@hookimpl
def register_losses(register):
    register("test-nan", build=lambda ctx, at: NanAt(at), description="NaN at a step",
             configurations={"small": {"at": 3}}, kind="image")
    register("test-nangrad", build=lambda ctx, at: NanGradAt(at), description="NaN gradient at a step",
             configurations={"small": {"at": 3}}, kind="image")


def _not_a_module(x, pref):
    return x


@hookimpl
def register_enhancers(register):
    register("test-halfsize", build=lambda ctx: HalfSize(), description="wrong output shape",
             configurations={"small": {}}, consumes=["vector"])
    register("test-function", build=lambda ctx: _not_a_module, description="a builder returning a function",
             configurations={"small": {}}, consumes=["vector"])
'''

RAISING = '''
"""Test plugin: an observer whose on_step_end raises from the second step on."""
from piebench import hookimpl


@hookimpl
def on_step_end(run, stage, step, losses):
    if step >= 2:
        raise ValueError(f"observer broke at step {step}")
'''


def write_plugins(root: Path) -> Path:
    """The observer and faulty test plugins as importable modules under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rel_observer.py").write_text(OBSERVER)
    (root / "rel_faulty.py").write_text(FAULTY)
    (root / "rel_raising.py").write_text(RAISING)
    return root


def plugin_env(plugin_root: Path, events: Path | None = None, modules: str = "rel_observer",
               **extra: str) -> dict[str, str]:
    """Environment for a child that loads the test plugins (and writes events to ``events``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_root), os.environ.get("PYTHONPATH", "")]),
           "PIEBENCH_LOAD_PLUGINS": modules, "OMP_NUM_THREADS": "1", **extra}
    if events is not None:
        env["PIEBENCH_TEST_EVENTS"] = str(events)
    return env


def extra_plugin_env(folder: Path, plugin_root: Path, sources: dict[str, str], modules: list[str],
                     **extra: str) -> dict[str, str]:
    """:func:`plugin_env` loading ``modules``, where ``sources`` (module name -> code) are written
    into ``folder``, which joins the child's path before the shared test plugins."""
    for name, src in sources.items():
        (folder / f"{name}.py").write_text(src)
    env = plugin_env(plugin_root, modules=",".join(modules), **extra)
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env['PYTHONPATH']}"
    return env


def piebench(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m piebench ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "piebench", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Child:
    """A ``python -m piebench`` child (or ``command``) whose output goes to files the parent can watch."""

    def __init__(self, args: list[str], env: dict, workdir: Path, command: list[str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = workdir / "stdout.txt", workdir / "stderr.txt"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        # As a foreground terminal process: Ctrl-C and SIGTERM at their defaults, even when pytest
        # itself was started with SIGINT ignored (a background job of a script), which children inherit.
        self.proc = subprocess.Popen([*(command or [sys.executable, "-m", "piebench"]), *args], stdout=self._out,
                                     stderr=self._err, env=env, text=True, preexec_fn=_default_signals)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._out.close()
            self._err.close()
        return rc

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait(60)


def wait_until(child: Child, predicate: Callable[[], Any], what: str, timeout: float = 300,
               interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail if the child exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if not child.alive():
            value = predicate()
            if value:
                return value
            raise AssertionError(f"child exited (rc {child.proc.returncode}) before {what}:\n{child.stderr()[-2000:]}")
        time.sleep(interval)
    child.kill()
    raise AssertionError(f"timed out waiting for {what}")


def find_run_dir(runs: Path) -> Path | None:
    """The single run directory under ``runs`` (``<protocol>/<pair>/<run-id>``), if it exists yet."""
    found = [p for p in runs.glob("*/*/*") if p.is_dir()]
    return found[0] if len(found) == 1 else None


def log_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "train_log.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def loss_log(run_dir: Path) -> list[dict]:
    """The per-step loss log without the wall-time field."""
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]


def ckpt_steps(ckpt_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in ckpt_dir.glob("ckpt-*.pt"))


def loadable_ckpt_steps(ckpt_dir: Path) -> list[int]:
    """Steps of the checkpoints that load, after asserting that every ``ckpt-*.pt`` loads."""
    import torch

    steps = []
    for path in sorted(ckpt_dir.glob("ckpt-*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=False)  # raises if corrupt
        assert state["step"] == int(path.stem.split("-")[1]), path
        steps.append(state["step"])
    return steps


def events(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def error_lines(stderr: str) -> list[str]:
    """The non-warning lines of stderr (what the user is told went wrong)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and "warning:" not in ln and "unavailable" not in ln]


class DirWatch:
    """inotify on one directory: the names created or moved into it, as soon as they appear.

    Lets the parent react to a temporary file appearing within microseconds, which a polling
    loop would mostly miss (a checkpoint write takes milliseconds).
    """

    IN_MOVED_TO, IN_CREATE = 0x80, 0x100

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(str(path)), self.IN_CREATE | self.IN_MOVED_TO) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")

    def names(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i + 16 <= len(data):
            _, _, _, length = struct.unpack_from("iIII", data, i)
            out.append(data[i + 16 : i + 16 + length].rstrip(b"\0").decode())
            i += 16 + length
        return out

    def close(self) -> None:
        os.close(self.fd)


def kill_when_created(child: Child, directory: Path, accept: Callable[[str], bool], timeout: float = 300) -> str:
    """SIGKILL the child the moment a name accepted by ``accept`` appears in ``directory``."""
    watch = DirWatch(directory)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.alive():
            for name in watch.names(0.2):
                if accept(name):
                    child.signal(signal.SIGKILL)
                    child.wait(60)
                    return name
        raise AssertionError(f"child ended (rc {child.proc.returncode}) before a matching file appeared in "
                             f"{directory}:\n{child.stderr()[-2000:]}")
    finally:
        watch.close()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``piebench ARGV`` in this process: (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from piebench.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()
