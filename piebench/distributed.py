"""Data-parallel training and sharded evaluation through ``torchrun``, one code path for 1..N processes.

``torchrun --nproc-per-node N -m piebench run ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` reads them and joins the process group
(``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU). Without them it
returns a one-process :class:`DistContext` whose collectives are no-ops, so a plain
``piebench run`` goes through exactly the same calls.

How a step stays equal to a one-process step with the same global batch:

* every rank draws the *same* global batch indices (same sampler seed) and builds only its
  contiguous shard of the samples (:class:`ShardSampler`);
* parameters and buffers start as rank 0's (broadcast); BatchNorm layers normalise with the
  statistics of the global batch (:class:`GlobalBatchNorm`, autograd-aware all-reduce of sums,
  any device -- ``nn.SyncBatchNorm`` refuses CPU tensors);
* gradients are averaged over ranks in one flat all-reduce before clipping (every stage
  freezes different modules, losses own parameters and ``encoder.embed`` bypasses
  ``forward``, which ``DistributedDataParallel``'s hooks do not cover);
* embedding losses see the embeddings of the global batch (all-gather with gradient);
* image losses are batch means, so the mean of the shard means is the global mean.

Only rank 0 writes records, logs and checkpoints. Evaluation gives each rank every
``world_size``-th manifest entry (:meth:`DistContext.shard_manifest`); the results travel back
with :meth:`DistContext.all_gather_object` and are merged in manifest order by
:func:`piebench.evaluate.gather_results`.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UsageError


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


@dataclass
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None
    seed: int = 0

    @property
    def active(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    # -- generic collectives ---------------------------------------------------------------
    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    # -- models ----------------------------------------------------------------------------
    def prepare_models(self, modules: list[nn.Module], seed: int) -> None:
        """Global-batch BatchNorm, rank 0's parameters and buffers everywhere, a torch seed per rank."""
        self.seed = int(seed)
        if not self.active:
            return
        for module in modules:
            convert_batchnorm(module)
            for tensor in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)
        torch.manual_seed(self.seed + self.rank)
        np.random.seed((self.seed + self.rank) % 2**32)

    def reseed_after_checkpoint(self, step: int) -> None:
        """Ranks > 0 restart their torch RNG from (seed, rank, step) at every checkpoint, so a run
        resumed from a checkpoint continues their streams exactly (rank 0's is in the checkpoint)."""
        if self.active and self.rank > 0:
            torch.manual_seed((self.seed * 1_000_003 + self.rank * 7919 + int(step)) % 2**63)

    # -- training --------------------------------------------------------------------------
    def shard_sampler(self, sampler: Any) -> Any:
        """``sampler`` itself with one process, else a :class:`ShardSampler` of it."""
        return ShardSampler(sampler, self.rank, self.world_size) if self.active else sampler

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over ranks (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat.div_(self.world_size)
        start = 0
        for g in grads:
            g.copy_(flat[start : start + g.numel()].view_as(g))
            start += g.numel()

    def mean_values(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached copies of ``terms`` averaged over ranks (for the log and the finiteness check,
        so every rank stops together)."""
        if not self.active or not terms:
            return {k: v.detach() for k, v in terms.items()}
        stacked = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        torch.distributed.all_reduce(stacked)
        stacked.div_(self.world_size)
        return dict(zip(terms, stacked.unbind(0), strict=True))

    def gather_embeddings(self, emb: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch's embeddings (with gradient back to this rank's rows) and user ids.

        Every rank computes the same embedding loss; the all-gather's backward sums the ranks'
        gradients, which the gradient average divides again, so each rank's parameters get
        exactly the one-process gradient of its rows.
        """
        if not self.active:
            return emb, users
        # lazy: torch builds without distributed support lack this module
        from torch.distributed.nn.functional import all_gather

        users_all = [torch.empty_like(users) for _ in range(self.world_size)]
        torch.distributed.all_gather(users_all, users)
        return torch.cat(all_gather(emb), 0), torch.cat(users_all, 0)

    # -- evaluation ------------------------------------------------------------------------
    def shard_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """This rank's entries of ``manifest`` (every ``world_size``-th, starting at ``rank``)."""
        if not self.active:
            return manifest
        return {**manifest, "entries": manifest["entries"][self.rank :: self.world_size]}


class ShardSampler:
    """Rank ``rank``'s contiguous shard of every global batch ``sampler`` draws.

    All ranks draw the same indices (same seed, same generator state), so the shards of one
    step partition one global batch; ``state_dict`` is the wrapped sampler's.
    """

    def __init__(self, sampler: Any, rank: int, world_size: int) -> None:
        if sampler.batch_size % world_size:
            raise UsageError(f"the global batch of {sampler.batch_size} samples (batch_users x per_user) does not "
                             f"split over {world_size} processes; make it a multiple of {world_size}")
        self.inner, self.rank, self.world_size = sampler, rank, world_size
        self.share = sampler.batch_size // world_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(self) -> Any:
        """This rank's part of the next global batch."""
        idx = self.inner.indices()
        self.inner.step += 1
        lo = self.rank * self.share
        shard = {k: v[lo : lo + self.share] for k, v in idx.items()}
        self.inner.last_indices = {k: v.tolist() for k, v in shard.items()}
        return self.inner.batch_from_indices(shard)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, in training under a process group, normalises with the mean and variance
    of the global batch (sums all-reduced with gradient) on any device; otherwise BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        # lazy: torch builds without distributed support lack this module
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() // c, dtype=torch.float32, device=x.device)
        first = all_reduce(torch.cat([xf.sum((0, 2, 3)), count]))  # two passes, like BatchNorm's own
        n = first[-1]
        centred = xf - (first[:c] / n).view(1, c, 1, 1)
        var = all_reduce(centred.pow(2).sum((0, 2, 3))) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                self.running_mean.mul_(1 - momentum).add_(first[:c].detach() / n * momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * (n / (n - 1).clamp_min(1)) * momentum)
        y = centred * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> int:
    """Make every plain ``nn.BatchNorm2d`` in ``module`` a :class:`GlobalBatchNorm` in place (same
    parameters, buffers and state_dict keys); returns how many were converted."""
    n = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm
            n += 1
    return n


_CONTEXT = DistContext()


def setup(device: str = "cpu") -> DistContext:
    """The process's :class:`DistContext`, joining the process group on first use under torchrun.

    With ``WORLD_SIZE`` > 1: ``nccl`` and ``cuda:LOCAL_RANK`` when ``device`` is CUDA, else
    ``gloo`` on the CPU. Otherwise a one-process context on ``device``.
    """
    global _CONTEXT
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        _CONTEXT = DistContext(device=device)
        return _CONTEXT
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = device.startswith("cuda")
    if cuda:
        if torch.cuda.device_count() <= local:
            raise UsageError(f"rank {rank} wants cuda:{local} but only {torch.cuda.device_count()} GPU(s) are "
                             f"visible; start at most that many processes per node")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    elif device != "cpu":
        raise UsageError(f"--device {device} cannot run under torchrun; use cpu (gloo) or cuda (nccl)")
    backend = "nccl" if cuda else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        atexit.register(_shutdown)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)
    return _CONTEXT


def current() -> DistContext:
    """The context :func:`setup` last returned (one process before any call)."""
    return _CONTEXT


def _shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
