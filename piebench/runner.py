"""One experiment end to end: build, then open the run, train, evaluate and record the result.

:func:`run_experiment` reads as those steps: :func:`prepare` builds everything (nothing is
written until the configuration, the plugins and the models have been checked, so bad input
leaves no run directory behind), :func:`open_run` chooses the run directory under the run
key's lock and writes its record, ``config.json`` and ``manifest.json``, :func:`start_training`
and :func:`train` train (or resume), :func:`evaluate_run` scores the frozen manifest, and the
record ends as finished, failed or interrupted (:class:`~piebench.record.RunRecord` owns its
fields and writes). The process's place in a ``torchrun`` job (``dist``) and the run key are
passed to each step.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import config as C
from .build import (
    Components,
    build_dataset,
    build_losses,
    build_metrics,
    build_models,
    plan_stages,
    resolve_device,
)
from .checkpoints import latest_checkpoint, resume_state
from .data.device_store import build_sampler
from .data.manifest import build_manifest
from .diagnostics import alarms, run_diagnostics, user_recall_entries
from .distributed import DistContext
from .distributed import setup as setup_distributed
from .errors import PiebenchError, RunFailed
from .evaluate import EvalResult, evaluate, gather_results, summarize
from .full_resolution import full_resolution_of
from .plugins import get_manager
from .record import RunRecord, plugins_used
from .runs import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    choose_run_dir,
    finished_run,
    probe_writable,
    remove_stale_temporaries,
    run_lock,
)
from .train import Trainer


@dataclass
class RunContext:
    """What lifecycle hooks receive as ``run``.

    config: the resolved configuration; run_dir: the run directory; run_key: the run's identity
    (:func:`piebench.config.run_key`, also in the record and every checkpoint); loggers: the
    experiment trackers switched on with ``--log`` (a tracker plugin acts only when named here);
    record: the run record as a plain ``dict`` (:attr:`piebench.record.RunRecord.data`, live: it
    shows the run's progress, and notes appended to ``record["notes"]`` are written with it).
    """

    config: dict[str, Any]
    run_dir: Path
    record: dict[str, Any]
    loggers: tuple[str, ...] = ()
    run_key: str = ""
    save: Callable[[], None] | None = None  # writes the record as it is now (what a failing hook's note uses)


@dataclass
class Prepared:
    """Everything a run needs, built and checked before any file is written."""

    comps: Components
    metrics: dict[str, Any]
    unavailable: dict[str, str]  # metric name -> why it cannot be computed here
    manifest: dict[str, Any]  # the frozen evaluation references
    resolved: dict[str, Any]  # what each component was built with (config.json's "resolved")

    @property
    def pairs(self) -> bool:
        """True when the encoder reads reference pairs (input and edited photo)."""
        return "inputs" in self.comps.encoder.requires


@dataclass
class OpenRun:
    """A run directory opened by :func:`open_run`, with its record and hook context."""

    run_dir: Path
    record: RunRecord
    ctx: RunContext
    hook: Any
    main: bool  # rank 0: writes files and calls the hooks
    fresh: bool  # created by this call (removed again when training cannot start)
    state: dict[str, Any] | None  # the checkpoint to resume from (None: from step 0)
    original: bytes | None  # record.json as it was (put back when a resume is refused)


def run_experiment(cfg: dict, runs_dir: str | Path, *, resume: bool = False, resume_from: str | None = None,
                   progress: bool = True, loggers: Any = ()) -> tuple[Path, dict]:
    """Train and evaluate ``cfg``; returns the run directory and the final record (a dict).

    Under ``torchrun`` every rank calls this (see :mod:`piebench.distributed`): rank 0 picks the
    run directory and writes every file; all ranks train on their shard of each global batch and
    evaluate their share of the manifest; ranks > 0 return the record without metrics.
    ``loggers`` names the experiment trackers to switch on (``--log``, see :func:`check_loggers`).
    """
    runs_dir = Path(runs_dir)
    loggers = check_loggers(loggers)
    dist = setup_distributed(resolve_device(cfg["device"]))  # one process unless started by torchrun
    key = C.run_key(cfg)
    built = prepare(cfg, dist.device)
    dist.prepare_models([built.comps.encoder, built.comps.enhancer, *built.comps.losses.values()], cfg["seed"])
    if dist.is_main:
        probe_writable(runs_dir, need_bytes=_disk_needed(built.comps))
    with run_lock(runs_dir, key, wait=resume) if dist.is_main else contextlib.nullcontext():
        run = open_run(cfg, runs_dir, built, dist=dist, key=key, resume=resume, resume_from=resume_from,
                       loggers=loggers)
        if not isinstance(run, OpenRun):  # nothing to resume: it finished (maybe while we waited)
            return run
        trainer = start_training(run, built, cfg, dist=dist, progress=progress)
        train(run, trainer)
        if evaluate_run(run, built, trainer, cfg, dist=dist, progress=progress):
            _end(run, trainer, "finished")
    return run.run_dir, run.record.data


# -- building --------------------------------------------------------------------------------------
def prepare(cfg: dict, device: str) -> Prepared:
    """Build everything a run needs (no files written): components, metrics, manifest."""
    registry = get_manager().registry
    registry.get("encoder", cfg["encoder"]["name"])
    registry.get("enhancer", cfg["enhancer"]["name"])
    for stage in cfg["train"]["stages"]:
        for name in stage.get("losses", {}):
            if name != "metric":
                registry.get("loss", name)
    for name in cfg["eval"]["metrics"]:
        registry.get("metric", name)
    _pin_determinism(cfg, device)
    resolved: dict[str, Any] = {}
    dataset = build_dataset(cfg, registry, resolved)
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    encoder, enhancer = build_models(cfg, registry, dataset, resolved)
    stages, notes = plan_stages(cfg, encoder, enhancer)
    losses = build_losses(stages, registry, dataset, encoder, cfg["train"]["refs"], resolved,
                          encoder_name=cfg["encoder"]["name"])
    for module in (encoder, enhancer, *losses.values()):
        module.to(device)
    comps = Components(dataset=dataset, encoder=encoder, enhancer=enhancer, losses=losses, stages=stages,
                       notes=notes)
    metrics, unavailable = build_metrics(cfg["eval"]["metrics"], registry, resolved)
    manifest = build_manifest(dataset, refs=cfg["eval"]["refs"], draws=cfg["eval"]["draws"],
                              seed=cfg["eval"]["seed"], max_photos=cfg["eval"].get("max_photos"))
    return Prepared(comps, metrics, unavailable, manifest, resolved)


def check_loggers(names: Any) -> tuple[str, ...]:
    """The ``--log`` names, each a registered logger that can work here (else a UsageError)."""
    names = tuple(dict.fromkeys(str(n) for n in names or ()))
    registry = get_manager().registry
    for name in names:
        registry.get("logger", name).create()  # unknown name / package missing -> one line
    return names


def _pin_determinism(cfg: dict, device: str) -> None:
    threads = int(cfg["train"].get("threads", 0) or 0)
    if threads > 0 and device == "cpu":
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(device == "cpu", warn_only=True)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False


def _disk_needed(comps: Components) -> int:
    """Bytes a run needs in its runs directory: three checkpoints (two kept plus the one being
    written) of weights and Adam's two moments, plus 4 MiB of logs, records and figures."""
    modules = [comps.encoder, comps.enhancer, *comps.losses.values()]
    weights = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    return 3 * 3 * weights + (4 << 20)


# -- step 1: open the run --------------------------------------------------------------------------
def open_run(cfg: dict, runs_dir: Path, built: Prepared, *, dist: DistContext, key: str, resume: bool,
             resume_from: str | None, loggers: tuple[str, ...]) -> OpenRun | tuple[Path, dict]:
    """Choose the run directory (the caller holds the run key's lock on rank 0) and write its
    record, ``config.json`` and ``manifest.json``. With ``--resume`` and a finished run of
    ``key``: that run's (directory, record) instead."""
    done = finished_run(runs_dir, key) if resume and not resume_from and dist.is_main else None
    if dist.broadcast_object(done is not None):
        return dist.broadcast_object(done)
    run_dir, state, resuming = None, None, False
    if dist.is_main:
        run_dir, resuming = choose_run_dir(cfg, runs_dir, key, resume, resume_from)
        state = resume_state(run_dir) if resuming else None
    fresh = dist.is_main and not resuming
    if dist.is_main and not fresh:
        remove_stale_temporaries(run_dir)
    run_dir, fresh, resumed = dist.broadcast_object((run_dir, fresh, state is not None))
    if resumed and state is None:  # ranks > 0 load the checkpoint rank 0 chose
        state = latest_checkpoint(run_dir / "checkpoints")[1]
    try:
        record = _open_record(cfg, run_dir, built, dist=dist, key=key, fresh=fresh)
        original = None if fresh else record.snapshot()
        comps = built.comps
        record.start(notes=comps.notes, pretrained_from=getattr(comps.encoder, "pretrained_from", ""),
                     parameters={"encoder": sum(p.numel() for p in comps.encoder.parameters()),
                                 "enhancer": sum(p.numel() for p in comps.enhancer.parameters())})
        if dist.is_main:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "config.json", {**cfg, "resolved": built.resolved})
            atomic_write_json(run_dir / "manifest.json", built.manifest)
            record.write()
    except BaseException:
        if fresh and dist.is_main:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    ctx = RunContext(config=cfg, run_dir=run_dir, record=record.data, loggers=loggers, run_key=key,
                     save=record.write_or_warn)
    return OpenRun(run_dir, record, ctx, get_manager().hook, dist.is_main, fresh, state, original)


def _open_record(cfg: dict, run_dir: Path, built: Prepared, *, dist: DistContext, key: str,
                 fresh: bool) -> RunRecord:
    """A new record for a fresh run, else the run's own record.json."""
    path = run_dir / "record.json"
    if not fresh:
        return RunRecord.load(path, rank=dist.rank)
    return RunRecord.new(cfg, key=key, eval_hash=C.eval_hash(cfg, built.comps.dataset.recipe_hash),
                         train_hash=C.train_hash(cfg), plugins=plugins_used(built.resolved), device=dist.device,
                         path=path, rank=dist.rank)


# -- step 2: train ---------------------------------------------------------------------------------
def start_training(run: OpenRun, built: Prepared, cfg: dict, *, dist: DistContext, progress: bool) -> Trainer:
    """The sampler and the trainer, restored from the run's checkpoint, then ``on_run_start``.

    Refused here (too few photos, a store too big, a checkpoint of another configuration): a
    fresh run's directory is removed, a resumed run's record is put back as it was.
    """
    comps = built.comps
    try:
        sampler = build_sampler(comps.dataset, cfg, device=dist.device, pairs=built.pairs)  # on the device if it fits
        run.record.set_speed({"store": sampler.store.mode, "kernel": sampler.kernel, "world_size": dist.world_size,
                              "backend": dist.backend, **{k: cfg["train"][k] for k in ("amp", "channels_last",
                                                                                      "compile") if k in cfg["train"]}})
        trainer = Trainer(comps, dist.shard_sampler(sampler), cfg, run.run_dir / "checkpoints", device=dist.device,
                          log_path=run.run_dir / "train_log.jsonl", hook=run.hook, run=run.ctx, progress=progress,
                          dist=dist, run_key=run.ctx.run_key)
        if run.state is not None:
            trainer.load_checkpoint(run.state)
        run.record.resumed_from(trainer.step)
        if run.main and trainer.step == 0:
            atomic_write_text(run.run_dir / "train_log.jsonl", "")
        elif run.main:  # said even under --quiet: the user must know what was kept
            print(f"piebench: resuming {run.run_dir} from step {trainer.step} of {trainer.total}", file=sys.stderr)
    except BaseException:
        if run.main and run.fresh:
            shutil.rmtree(run.run_dir, ignore_errors=True)
        elif run.main:
            run.record.restore(run.original)
        raise
    if run.main:  # a hook failing here in strict mode ends the record as failed, saying why: it stays
        run.hook.on_run_start(run=run.ctx)
    return trainer


def train(run: OpenRun, trainer: Trainer) -> None:
    """Train to the end of the last stage; an interrupt or a failure ends the record saying why
    and how to resume (the training time of this session is counted either way)."""
    t0 = time.perf_counter()
    try:
        trainer.fit()
    except KeyboardInterrupt:
        if not trainer.in_step and trainer.last_saved != trainer.step:  # a step boundary: consistent
            trainer.save_checkpoint()
        kept = (f"checkpoint of step {trainer.last_saved} kept" if trainer.last_saved is not None
                else "no checkpoint yet")
        _end(run, trainer, "interrupted", train_since=t0,
             reason=f"interrupted at step {trainer.step}; {kept}; resume with the same command and --resume")
        raise _interrupted(f"interrupted at step {trainer.step} of {trainer.total}; {kept} in {run.run_dir}; "
                           f"resume with the same command plus --resume") from None
    except PiebenchError as err:  # a one-line error (a plugin breaking its contract, ...): it is the reason
        _end(run, trainer, "failed", train_since=t0, reason=str(err))
        raise
    except OSError as err:  # disk full, file system gone read-only, ...
        reason = (f"writing the run failed at step {trainer.step}: {err.strerror or err}; {trainer.checkpoint_note()}; "
                  f"free space and resume with the same command plus --resume")
        _end(run, trainer, "failed", train_since=t0, reason=reason)
        raise RunFailed(reason) from None
    except Exception as err:
        _end(run, trainer, "failed", train_since=t0, reason=f"{type(err).__name__}: {err}")
        raise
    run.record.add_train_time(time.perf_counter() - t0)


# -- step 3: evaluate ------------------------------------------------------------------------------
def evaluate_run(run: OpenRun, built: Prepared, trainer: Trainer, cfg: dict, *, dist: DistContext,
                 progress: bool) -> bool:
    """Score the frozen manifest (every rank its share); rank 0 writes ``per_image.csv``,
    ``control.npz``, figures and the summary into the record. False on ranks > 0 (their part
    is done); an interrupt or a failure ends the record saying so."""
    t0 = time.perf_counter()
    try:
        result = _evaluate_shards(built, cfg, dist=dist, progress=progress)
        if not run.main:
            return False
        _write_results(result, run.run_dir)
        summary = summarize(result, list(built.metrics), seed=cfg["seed"])
        _diagnostics(result, built.comps, run.run_dir, cfg, built.manifest, dist.device, summary)
        registry = get_manager().registry
        run.record.set_results(summary, manifest_hash=built.manifest.get("hash"), eval_s=time.perf_counter() - t0,
                               metric_variants={name: registry.get("metric", name).variant
                                                for name in cfg["eval"]["metrics"]})
        run.hook.on_eval_end(run=run.ctx, metrics=summary)
    except KeyboardInterrupt:
        _end(run, trainer, "interrupted",
             reason=f"interrupted during evaluation; training is complete (checkpoint of step {trainer.step}); "
                    f"resume with the same command and --resume to evaluate without retraining")
        raise _interrupted(f"interrupted during evaluation; training is complete and checkpointed in {run.run_dir}; "
                           f"resume with the same command plus --resume to evaluate without retraining") from None
    except Exception as err:
        _end(run, trainer, "failed", reason=f"evaluation failed: {type(err).__name__}: {err}")
        raise
    return True


def _evaluate_shards(built: Prepared, cfg: dict, *, dist: DistContext, progress: bool) -> EvalResult | None:
    """This rank's share of the manifest evaluated, all shares merged in manifest order on rank 0."""
    comps = built.comps
    shard = dist.shard_manifest(built.manifest)  # every entry with one process
    spec = get_manager().registry.get("enhancer", cfg["enhancer"]["name"])
    result = evaluate(comps.encoder, comps.enhancer, comps.dataset, shard, metrics=built.metrics, pairs=built.pairs,
                      device=dist.device, progress=progress and dist.is_main, unavailable=built.unavailable,
                      full=cfg["eval"].get("test_resolution", "store") == "full",
                      full_resolution_path=full_resolution_of(spec, comps.enhancer)) if shard["entries"] else None
    return gather_results(dist, result, built.manifest)


def _write_results(result: EvalResult, run_dir: Path) -> None:
    """``per_image.csv`` (one row per photo, user and draw) and ``control.npz`` (the matrices and
    vectors diagnostics recompute from), each written atomically."""
    atomic_write_text(run_dir / "per_image.csv", result.per_image.to_csv(index=False))
    buf = io.BytesIO()
    np.savez(buf, mse_out_tgt=result.mse_out_tgt, mse_tgt_tgt=result.mse_tgt_tgt, group_photos=result.group_photos,
             embeddings=result.embeddings, embedding_users=result.embedding_users,
             embedding_photos=result.embedding_photos, vectors=result.vectors, vector_users=result.vector_users,
             vector_photos=result.vector_photos, vector_draws=result.vector_draws)
    atomic_write_bytes(run_dir / "control.npz", buf.getvalue())


def _diagnostics(result: EvalResult, comps: Components, run_dir: Path, cfg: dict, manifest: dict, device: str,
                 summary: dict) -> None:
    """Add steering, separability, probes and alarms to ``summary`` (figures go to run_dir)."""
    diag = run_diagnostics(result, comps, run_dir, cfg, manifest=manifest, device=device)
    for group, values in diag.pop("control").items():
        summary.setdefault(group, {}).update(values)
    for group, value in user_recall_entries(diag.get("preference_separability", {})).items():
        summary.setdefault(group, {})["user_recall"] = value  # the leaderboard's "are users told apart?"
    summary.update(diag)
    summary["alarms"] = alarms(summary, diag.get("probes", {}))


# -- step 4: record the end ------------------------------------------------------------------------
def _end(run: OpenRun, trainer: Trainer, status: str, *, reason: str | None = None,
         train_since: float | None = None) -> None:
    """End the record as ``status`` (adding the training time since ``train_since``), write it
    and call ``on_run_end``: on rank 0 only."""
    if not run.main:
        return
    if train_since is not None:
        run.record.add_train_time(time.perf_counter() - train_since)
    run.record.finish(status, reason=reason, compute={"steps": trainer.step, "total_steps": trainer.total,
                                                       "images_seen": trainer.images_seen})
    run.hook.on_run_end(run=run.ctx, record=run.record.data)


def _interrupted(message: str) -> RunFailed:
    """The error of a run stopped by Ctrl-C: exit code 130, like a shell."""
    err = RunFailed(message)
    err.exit_code = 130
    return err
