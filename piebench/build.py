"""Building a run's components from the registry: dataset, encoder, enhancer, losses, metrics.

The core reaches every concrete model through here, by name; nothing here imports a plugin.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import DEFAULT_WEIGHT
from .contract import build_checked
from .errors import PiebenchError, PluginError, UsageError
from .interfaces import BuildContext, Encoder, Enhancer, Loss, check_compatible
from .registry import Registry, compatible


@dataclass
class Components:
    """Everything a run trains and evaluates with."""

    dataset: Any
    encoder: Encoder
    enhancer: Enhancer
    losses: dict[str, Loss]
    stages: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def build_dataset(cfg: dict, registry: Registry) -> Any:
    spec = registry.get("dataset", cfg["eval"]["dataset"])
    params = dict(cfg["eval"].get("data", {}))
    configuration = params.pop("configuration", None)
    return build_checked(spec, BuildContext(num_refs=int(cfg["eval"].get("refs", 1))), configuration, params)


def build_models(cfg: dict, registry: Registry, dataset: Any) -> tuple[Encoder, Enhancer]:
    """The encoder and enhancer of ``cfg``, refusing an incompatible pair before training."""
    enc_spec = registry.get("encoder", cfg["encoder"]["name"])
    enh_spec = registry.get("enhancer", cfg["enhancer"]["name"])
    ok, why = compatible(enc_spec, enh_spec)
    if not ok:
        raise UsageError(f"{why}; {_providers(registry, enh_spec.consumes)}")
    ctx = BuildContext(num_users=max(1, dataset.num_seen), num_refs=cfg["train"]["refs"],
                       image_size=dataset.resolution[0], pretrained=cfg["encoder"].get("pretrained", False),
                       dataset=dataset)
    encoder = build_checked(enc_spec, ctx, cfg["encoder"]["configuration"], cfg["encoder"].get("params", {}))
    if cfg.get("blind"):
        from .blind import BlindEncoder

        encoder = BlindEncoder(encoder, dataset.resolution, cfg["train"]["refs"])
    ctx.encoder = encoder
    enhancer = build_checked(enh_spec, ctx, cfg["enhancer"]["configuration"], cfg["enhancer"].get("params", {}))
    why = check_compatible(enc_spec.name, encoder, enh_spec.name, enhancer)
    if why:
        raise UsageError(f"{why}; {_providers(registry, enhancer.consumes)}")
    return encoder, enhancer


def _providers(registry: Registry, fields: Any) -> str:
    """The installed encoders that provide every one of ``fields`` (for an error message)."""
    names = [spec.name for spec in registry.all("encoder") if set(fields) <= set(spec.provides)]
    return f"encoders that provide it: {', '.join(names)}" if names else "no installed encoder provides it"


def plan_stages(cfg: dict, encoder: Encoder, enhancer: Enhancer) -> tuple[list[dict], list[str]]:
    """The stages that can actually run for this pair, and notes on what was dropped."""
    notes, stages = [], []
    enc_trains = encoder.trainable and any(p.requires_grad for p in encoder.parameters())
    enh_trains = enhancer.trainable and any(p.requires_grad for p in enhancer.parameters())
    for stage in cfg["train"]["stages"]:
        stage = {**stage, "train": list(stage.get("train", [])), "losses": dict(stage.get("losses", {})),
                 "lr": dict(stage.get("lr", {}))}
        if "encoder" in stage["train"] and not enc_trains:
            stage["train"].remove("encoder")
            notes.append(f"stage '{stage['name']}': encoder '{cfg['encoder']['name']}' has nothing to train")
        if "enhancer" in stage["train"] and not enh_trains:
            stage["train"].remove("enhancer")
            notes.append(f"stage '{stage['name']}': enhancer '{cfg['enhancer']['name']}' has nothing to train")
            stage["losses"] = {k: v for k, v in stage["losses"].items() if k == "metric"}
        if "metric" in stage["losses"]:
            weight = stage["losses"].pop("metric")
            if encoder.metric_loss and "encoder" in stage["train"]:
                stage["losses"][encoder.metric_loss] = weight
            else:
                notes.append(f"stage '{stage['name']}': no metric loss for encoder '{cfg['encoder']['name']}'")
        if "enhancer" not in stage["train"] and "encoder" in stage["train"] and not encoder.metric_loss:
            stage["train"].remove("encoder")
        if not stage["train"] or not stage["losses"]:
            notes.append(f"stage '{stage['name']}' skipped (nothing to train)")
            continue
        stages.append(stage)
    return stages, notes


def build_losses(stages: list[dict], registry: Registry, dataset: Any, encoder: Encoder,
                 refs: int) -> dict[str, Loss]:
    """One instance per loss name, shared across stages (its state carries over)."""
    losses: dict[str, Loss] = {}
    ctx = BuildContext(num_users=max(1, dataset.num_seen), num_refs=refs, image_size=dataset.resolution[0],
                       encoder=encoder, dataset=dataset)
    for stage in stages:
        for name, weight in list(stage["losses"].items()):
            if name not in losses:
                losses[name] = build_checked(registry.get("loss", name), ctx)
            if weight == DEFAULT_WEIGHT:
                stage["losses"][name] = float(losses[name].default_weight)
            kind = losses[name].kind
            if kind == "embedding" and "encoder" not in stage["train"]:
                raise UsageError(f"loss '{name}' trains the encoder's embedding, but stage '{stage['name']}' "
                                 f"does not train the encoder")
            if kind == "image" and "enhancer" not in stage["train"]:
                raise UsageError(f"image loss '{name}' needs the enhancer, which stage '{stage['name']}' "
                                 f"does not train")
    return losses


def build_metrics(names: list[str], registry: Registry) -> tuple[dict[str, Any], dict[str, str]]:
    """Callables for the named metrics, and the reason for each one that is unavailable."""
    fns, unavailable = {}, {}
    for name in names:
        spec = registry.get("metric", name)
        try:
            fns[name] = build_checked(spec)
        except PluginError:
            raise
        except PiebenchError as err:
            unavailable[name] = str(err)
            print(f"piebench: {name} unavailable: {err}", file=sys.stderr)
    return fns, unavailable


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if name != "cpu" and not name.startswith("cuda") and name != "mps":
        raise UsageError(f"--device {name}: expected cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and name != "cuda":
        index = name[5:] if name[4:5] == ":" else ""
        count = torch.cuda.device_count()
        if not index.isdigit():
            raise UsageError(f"--device {name}: expected cpu, cuda, cuda:N or auto")
        if int(index) >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return name


def pair_instances(registry: Registry, encoder: str, enhancer: str, *, encoder_config: str | None = None,
                   enhancer_config: str | None = None, ctx: BuildContext | None = None) -> tuple[Encoder, Enhancer] | str:
    """Build a pair at a small context; the pair, or a one-line reason why it is incompatible."""
    ctx = ctx or BuildContext(num_users=4, num_refs=3, image_size=64)
    enc = build_checked(registry.get("encoder", encoder), ctx, encoder_config)
    ctx = BuildContext(**{**ctx.__dict__, "encoder": enc})
    try:
        enh = build_checked(registry.get("enhancer", enhancer), ctx, enhancer_config)
    except PiebenchError as err:
        return str(err)
    why = check_compatible(encoder, enc, enhancer, enh)
    return why if why else (enc, enh)


def first_compatible(registry: Registry, *, encoder: str | None = None, enhancer: str | None = None,
                     preferred: tuple[str, ...] = ("sa", "adain", "star", "angular"),
                     configuration: str | None = None) -> str | None:
    """A partner for ``encoder`` (an enhancer) or for ``enhancer`` (an encoder): the first of
    ``preferred`` that is compatible, else the first compatible one by name; None if none is."""
    kind = "enhancer" if encoder else "encoder"
    names = registry.names(kind)
    order = [n for n in preferred if n in names] + [n for n in names if n not in preferred]
    for name in order:
        if kind == "enhancer" and name == "identity":
            continue
        enc_name, enh_name = (encoder, name) if encoder else (name, enhancer)
        if not compatible(registry.get("encoder", enc_name), registry.get("enhancer", enh_name))[0]:
            continue
        try:
            res = (pair_instances(registry, encoder, name, encoder_config=configuration) if encoder
                   else pair_instances(registry, name, enhancer, enhancer_config=configuration))
        except PiebenchError:
            continue
        if not isinstance(res, str):
            return name
    return None
