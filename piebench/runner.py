"""One experiment end to end: build, train (or resume), evaluate, write the record.

Nothing is written until the configuration, the plugins and the models have been checked,
so bad input leaves no run directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
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
from .errors import RunFailed, UsageError
from .personalize import full_resolution_of
from .plugins import get_manager
from .runs import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    base_record,
    find_runs,
    new_run_id,
    now,
    probe_writable,
    run_group_dir,
    run_lock,
)


@dataclass
class RunContext:
    """What lifecycle hooks receive: the resolved config, the run directory, the record, and the
    experiment trackers switched on with ``--log`` (a tracker plugin acts only when named here)."""

    config: dict[str, Any]
    run_dir: Path
    record: dict[str, Any]
    loggers: tuple[str, ...] = ()


def _plugins_used(cfg: dict, registry: Any) -> dict[str, Any]:
    used = {}
    for kind, name in (("encoder", cfg["encoder"]["name"]), ("enhancer", cfg["enhancer"]["name"]),
                       ("dataset", cfg["eval"]["dataset"])):
        spec = registry.get(kind, name)
        used[f"{kind}:{name}"] = {"plugin": spec.plugin, "plugin_version": spec.plugin_version,
                                  "version": spec.version, "paper": spec.paper}
    return used


def _pin_determinism(cfg: dict, device: str) -> None:
    threads = int(cfg["train"].get("threads", 0) or 0)
    if threads > 0 and device == "cpu":
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(device == "cpu", warn_only=True)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False


def prepare(cfg: dict, device: str) -> tuple[Components, Any, dict, dict]:
    """Build everything a run needs (no files written): components, metrics, manifest."""
    from .data.manifest import build_manifest

    manager = get_manager()
    registry = manager.registry
    registry.get("encoder", cfg["encoder"]["name"])
    registry.get("enhancer", cfg["enhancer"]["name"])
    for stage in cfg["train"]["stages"]:
        for name in stage.get("losses", {}):
            if name != "metric":
                registry.get("loss", name)
    for name in cfg["eval"]["metrics"]:
        registry.get("metric", name)
    _pin_determinism(cfg, device)
    dataset = build_dataset(cfg, registry)
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    encoder, enhancer = build_models(cfg, registry, dataset)
    stages, notes = plan_stages(cfg, encoder, enhancer)
    losses = build_losses(stages, registry, dataset, encoder, cfg["train"]["refs"])
    encoder.to(device)
    enhancer.to(device)
    for loss in losses.values():
        loss.to(device)
    comps = Components(dataset=dataset, encoder=encoder, enhancer=enhancer, losses=losses, stages=stages,
                       notes=notes)
    metrics, unavailable = build_metrics(cfg["eval"]["metrics"], registry)
    manifest = build_manifest(dataset, refs=cfg["eval"]["refs"], draws=cfg["eval"]["draws"],
                              seed=cfg["eval"]["seed"], max_photos=cfg["eval"].get("max_photos"))
    return comps, metrics, unavailable, manifest


def check_loggers(names: Any) -> tuple[str, ...]:
    """The ``--log`` names, each a registered logger that can work here (else a UsageError)."""
    names = tuple(dict.fromkeys(str(n) for n in names or ()))
    registry = get_manager().registry
    for name in names:
        registry.get("logger", name).create()  # unknown name / package missing -> one line
    return names


def run_experiment(cfg: dict, runs_dir: str | Path, *, resume: bool = False, resume_from: str | None = None,
                   progress: bool = True, loggers: Any = ()) -> tuple[Path, dict]:
    """Train and evaluate ``cfg``; returns the run directory and the final record.

    Under ``torchrun`` every rank calls this (see :mod:`piebench.distributed`): rank 0 picks the
    run directory and writes every file; all ranks train on their shard of each global batch and
    evaluate their share of the manifest; ranks > 0 return the record without metrics.
    ``loggers`` names the experiment trackers to switch on (``--log``, see :func:`check_loggers`).
    """
    from .checkpoints import latest_checkpoint
    from .data.device_store import build_sampler
    from .distributed import setup as setup_distributed
    from .evaluate import evaluate, summarize
    from .train import Trainer

    runs_dir = Path(runs_dir)
    loggers = check_loggers(loggers)
    dist = setup_distributed(resolve_device(cfg["device"]))  # one process unless started by torchrun
    device = dist.device
    key = C.run_key(cfg)
    cfg["_run_key"] = key
    comps, metrics, unavailable, manifest = prepare(cfg, device)
    dist.prepare_models([comps.encoder, comps.enhancer, *comps.losses.values()], cfg["seed"])
    if dist.is_main:
        probe_writable(runs_dir, need_bytes=_disk_needed(comps))
    registry = get_manager().registry
    e_hash = C.eval_hash(cfg, comps.dataset.recipe_hash)
    t_hash = C.train_hash(cfg)

    with run_lock(runs_dir, key, wait=resume) if dist.is_main else contextlib.nullcontext():
        done = _finished_run(runs_dir, key) if resume and not resume_from and dist.is_main else None
        if dist.broadcast_object(done is not None):  # nothing to resume: it finished (maybe while we waited)
            return dist.broadcast_object(done)
        run_dir, state = _choose_run_dir(cfg, runs_dir, key, resume, resume_from) if dist.is_main else (None, None)
        fresh = dist.is_main and state is None and not (run_dir / "record.json").exists()
        if dist.is_main and not fresh:
            _remove_stale_temporaries(run_dir)
        run_dir, fresh, resumed = dist.broadcast_object((run_dir, fresh, state is not None))
        if resumed and state is None:  # ranks > 0 load the checkpoint rank 0 chose
            state = latest_checkpoint(run_dir / "checkpoints")[1]
        try:
            if fresh:
                record = base_record(cfg, key=key, eval_hash=e_hash, train_hash=t_hash,
                                     plugins=_plugins_used(cfg, registry), device=device)
            else:
                record = _load_record(run_dir)
            original = None if fresh else (run_dir / "record.json").read_bytes()
            record["status"] = "running"
            record["notes"] = comps.notes
            record["encoder"]["pretrained_from"] = getattr(comps.encoder, "pretrained_from", "")
            record["parameters"] = {
                "encoder": sum(p.numel() for p in comps.encoder.parameters()),
                "enhancer": sum(p.numel() for p in comps.enhancer.parameters()),
            }
            if dist.is_main:
                (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                atomic_write_json(run_dir / "config.json", {k: v for k, v in cfg.items() if not k.startswith("_")})
                atomic_write_json(run_dir / "manifest.json", manifest)
                atomic_write_json(run_dir / "record.json", record)
        except BaseException:
            if fresh and dist.is_main:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        try:  # refused before training (too few photos, a store too big): no run dir is left behind
            ctx = RunContext(config=cfg, run_dir=run_dir, record=record, loggers=loggers)
            hook = get_manager().hook
            pairs = "inputs" in comps.encoder.requires
            sampler = build_sampler(comps.dataset, cfg, device=device, pairs=pairs)  # store on the device if it fits
            record["speed"] = {"store": sampler.store.mode, "kernel": sampler.kernel, "world_size": dist.world_size,
                               "backend": dist.backend, **{k: cfg["train"][k] for k in ("amp", "channels_last",
                                                                                       "compile") if k in cfg["train"]}}
            trainer = Trainer(comps, dist.shard_sampler(sampler), cfg, run_dir / "checkpoints", device=device,
                              log_path=run_dir / "train_log.jsonl", hook=hook, run=ctx, progress=progress, dist=dist)
            resumed_from = 0
            if state is not None:
                trainer.load_checkpoint(state)
                resumed_from = trainer.step
            elif not fresh:
                found = latest_checkpoint(run_dir / "checkpoints")
                if found:
                    trainer.load_checkpoint(found[1])
                    resumed_from = trainer.step
            if resumed_from == 0 and dist.is_main:
                atomic_write_text(run_dir / "train_log.jsonl", "")
            record["resumed_from_step"] = resumed_from
            if resumed_from and dist.is_main:  # said even under --quiet: the user must know what was kept
                print(f"piebench: resuming {run_dir} from step {resumed_from} of {trainer.total}", file=sys.stderr)
            if dist.is_main:
                hook.on_run_start(run=ctx)
        except BaseException:
            if dist.is_main and fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
            elif dist.is_main and original is not None:  # a refused resume leaves the run as it was
                atomic_write_bytes(run_dir / "record.json", original)
            raise
        t0 = time.perf_counter()
        try:
            trainer.fit()
        except KeyboardInterrupt:
            if not trainer.in_step and trainer.last_saved != trainer.step:  # a step boundary: consistent
                trainer.save_checkpoint()
            kept = (f"checkpoint of step {trainer.last_saved} kept" if trainer.last_saved is not None
                    else "no checkpoint yet")
            _finish(record, run_dir, "interrupted", t0, trainer, hook, ctx,
                    reason=f"interrupted at step {trainer.step}; {kept}; resume with the same command and --resume")
            raise _interrupted(f"interrupted at step {trainer.step} of {trainer.total}; {kept} in {run_dir}; "
                               f"resume with the same command plus --resume") from None
        except RunFailed as err:
            _finish(record, run_dir, "failed", t0, trainer, hook, ctx, reason=str(err))
            raise
        except OSError as err:  # disk full, file system gone read-only, ...
            reason = (f"writing the run failed at step {trainer.step}: {err.strerror or err}; {trainer.checkpoint_note()}; "
                      f"free space and resume with the same command plus --resume")
            _finish(record, run_dir, "failed", t0, trainer, hook, ctx, reason=reason)
            raise RunFailed(reason) from None
        except Exception as err:
            _finish(record, run_dir, "failed", t0, trainer, hook, ctx, reason=f"{type(err).__name__}: {err}")
            raise
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        record["timings"]["train_s"] = round(record["timings"].get("train_s", 0) + train_s, 3)
        try:
            shard = dist.shard_manifest(manifest)  # every entry with one process
            full = cfg["eval"].get("test_resolution", "store") == "full"
            result = evaluate(comps.encoder, comps.enhancer, comps.dataset, shard, metrics=metrics, pairs=pairs,
                              device=device, progress=progress and dist.is_main, unavailable=unavailable,
                              full=full, full_resolution_path=full_resolution_of(
                                  registry.get("enhancer", cfg["enhancer"]["name"]), comps.enhancer),
                              ) if shard["entries"] else None
            result = dist.gather_eval(result, manifest)  # in manifest order, on rank 0
            if not dist.is_main:
                return run_dir, record
            result.per_image.to_csv(run_dir / "per_image.csv.tmp", index=False)
            os.replace(run_dir / "per_image.csv.tmp", run_dir / "per_image.csv")
            np.savez(run_dir / "control.npz", mse_out_tgt=result.mse_out_tgt, mse_tgt_tgt=result.mse_tgt_tgt,
                     group_photos=result.group_photos, embeddings=result.embeddings,
                     embedding_users=result.embedding_users, embedding_photos=result.embedding_photos,
                     vectors=result.vectors, vector_users=result.vector_users, vector_photos=result.vector_photos,
                     vector_draws=result.vector_draws if result.vector_draws is not None
                     else np.zeros(len(result.vectors), np.int64))
            summary = summarize(result, list(metrics), seed=cfg["seed"])
            _diagnostics(result, comps, run_dir, cfg, manifest, device, summary)
            record["metrics"] = summary
            record["metric_variants"] = {name: registry.get("metric", name).variant
                                         for name in cfg["eval"]["metrics"]}
            record["manifest_hash"] = manifest.get("hash")
            record["timings"]["eval_s"] = round(time.perf_counter() - t1, 3)
            hook.on_eval_end(run=ctx, metrics=summary)
        except KeyboardInterrupt:
            _finish(record, run_dir, "interrupted", t0, trainer, hook, ctx, count_time=False,
                    reason=f"interrupted during evaluation; training is complete (checkpoint of step {trainer.step}); "
                           f"resume with the same command and --resume to evaluate without retraining")
            raise _interrupted(f"interrupted during evaluation; training is complete and checkpointed in {run_dir}; "
                               f"resume with the same command plus --resume to evaluate without retraining") from None
        except Exception as err:
            _finish(record, run_dir, "failed", t0, trainer, hook, ctx, count_time=False,
                    reason=f"evaluation failed: {type(err).__name__}: {err}")
            raise
        _finish(record, run_dir, "finished", t0, trainer, hook, ctx, count_time=False)
    return run_dir, record


def _interrupted(message: str) -> RunFailed:
    """The error of a run stopped by Ctrl-C: exit code 130, like a shell."""
    err = RunFailed(message)
    err.exit_code = 130
    return err


def _diagnostics(result: Any, comps: Components, run_dir: Path, cfg: dict, manifest: dict, device: str,
                 summary: dict) -> None:
    """Add steering, separability, probes and alarms to ``summary`` (figures go to run_dir)."""
    from .diagnostics import alarms, run_diagnostics, user_recall_entries

    diag = run_diagnostics(result, comps, run_dir, cfg, manifest=manifest, device=device)
    for group, values in diag.pop("control").items():
        summary.setdefault(group, {}).update(values)
    for group, value in user_recall_entries(diag.get("preference_separability", {})).items():
        summary.setdefault(group, {})["user_recall"] = value  # the leaderboard's "are users told apart?"
    summary.update(diag)
    summary["alarms"] = alarms(summary, diag.get("probes", {}))


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written temporary files a killed process left (the caller holds the run lock)."""
    for path in [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/.*.tmp"), run_dir / "per_image.csv.tmp"]:
        with contextlib.suppress(OSError):
            path.unlink()


def _load_record(run_dir: Path) -> dict:
    from .runs import load_record

    return load_record(run_dir / "record.json")


def _finish(record: dict, run_dir: Path, status: str, t0: float, trainer: Any, hook: Any, ctx: RunContext,
            reason: str | None = None, count_time: bool = True) -> None:
    from .distributed import current

    if not current().is_main:  # only rank 0 writes
        return
    record["status"] = status
    if reason:
        record["reason"] = reason
    if count_time:
        record["timings"]["train_s"] = round(record["timings"].get("train_s", 0) + time.perf_counter() - t0, 3)
    record["finished" if status == "finished" else "stopped"] = now()
    record["compute"] = {"steps": trainer.step, "total_steps": trainer.total, "images_seen": trainer.images_seen,
                         "wall_s": round(sum(record["timings"].values()), 3)}
    try:
        atomic_write_json(run_dir / "record.json", record)
    except OSError as err:  # e.g. the disk filled up: report the original error, not this one
        print(f"piebench: warning: could not update {run_dir / 'record.json'}: {err.strerror or err}",
              file=sys.stderr)
    hook.on_run_end(run=ctx, record=record)


def _disk_needed(comps: Components) -> int:
    """Bytes a run needs in its runs directory: three checkpoints (two kept plus the one being
    written) of weights and Adam's two moments, plus 4 MiB of logs, records and figures."""
    modules = [comps.encoder, comps.enhancer, *comps.losses.values()]
    weights = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    return 3 * 3 * weights + (4 << 20)


def _finished_run(runs_dir: Path, key: str) -> tuple[Path, dict] | None:
    """The newest finished run of ``key``, looked up under the lock (so one that another process
    finished while this one waited for the lock counts), announced on stderr."""
    for run_dir, rec in reversed(find_runs(runs_dir, key)):
        if rec.get("status") == "finished":
            print(f"piebench: {run_dir} has already finished this configuration; reusing it (run without "
                  f"--resume for a new run)", file=sys.stderr)
            return run_dir, rec
    return None


def _resume_state(run_dir: Path) -> dict | None:
    """The newest loadable checkpoint of ``run_dir`` (None: it has none yet); refuses to start
    over silently when it has checkpoints and none of them loads."""
    from .checkpoints import latest_checkpoint

    found = latest_checkpoint(run_dir / "checkpoints")
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    if found is None and files:
        raise RunFailed(f"none of the {len(files)} checkpoints of {run_dir} can be loaded (newest {files[-1].name} "
                        f"cannot be loaded, see the warnings); move them away to train this run again from step 0, "
                        f"or start a new run without --resume")
    return found[1] if found else None


def _choose_run_dir(cfg: dict, runs_dir: Path, key: str, resume: bool,
                    resume_from: str | None) -> tuple[Path, dict | None]:
    """A new run directory, or the one to resume with its latest checkpoint."""
    if resume_from:
        run_dir = Path(resume_from)
        if not (run_dir / "record.json").exists():
            raise UsageError(f"--resume-from {resume_from}: not a run directory (no record.json)")
        rec = _load_record(run_dir)
        if rec.get("run_key") != key:
            raise UsageError(f"--resume-from {resume_from}: that run has a different configuration "
                             f"(run key {rec.get('run_key')} != {key}); use the same flags it was started with")
        return run_dir, _resume_state(run_dir)
    if resume:
        for run_dir, rec in reversed(find_runs(runs_dir, key)):
            if rec.get("status") != "finished":
                return run_dir, _resume_state(run_dir)
    group = run_group_dir(runs_dir, cfg)
    run_dir = group / new_run_id(cfg, key)
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, None
