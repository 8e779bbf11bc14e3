"""Building a run's components from the registry: dataset, encoder, enhancer, losses, metrics.

The core reaches every concrete model through here, by name; nothing here imports a plugin.

Each builder can also say what it built with (``resolved``, written into a run's
``config.json``): per component its plugin, versions, configuration, every builder parameter
(defaults from the builder's signature, then the configuration's, then the user's) and the
scalar fields of the :class:`~piebench.interfaces.BuildContext` it received, as JSON-safe
values (:func:`json_safe`). That is enough to rebuild the component with the same shapes:
``registry.get(kind, name).build(BuildContext(**context), **params)``, where a context naming
an ``encoder`` or a ``dataset`` gets the instance rebuilt from that entry of ``resolved``.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

from .blind import BlindEncoder
from .config import DEFAULT_WEIGHT
from .contract import build_checked, probe_metric
from .errors import PiebenchError, PluginError, UsageError
from .interfaces import BuildContext, Encoder, Enhancer, Loss, check_compatible
from .registry import Registry, Spec, compatible


@dataclass
class Components:
    """Everything a run trains and evaluates with."""

    dataset: Any
    encoder: Encoder
    enhancer: Enhancer
    losses: dict[str, Loss]
    stages: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def build_dataset(cfg: dict, registry: Registry, resolved: dict | None = None) -> Any:
    """The evaluation dataset of ``cfg`` (``eval.dataset`` with ``eval.data`` parameters)."""
    spec = registry.get("dataset", cfg["eval"]["dataset"])
    params = dict(cfg["eval"].get("data", {}))
    configuration = params.pop("configuration", None)
    ctx = BuildContext(num_refs=int(cfg["eval"].get("refs", 1)))
    return _build(spec, ctx, configuration, params, resolved, "dataset")


def build_models(cfg: dict, registry: Registry, dataset: Any,
                 resolved: dict | None = None) -> tuple[Encoder, Enhancer]:
    """The encoder and enhancer of ``cfg``, refusing an incompatible pair before training
    (``resolved``: where to note what each was built with, see the module docstring)."""
    enc_spec = registry.get("encoder", cfg["encoder"]["name"])
    enh_spec = registry.get("enhancer", cfg["enhancer"]["name"])
    ok, why = compatible(enc_spec, enh_spec)
    if not ok:
        raise UsageError(f"{why}; {_providers(registry, enh_spec.consumes)}")
    ctx = BuildContext(num_users=max(1, dataset.num_seen), num_refs=cfg["train"]["refs"],
                       image_size=dataset.resolution[0], pretrained=cfg["encoder"].get("pretrained", False),
                       dataset=dataset)
    encoder = _build(enc_spec, ctx, cfg["encoder"]["configuration"], cfg["encoder"].get("params", {}), resolved,
                     "encoder")
    if cfg.get("blind"):
        encoder = BlindEncoder(encoder, dataset.resolution, cfg["train"]["refs"])
    ctx.encoder = encoder
    enhancer = _build(enh_spec, ctx, cfg["enhancer"]["configuration"], cfg["enhancer"].get("params", {}), resolved,
                      "enhancer", encoder_name=enc_spec.name)
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
                 refs: int, resolved: dict | None = None, encoder_name: str | None = None) -> dict[str, Loss]:
    """One instance per loss name, shared across stages (its state carries over)."""
    losses: dict[str, Loss] = {}
    ctx = BuildContext(num_users=max(1, dataset.num_seen), num_refs=refs, image_size=dataset.resolution[0],
                       encoder=encoder, dataset=dataset)
    for stage in stages:
        for name, weight in list(stage["losses"].items()):
            if name not in losses:
                losses[name] = _build(registry.get("loss", name), ctx, None, None, resolved, "losses",
                                      encoder_name=encoder_name)
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


def build_metrics(names: list[str], registry: Registry,
                  resolved: dict | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Callables for the named metrics, and the reason for each one that is unavailable."""
    fns, unavailable = {}, {}
    for name in names:
        spec = registry.get("metric", name)
        try:
            fns[name] = _build(spec, BuildContext(), None, None, resolved, "metrics")
            probe_metric(spec, fns[name])  # a broken metric stops the run now, not after training
        except PluginError:
            raise
        except PiebenchError as err:
            unavailable[name] = str(err)
            print(f"piebench: {name} unavailable: {err}", file=sys.stderr)
            if resolved is not None:
                resolved.setdefault("metrics", {})[name] = {**describe(spec, BuildContext()), "unavailable": str(err)}
    return fns, unavailable


# -- what each component was built with (config.json's "resolved") -------------------------------
#: The tables of ``resolved`` holding one entry per name (the others hold one entry).
PER_NAME = ("losses", "metrics")


def _build(spec: Spec, ctx: BuildContext, configuration: str | None, user_params: dict | None,
           resolved: dict | None, slot: str, encoder_name: str | None = None) -> Any:
    """:func:`~piebench.contract.build_checked`, noting the build in ``resolved[slot]``."""
    obj = build_checked(spec, ctx, configuration, user_params)
    if resolved is not None:
        entry = describe(spec, ctx, configuration, user_params, encoder_name=encoder_name)
        if slot in PER_NAME:
            resolved.setdefault(slot, {})[spec.name] = entry
        else:
            resolved[slot] = entry
    return obj


def describe(spec: Spec, ctx: BuildContext, configuration: str | None = None, user_params: dict | None = None,
             *, encoder_name: str | None = None) -> dict[str, Any]:
    """One component's entry of ``resolved``: who registered it and every parameter it was built with."""
    if configuration is None and spec.configurations:
        configuration = "small" if "small" in spec.configurations else next(iter(spec.configurations))
    context = {"num_users": ctx.num_users, "num_refs": ctx.num_refs, "image_size": ctx.image_size,
               "pretrained": ctx.pretrained}
    if ctx.encoder is not None:
        context["encoder"] = encoder_name  # the instance built from resolved["encoder"]
    if ctx.dataset is not None:
        context["dataset"] = getattr(ctx.dataset, "name", "")  # the one built from resolved["dataset"]
    return {"name": spec.name, "plugin": spec.plugin, "plugin_version": spec.plugin_version,
            "version": spec.version, "paper": spec.paper, "configuration": configuration,
            "params": json_safe(builder_params(spec, configuration, user_params)), "context": context}


def builder_params(spec: Spec, configuration: str | None = None, user_params: dict | None = None) -> dict[str, Any]:
    """Every keyword the builder receives or defaults: its signature's defaults, then the
    configuration's parameters, then ``user_params`` (a ``**params`` builder shows only the latter two)."""
    params: dict[str, Any] = {}
    try:
        sig = list(inspect.signature(spec.build).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        sig = []
    if sig and sig[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        sig = sig[1:]  # the BuildContext
    for p in sig:
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty:
            params[p.name] = p.default
    return {**params, **spec.params(configuration), **(user_params or {})}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: tuples and sets become lists, paths text, tensors and arrays
    their values (a summary of shape and dtype beyond 64 numbers), functions and classes their
    qualified names, anything else its ``repr``. Non-finite floats stay (strict writers null them)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [json_safe(v) for v in sorted(value, key=repr)]
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        count = value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))
        if count <= 64:
            return json_safe(value.tolist())
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


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
