"""Mixed precision, memory layout and compilation for training: ``--amp``, ``--channels-last``, ``--compile``.

:class:`Precision` is what the trainer asks: the autocast context for the forward passes
(``bf16`` or ``fp16``; losses and metrics are computed in float32 outside it), a
``torch.amp.GradScaler`` for ``fp16`` (scaled backward, unscale before clipping, a step that is
skipped when the scaled gradients overflow), channels-last conversion of the models and the
4-D image tensors of a batch, and in-place ``nn.Module.compile`` (state_dict keys unchanged).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .errors import UsageError
from .interfaces import Batch

AMP_CHOICES = ("bf16", "fp16")


def device_type(device: str | torch.device) -> str:
    """``cuda`` / ``cpu`` / ... for autocast and GradScaler."""
    return torch.device(device).type


class Precision:
    """Autocast, grad scaling, layout and compilation settings of one training run."""

    def __init__(self, device: str = "cpu", amp: str | None = None, channels_last: bool = False,
                 compile: bool = False) -> None:
        if amp not in (None, *AMP_CHOICES):
            raise UsageError(f"--amp {amp}: expected one of {', '.join(AMP_CHOICES)} (or leave it out for float32)")
        self.device = str(device)
        self.amp = amp
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
        self.scaler = torch.amp.GradScaler(device_type(device)) if amp == "fp16" else None

    @classmethod
    def from_config(cls, cfg: dict, device: str) -> Precision:
        """From ``train.amp`` / ``train.channels_last`` / ``train.compile`` of a resolved config."""
        tr = cfg.get("train", {})
        return cls(device, tr.get("amp"), bool(tr.get("channels_last", False)), bool(tr.get("compile", False)))

    def autocast(self) -> Any:
        """The forward-pass context: ``torch.autocast`` under ``--amp``, else a no-op."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type(self.device), dtype=self.dtype)

    def prepare(self, modules: list[nn.Module]) -> None:
        """Channels-last parameters and in-place compilation of ``modules``."""
        for module in modules:
            if self.channels_last:
                module.to(memory_format=torch.channels_last)
            if self.compile:
                module.compile()

    def batch(self, batch: Batch) -> Batch:
        """``batch`` with its 4-D images (input, target, query) in the channels-last format when set."""
        if not self.channels_last:
            return batch
        cl = torch.channels_last
        x = batch.input.contiguous(memory_format=cl)
        refs = batch.refs
        query = x if refs.query is batch.input else (None if refs.query is None
                                                     else refs.query.contiguous(memory_format=cl))
        refs = type(refs)(targets=refs.targets, inputs=refs.inputs, mask=refs.mask, query=query)
        return Batch(input=x, target=batch.target.contiguous(memory_format=cl), refs=refs, user=batch.user,
                     photo=batch.photo, extras=batch.extras)

    # -- backward and step -----------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    @property
    def tolerates_overflow(self) -> bool:
        """True under fp16: a non-finite gradient skips the step and lowers the scale."""
        return self.scaler is not None

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimiser (through the scaler under fp16); False when the scaler skipped it."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
