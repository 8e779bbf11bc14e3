"""The data types and base classes every plugin speaks.

Shapes are batch-first. Images are float tensors in [0, 1], ``[B, 3, H, W]``.

* :class:`RefSet` -- what an encoder sees: a user's N reference images per sample.
* :class:`Preference` -- what an encoder produces and an enhancer consumes.
* :class:`Encoder`, :class:`Enhancer`, :class:`Loss` -- ``nn.Module`` base classes with the
  declarations (``requires`` / ``provides`` / ``consumes`` / ``kind``) the core checks before
  training.
* :class:`BuildContext` -- what a builder is told about the run (users, references, the
  encoder an enhancer is paired with).
* :class:`Batch` -- one training or evaluation batch handed to image losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

#: Fields an encoder may provide and an enhancer may consume.
PREFERENCE_FIELDS = ("vector", "maps", "source")


def _take(value: Any, idx: Tensor) -> Any:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.index_select(0, idx.to(value.device))
    if isinstance(value, tuple | list):
        return type(value)(_take(v, idx) for v in value)
    if isinstance(value, dict):
        return {k: _take(v, idx) for k, v in value.items()}
    return value


def _to(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


@dataclass
class RefSet:
    """A user's reference photos for each sample of a batch.

    targets: retouched references ``[B, N, 3, H, W]``.
    inputs: the same photos before retouching ``[B, N, 3, H, W]`` (reference *pairs*), present
        when the encoder ``requires`` ``"inputs"`` (Masked Style Modeling needs them).
    mask: ``[B, N]`` bool, True where a reference is real (variable N is padded); None = all real.
    query: the image being enhanced ``[B, 3, H, W]`` (content-dependent encoders use it).
    """

    targets: Tensor
    inputs: Tensor | None = None
    mask: Tensor | None = None
    query: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.targets.shape[0]

    @property
    def num_refs(self) -> int:
        return self.targets.shape[1]

    def valid_mask(self) -> Tensor:
        """``[B, N]`` bool mask, all True when no padding is present."""
        if self.mask is not None:
            return self.mask.bool()
        b, n = self.targets.shape[:2]
        return torch.ones(b, n, dtype=torch.bool, device=self.targets.device)

    def take(self, idx: Tensor) -> RefSet:
        """Rows ``idx`` of every field together."""
        return RefSet(**{f.name: _take(getattr(self, f.name), idx) for f in fields(self)})

    def to(self, device: torch.device | str) -> RefSet:
        return RefSet(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


@dataclass
class Preference:
    """A batch of preferences: the encoder's summary of each sample's user.

    vector: ``[B, D]`` the preference vector.
    maps: optional tuple of reference feature maps, each ``[B, N, C_i, h_i, w_i]`` (one per
        scale), for attention/modulation enhancers.
    mask: ``[B, N]`` bool validity of the references behind ``maps`` (None = all valid).
    source: optional ``[B, D_s]`` code of the *input's own* style (StarEnhancer's dual AdaIN).
    extras: any other batch-first tensors an encoder wants to pass on.

    :meth:`take` permutes every field together, so diagnostics swap whole preferences
    between samples, never just the vector.
    """

    vector: Tensor
    maps: tuple[Tensor, ...] | None = None
    mask: Tensor | None = None
    source: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.vector.shape[0]

    def provided(self) -> frozenset[str]:
        """Names of the optional fields that are present."""
        out = {"vector"}
        if self.maps is not None:
            out.add("maps")
        if self.source is not None:
            out.add("source")
        return frozenset(out)

    def take(self, idx: Tensor | list[int]) -> Preference:
        """Rows ``idx`` of every field (vector, maps, mask, source, extras) together."""
        if not isinstance(idx, Tensor):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return Preference(**{f.name: _take(getattr(self, f.name), idx) for f in fields(self)})

    def to(self, device: torch.device | str) -> Preference:
        return Preference(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def detach(self) -> Preference:
        def det(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.detach()
            if isinstance(v, tuple | list):
                return type(v)(det(x) for x in v)
            if isinstance(v, dict):
                return {k: det(x) for k, x in v.items()}
            return v

        return Preference(**{f.name: det(getattr(self, f.name)) for f in fields(self)})

    def replace(self, **changes: Any) -> Preference:
        return replace(self, **changes)

    @staticmethod
    def cat(prefs: list[Preference]) -> Preference:
        """Concatenate preferences along the batch dimension."""

        def cat(vals: list[Any]) -> Any:
            if vals[0] is None:
                return None
            if isinstance(vals[0], Tensor):
                return torch.cat(vals, 0)
            if isinstance(vals[0], tuple | list):
                return type(vals[0])(cat([v[i] for v in vals]) for i in range(len(vals[0])))
            if isinstance(vals[0], dict):
                return {k: cat([v[k] for v in vals]) for k in vals[0]}
            return vals[0]

        return Preference(**{f.name: cat([getattr(p, f.name) for p in prefs]) for f in fields(Preference)})


@dataclass
class Batch:
    """One batch as the sampler yields it.

    input / target: ``[B, 3, H, W]``; refs: the user's references; user: ``[B]`` long user ids;
    photo: ``[B]`` long photo ids (same photo = same content); extras: dataset-specific tensors
    (pie-synth adds ``user_params`` ``[B, A]``, the users' true retouch parameters).
    """

    input: Tensor
    target: Tensor
    refs: RefSet
    user: Tensor
    photo: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input=self.input.to(device),
            target=self.target.to(device),
            refs=self.refs.to(device),
            user=self.user.to(device),
            photo=self.photo.to(device),
            extras=_to(self.extras, device),
        )


@dataclass
class BuildContext:
    """What the core tells a builder about the run.

    num_users: number of *training* (seen) users (proxy classifiers, oracle-id tables).
    num_refs: references per preference N in this run (fixed-N models such as ``sa-seed``).
    image_size: training resolution (square crops).
    encoder: the already-built encoder, for enhancers (``dim``, ``map_channels``) and for losses
        that need it (``embedding-l1``). None when building an encoder.
    pretrained: load torchvision ImageNet weights where the paper does (``--pretrained``).
    dataset: the dataset object (oracle encoders read users' true parameters); may be None.
    """

    num_users: int = 1
    num_refs: int = 1
    image_size: int = 64
    encoder: Encoder | None = None
    pretrained: bool = False
    dataset: Any = None


class Encoder(nn.Module):
    """Turns a user's reference photos into a :class:`Preference`.

    Subclasses set:
      requires: ``{"targets"}`` or ``{"targets", "inputs"}`` (reference pairs).
      provides: subset of ``{"vector", "maps", "source"}``.
      dim: length D of ``Preference.vector`` and of :meth:`embed` rows.
      map_channels: channels C_i of each entry of ``Preference.maps`` (empty if no maps).
      metric_loss: name of the embedding loss this encoder is trained with by default
        (``"angular"`` for the angular encoder), or None (training-free / trained end to end).
      trainable: False for training-free encoders (gram, histogram).
      pretrained_from: a note on where the weights came from (recorded in the run record).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"targets"})
    provides: ClassVar[frozenset[str]] = frozenset({"vector"})
    dim: int = 0
    map_channels: tuple[int, ...] = ()
    metric_loss: str | None = None
    trainable: bool = True
    pretrained_from: str = "random initialisation"

    def embed(self, images: Tensor) -> Tensor:
        """Per-image embeddings ``[M, D]`` of ``images [M, 3, H, W]`` (metric losses, separability)."""
        raise NotImplementedError

    def forward(self, refs: RefSet) -> Preference:  # pragma: no cover - documented contract
        """The preference of each sample's user from its references."""
        raise NotImplementedError

    @staticmethod
    def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
        """Mean over N of ``values [B, N, ...]`` counting only ``mask [B, N]`` True entries."""
        m = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - 2)))
        return (values * m).sum(1) / m.sum(1).clamp_min(1.0)


class Enhancer(nn.Module):
    """Enhances ``x [B, 3, H, W]`` toward the taste described by a :class:`Preference`.

    Subclasses set ``consumes`` (subset of ``{"vector", "maps", "source"}``; empty for an
    unconditioned enhancer such as ``identity``). The core refuses an encoder that does not
    provide what the enhancer consumes, before training. ``forward`` returns ``[B, 3, H, W]``
    (values are clamped to [0, 1] by the evaluator, not necessarily by the model).
    """

    consumes: ClassVar[frozenset[str]] = frozenset({"vector"})
    trainable: bool = True

    def forward(self, x: Tensor, pref: Preference) -> Tensor:  # pragma: no cover - contract
        raise NotImplementedError


class Loss(nn.Module):
    """A training loss with its own state, parameter group and checkpoint.

    kind: ``"image"`` -> ``forward(output, target, batch) -> scalar``;
          ``"embedding"`` -> ``forward(embeddings [M, D], labels [M]) -> scalar``.
    lr: learning rate of the loss's own parameters (centres, proxies); None = the stage's
        encoder learning rate.
    default_weight: weight used when ``--loss NAME`` gives none.
    """

    kind: ClassVar[str] = "image"
    lr: float | None = None
    default_weight: float = 1.0


def check_compatible(encoder_name: str, encoder: type[Encoder] | Encoder,
                     enhancer_name: str, enhancer: type[Enhancer] | Enhancer) -> str | None:
    """A one-line reason why the pair cannot work, or None when it can."""
    missing = sorted(set(enhancer.consumes) - set(encoder.provides))
    if missing:
        return (f"enhancer '{enhancer_name}' consumes {', '.join(missing)}, which encoder "
                f"'{encoder_name}' does not provide (it provides {', '.join(sorted(encoder.provides))})")
    return None
