"""The training loop: stages, per-module parameter groups, atomic checkpoints, exact resume.

A checkpoint holds everything the future depends on -- models, losses (centres, proxies),
optimiser, scheduler, sampler RNG, torch RNG and the per-step loss log -- so a resumed run
on CPU continues with exactly the batches, losses and weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import jsonio
from .build import Components
from .checkpoints import write_checkpoint
from .contract import check_loss_value
from .distributed import DistContext
from .errors import RunFailed, UsageError
from .plugins import get_registry
from .precision import Precision
from .runs import atomic_write_text


def _lr_lambda(kind: str, steps: int, warmup: int):
    def fn(i: int) -> float:
        if warmup and i < warmup:
            return (i + 1) / warmup
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(1, steps)))
        return 1.0

    return fn


class Trainer:
    """Runs a list of stages over a sampler, checkpointing into ``ckpt_dir``.

    ``run_key`` (:func:`piebench.config.run_key` of ``cfg``) is stored in every checkpoint, and a
    checkpoint with another key is refused by :meth:`load_checkpoint` (None: not checked).
    ``dist`` is the process's place in a ``torchrun`` job (None: one process).
    """

    def __init__(self, comps: Components, sampler: Any, cfg: dict, ckpt_dir: Path, *, device: str,
                 log_path: Path, hook: Any = None, run: Any = None, progress: bool = True,
                 dist: DistContext | None = None, run_key: str | None = None) -> None:
        self.c = comps
        self.sampler = sampler
        self.cfg = cfg
        self.ckpt_dir = ckpt_dir
        self.device = device
        self.log_path = log_path
        self.hook = hook
        self.run = run
        self.run_key = run_key
        self._loss_specs = {name: get_registry().get("loss", name) for name in comps.losses}  # for messages
        self.progress = progress
        self.every = int(cfg["train"]["checkpoint_every"])
        self.grad_clip = cfg["train"].get("grad_clip")
        self.log: list[dict[str, Any]] = []
        self.step = 0  # global steps done
        self.total = sum(s["steps"] for s in comps.stages)
        self.images_seen = 0
        self._opt: torch.optim.Optimizer | None = None
        self._sched: Any = None
        self._opt_stage = -1
        self.in_step = False  # True while a step is half done (its state must not be checkpointed)
        self.last_saved: int | None = None  # step of the newest checkpoint written or loaded
        self.dist = dist if dist is not None else DistContext(device=device)  # one process unless torchrun
        self.precision = Precision.from_config(cfg, device)  # --amp, --channels-last, --compile
        self.precision.prepare([comps.encoder, comps.enhancer])

    # -- stage bookkeeping -----------------------------------------------------------------
    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage index, steps done within it) for global step count ``step``."""
        start = 0
        for i, stage in enumerate(self.c.stages):
            if step < start + stage["steps"]:
                return i, step - start
            start += stage["steps"]
        return len(self.c.stages), 0

    def _modules(self, stage: dict) -> dict[str, nn.Module]:
        return {name: getattr(self.c, name) for name in ("encoder", "enhancer") if name in stage["train"]}

    def _make_optimizer(self, idx: int) -> None:
        stage = self.c.stages[idx]
        groups = []
        for name, module in self._modules(stage).items():
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": float(stage["lr"].get(name, 1e-4)), "name": name})
        enc_lr = float(stage["lr"].get("encoder", stage["lr"].get("enhancer", 1e-4)))
        for name in stage["losses"]:
            params = [p for p in self.c.losses[name].parameters() if p.requires_grad]
            if params:
                lr = self.c.losses[name].lr or enc_lr
                groups.append({"params": params, "lr": float(lr), "name": f"loss.{name}"})
        self._opt = torch.optim.Adam(groups)
        self._sched = torch.optim.lr_scheduler.LambdaLR(
            self._opt, _lr_lambda(stage.get("schedule", "constant"), stage["steps"], int(stage.get("warmup", 0))))
        self._opt_stage = idx

    def _set_modes(self, stage: dict) -> None:
        for name in ("encoder", "enhancer"):
            module = getattr(self.c, name)
            module.train(name in stage["train"])
        for loss in self.c.losses.values():
            loss.train()

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "stage": self._opt_stage,
            "encoder": self.c.encoder.state_dict(),
            "enhancer": self.c.enhancer.state_dict(),
            "losses": {k: v.state_dict() for k, v in self.c.losses.items()},
            "optimizer": self._opt.state_dict() if self._opt else None,
            "scheduler": self._sched.state_dict() if self._sched else None,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.startswith("cuda") else None,
            "scaler": self.precision.state_dict(),
            "log": self.log,
            "images_seen": self.images_seen,
            "run_key": self.run_key,
        }

    def save_checkpoint(self) -> None:
        """Checkpoint the current step (written by rank 0 only; the newest two are kept)."""
        if self.dist.is_main:
            write_checkpoint(self.ckpt_dir, self.step, self.state_dict())
        self.last_saved = self.step
        self.dist.reseed_after_checkpoint(self.step)

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Restore everything from a :meth:`state_dict`; refuses one of another configuration or model."""
        src = f"checkpoint {state.get('_path', '')}".strip()
        mine = self.run_key
        if mine and state.get("run_key") and state["run_key"] != mine:
            raise UsageError(f"{src} was written by another configuration (run key {state['run_key']} != {mine}); "
                             f"resume it with the flags it was started with")
        _load_module(self.c.encoder, state["encoder"], f"{src} does not fit this encoder")
        _load_module(self.c.enhancer, state["enhancer"], f"{src} does not fit this enhancer")
        for k, sd in state["losses"].items():
            if k not in self.c.losses:
                raise UsageError(f"{src} holds loss '{k}', which this configuration does not train")
            _load_module(self.c.losses[k], sd, f"{src} does not fit loss '{k}'")
        self.step = int(state["step"])
        self.last_saved = self.step
        self.log = list(state["log"])
        self.images_seen = int(state.get("images_seen", 0))
        self.sampler.load_state_dict(state["sampler"])
        idx, _ = self.stage_at(self.step)
        if state.get("optimizer") is not None and state["stage"] == idx:
            self._make_optimizer(idx)
            self._opt.load_state_dict(state["optimizer"])
            self._sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.precision.load_state_dict(state.get("scaler"))
        self.dist.reseed_after_checkpoint(self.step)
        self._write_log()

    def _write_log(self) -> None:
        if not self.dist.is_main:
            return
        atomic_write_text(self.log_path, "".join(_json_line(e) for e in self.log))

    # -- the loop --------------------------------------------------------------------------
    def checkpoint_note(self) -> str:
        """Where the last good checkpoint is, for error messages."""
        if self.last_saved is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.last_saved}) is kept in {self.ckpt_dir}"

    def _blame_gradients(self, stage: dict, batch: Any) -> list[str]:
        """The loss terms whose gradient alone is non-finite, recomputed on the failing batch.

        Only called when the run is about to stop, so the extra passes cost nothing in a
        healthy run; falls back to every term if the recomputation itself fails.
        """
        bad = []
        try:
            for name in stage["losses"]:
                self._opt.zero_grad(set_to_none=True)
                self._loss_terms(stage, batch)[name].backward()
                grads = [p.grad for g in self._opt.param_groups for p in g["params"] if p.grad is not None]
                if any(not torch.isfinite(gr).all() for gr in grads):
                    bad.append(name)
        except Exception:  # noqa: BLE001 - a diagnosis must not hide the real error
            return list(stage["losses"])
        return bad or list(stage["losses"])

    def _loss_terms(self, stage: dict, batch: Any) -> dict[str, torch.Tensor]:
        """The stage's weighted loss terms on ``batch`` (forward passes included)."""
        terms: dict[str, torch.Tensor] = {}
        image_losses = {n: w for n, w in stage["losses"].items() if self.c.losses[n].kind == "image"}
        emb_losses = {n: w for n, w in stage["losses"].items() if self.c.losses[n].kind == "embedding"}
        if image_losses:
            with torch.set_grad_enabled(True), self.precision.autocast():
                pref = self.c.encoder(batch.refs)
                out = self.c.enhancer(batch.input, pref)
            out = out.float()  # losses in float32, outside autocast
            if out.shape != batch.target.shape:
                enh = self.cfg["enhancer"]["name"]
                raise RunFailed(f"enhancer '{enh}' (plugin '{_plugin_of('enhancer', enh)}') returned shape "
                                f"{tuple(out.shape)}, expected {tuple(batch.target.shape)} (the input's)")
            for name, w in image_losses.items():
                terms[name] = w * check_loss_value(self._loss_specs[name], self.c.losses[name](out, batch.target, batch),
                                                   "a training batch")
        if emb_losses:
            with self.precision.autocast():
                emb = self.c.encoder.embed(batch.target)
            emb, users = self.dist.gather_embeddings(emb.float(), batch.user)  # the global batch's
            for name, w in emb_losses.items():
                terms[name] = w * check_loss_value(self._loss_specs[name], self.c.losses[name](emb, users),
                                                   "a training batch's embeddings")
        return terms

    def train_step(self, stage: dict) -> dict[str, float]:
        batch = self.precision.batch(self.sampler.sample().to(self.device))
        terms = self._loss_terms(stage, batch)
        values = self.dist.mean_values(terms)  # over ranks: every rank sees the same numbers
        for name, value in values.items():
            if not torch.isfinite(value).all():
                raise RunFailed(f"non-finite loss at step {self.step + 1}: term '{name}' = {value.item()}; "
                                f"{self.checkpoint_note()}")
        total = sum(terms.values())
        self._opt.zero_grad(set_to_none=True)
        self.precision.backward(total)
        params = [p for g in self._opt.param_groups for p in g["params"] if p.grad is not None]
        self.dist.reduce_gradients(params)
        self.precision.unscale(self._opt)
        norm = torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip) if self.grad_clip else float("inf"))
        if not torch.isfinite(norm) and not self.precision.tolerates_overflow:
            culprits = ", ".join(f"'{n}'" for n in self._blame_gradients(stage, batch))
            raise RunFailed(f"non-finite gradients at step {self.step + 1} from loss term {culprits} "
                            f"(terms: {', '.join(terms)}); {self.checkpoint_note()}")
        stepped = self.precision.step(self._opt)
        lrs = {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(self._opt.param_groups)}
        self._sched.step()
        self.images_seen += batch.input.shape[0] * self.dist.world_size
        entry = {"step": self.step + 1, "stage": stage["name"], "loss": float(sum(values.values()))}
        entry.update({k: float(v) for k, v in values.items()})
        entry["lr"] = lrs  # the learning rate each parameter group stepped with
        if not stepped:
            entry["skipped"] = True  # fp16 overflow: the scaler skipped the step and lowered the scale
        return entry

    def fit(self) -> None:
        """Train from ``self.step`` to the end of the last stage.

        The first Ctrl-C (SIGINT) or SIGTERM stops at the end of the current step, after a
        checkpoint of it, by raising KeyboardInterrupt; a second one stops at once (then the
        previous checkpoint is the resume point, and :attr:`in_step` says so).
        """
        main = self.dist.is_main
        bar = tqdm(total=self.total, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and main))
        log_fh = open(self.log_path, "a") if main else None
        stop = _DeferredStop(enabled=self.dist.world_size == 1)  # ranks must agree on when to stop
        try:
            stop.install()
            while self.step < self.total:
                idx, _ = self.stage_at(self.step)
                stage = self.c.stages[idx]
                if self._opt_stage != idx:
                    self._make_optimizer(idx)
                self._set_modes(stage)
                start = time.perf_counter()
                self.in_step = True
                entry = self.train_step(stage)
                entry["time_s"] = round(time.perf_counter() - start, 4)
                self.step += 1
                self.log.append(entry)
                self.in_step = False
                if log_fh is not None:
                    log_fh.write(_json_line(entry))
                    log_fh.flush()
                if self.hook is not None and main:
                    self.hook.on_step_end(run=self.run, stage=stage["name"], step=self.step,
                                          losses={k: v for k, v in entry.items() if k not in ("step", "stage", "lr")},
                                          lrs=dict(entry["lr"]))
                end_of_stage = self.stage_at(self.step)[0] != idx
                if self.step % self.every == 0 or end_of_stage or self.step == self.total or stop.requested:
                    self.save_checkpoint()
                bar.set_postfix(stage=stage["name"], loss=f"{entry['loss']:.4f}")
                bar.update(1)
                if stop.requested:
                    raise KeyboardInterrupt
            if stop.requested:  # arrived after the last step (whose checkpoint is written)
                raise KeyboardInterrupt
        finally:
            stop.restore()
            if log_fh is not None:
                log_fh.close()
            bar.close()


def _plugin_of(kind: str, name: str) -> str:
    """The plugin that registered ``kind`` ``name`` (for error messages)."""
    try:
        return get_registry().get(kind, name).plugin or "?"
    except Exception:  # noqa: BLE001 - composing an error message must not raise another
        return "?"


class _DeferredStop:
    """Turns the first SIGINT / SIGTERM into a request to stop at the next step boundary.

    A KeyboardInterrupt raised mid-step would leave the sampler, weights and optimiser out of
    step with the step counter, so a checkpoint of that state would not resume exactly.
    A signal the process inherited as ignored (``nohup``, a background job of a script) stays
    ignored, so such a run behaves the same in training and in evaluation.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print("piebench: stopping after this step and saving a checkpoint (again to stop now)", file=sys.stderr)

    def install(self) -> None:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _json_line(entry: dict) -> str:
    return jsonio.dumps(entry) + "\n"


def _load_module(module: nn.Module, state: dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state)``, or one UsageError line saying how they differ."""
    try:
        res = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        detail = " ".join(str(err).split())
        raise UsageError(f"{what}: {detail[:300]}; it was written by another model or version") from None
    if res.missing_keys or res.unexpected_keys:
        parts = [f"{len(keys)} {kind} key(s), e.g. '{keys[0]}'" for kind, keys in
                 (("missing", res.missing_keys), ("unexpected", res.unexpected_keys)) if keys]
        raise UsageError(f"{what}: {'; '.join(parts)}; it was written by another model or version")
