"""What a registered builder must be and return, checked wherever a component is built.

:func:`build_checked` is the one door through which the core builds a plugin's component: a
builder whose signature cannot take ``build(ctx, **params)``, that crashes, or that returns
the wrong type (a plain function where an :class:`~piebench.Enhancer` is due) is reported in
one line naming the component and its plugin (:class:`~piebench.errors.PluginError`).
:func:`probe` goes one step further for ``piebench list``: it builds the small configuration
and runs the model on a tiny input, reporting an output of the wrong type or shape.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .data import PieDataset
from .errors import PiebenchError, PluginError, UsageError, first_line
from .interfaces import Batch, BuildContext, Encoder, Enhancer, Loss, Preference, RefSet, check_compatible
from .registry import partner_order

#: What each kind's builder must return (metrics: a callable; datasets: a PieDataset).
RETURNS = {"encoder": Encoder, "enhancer": Enhancer, "loss": Loss}
_HOOK = {"encoder": "register_encoders", "enhancer": "register_enhancers", "loss": "register_losses",
         "dataset": "register_datasets", "metric": "register_metrics"}


def who(spec: Any) -> str:
    """``enhancer 'sa' (plugin 'enhancer-sa')``: how every message names a component."""
    return f"{spec.kind} '{spec.name}' (plugin '{spec.plugin}')"


def _describe(obj: Any) -> str:
    if obj is None:
        return "None"
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return f"a function ({getattr(obj, '__name__', '?')})"
    if inspect.isclass(obj):
        return f"the class {obj.__name__} (not an instance)"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def check_signature(spec: Any, ctx: Any, params: dict, user_params: dict | None = None) -> None:
    """Refuse a builder that cannot be called as ``build(ctx, **params)``.

    The configuration's ``params`` are the plugin's own, so a mismatch there is the plugin's
    fault (:class:`PluginError`); ``user_params`` (``--encoder-param`` and the like) that the
    builder does not take are the user's (:class:`UsageError`).
    """
    try:
        sig = inspect.signature(spec.build)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check before calling it
        return
    try:
        sig.bind(ctx, **params)
    except TypeError as err:
        call = "build(ctx" + "".join(f", {k}=..." for k in params) + ")"
        raise PluginError(f"{who(spec)} has a builder {getattr(spec.build, '__name__', '')}{sig} that cannot be "
                          f"called as {call} ({err}); builders take the BuildContext first, see "
                          f"piebench.hookspecs.{_HOOK[spec.kind]}") from None
    if user_params:
        try:
            sig.bind(ctx, **{**params, **user_params})
        except TypeError as err:
            raise UsageError(f"{spec.kind} '{spec.name}' does not accept parameters {sorted(user_params)}: "
                             f"{err}") from None


def check_type(spec: Any, obj: Any) -> None:
    """Refuse a built component of the wrong type, naming its plugin.

    An encoder must also implement ``embed`` (every evaluation calls it, and embedding losses
    train through it): one that keeps :meth:`piebench.Encoder.embed` is refused here, before
    training, not after it.
    """
    if spec.kind in RETURNS:
        want = RETURNS[spec.kind]
        ok, what = isinstance(obj, want), f"a piebench.{want.__name__} (an nn.Module subclass)"
        if ok and spec.kind == "encoder" and getattr(type(obj), "embed", None) is Encoder.embed:
            raise PluginError(f"{who(spec)}: its class {type(obj).__name__} does not implement embed(images) -> "
                              f"[M, D], which evaluation and embedding losses call; see "
                              f"piebench.hookspecs.register_encoders")
    elif spec.kind == "metric":
        ok, what = callable(obj), "a callable (output, target) -> [B]"
    elif spec.kind == "dataset":
        ok, what = isinstance(obj, PieDataset), "a piebench.data.PieDataset"
    else:  # a logger: its builder only checks that the tracker can work; what it returns is not used
        return
    if not ok:
        raise PluginError(f"{who(spec)}: its builder returned {_describe(obj)}, not {what}; see "
                          f"piebench.hookspecs.{_HOOK[spec.kind]}")


def build_checked(spec: Any, ctx: Any = None, configuration: str | None = None,
                  user_params: dict | None = None) -> Any:
    """Build ``spec``'s component: configuration parameters plus ``user_params``, checked.

    A library error the builder raises on purpose (``PiebenchError``: an unavailable metric, an
    incompatible partner) passes through unchanged; any other crash becomes one line naming the
    plugin.
    """
    ctx = ctx if ctx is not None else BuildContext()
    params = spec.params(configuration)
    check_signature(spec, ctx, params, user_params)
    try:
        obj = spec.build(ctx, **{**params, **(user_params or {})})
    except PiebenchError:
        raise
    except Exception as err:  # noqa: BLE001 - a plugin bug: name the plugin, one line
        raise PluginError(f"{who(spec)} failed to build: {type(err).__name__}: {err}") from err
    check_type(spec, obj)
    return CheckedMetric(spec, obj) if spec.kind == "metric" else obj


def check_metric_values(spec: Any, values: Any, batch: int) -> Any:
    """``values`` if it is a tensor of shape ``(batch,)``, else a PluginError naming the plugin."""
    if not isinstance(values, torch.Tensor):
        raise PluginError(f"{who(spec)}: on a batch of {batch} image pairs it returned {_describe(values)}, "
                          f"not a torch.Tensor of shape ({batch},); see piebench.hookspecs.register_metrics")
    if tuple(values.shape) != (batch,):
        raise PluginError(f"{who(spec)}: on a batch of {batch} image pairs it returned shape {tuple(values.shape)}, "
                          f"expected ({batch},) (one value per image)")
    return values


class CheckedMetric:
    """A built metric whose every result is checked (:func:`check_metric_values`), so a metric of the
    wrong return type stops a run with one line naming its plugin instead of an internal error."""

    def __init__(self, spec: Any, fn: Any) -> None:
        self.spec, self.fn = spec, fn

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return check_metric_values(self.spec, self.fn(output, target), output.shape[0])


# ---------------------------------------------------------------------------------- probing
_B, _N, _SIZE = 2, 2, 32


def check_loss_value(spec: Any, value: Any, what: str) -> torch.Tensor:
    """``value`` if it is a scalar tensor, else a PluginError naming loss ``spec`` and its plugin."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value
    got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else _describe(value)
    raise PluginError(f"{who(spec)}: forward on {what} returned {got}, expected a scalar tensor "
                      f"(shape ()); see piebench.hookspecs.register_losses")


def probe_metric(spec: Any, fn: Any) -> None:
    """Call a built metric once on two random 64x64 image pairs, so one that crashes or returns
    the wrong shape is one line naming its plugin before training, not after it.

    A ``PiebenchError`` it raises on purpose (unavailable here) passes through unchanged.
    """
    g = torch.Generator().manual_seed(2)
    output, target = torch.rand(_B, 3, 64, 64, generator=g), torch.rand(_B, 3, 64, 64, generator=g)
    try:
        check_metric_values(spec, fn(output, target), _B)
    except PiebenchError:
        raise
    except Exception as err:  # noqa: BLE001 - a plugin bug: name the plugin, one line
        raise PluginError(f"{who(spec)} failed on {_B} random 64x64 image pairs: {type(err).__name__}: "
                          f"{first_line(err)}; see piebench.hookspecs.register_metrics") from err


def _refs() -> RefSet:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(_B, _N, 3, _SIZE, _SIZE, generator=g)
    return RefSet(targets=images, inputs=images.flip(-1), query=torch.rand(_B, 3, _SIZE, _SIZE, generator=g))


def _ctx(**kw: Any) -> BuildContext:
    return BuildContext(num_users=2, num_refs=_N, image_size=_SIZE, **kw)


class Prober:
    """Builds every component once at its small configuration and tries a tiny input.

    :meth:`problem` returns one line for a component that breaks the contract, else None.
    Components that cannot be built or run here for a legitimate reason (staged weights, a
    dataset they read, a partner they need) are not reported: only wrong types and shapes are.
    Datasets are never built here (they read or generate data); their builder's signature is
    checked.
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._encoders: dict[str, tuple[Encoder, Preference] | Exception] = {}

    def problem(self, spec: Any) -> str | None:
        try:
            getattr(self, f"_{spec.kind}")(spec)
        except PluginError as err:
            return str(err)
        except Exception:  # noqa: BLE001 - cannot be probed here (weights, data, partners)
            return None
        return None

    def _encoder_run(self, name: str) -> tuple[Encoder, Preference]:
        """The small encoder ``name`` and its preference for tiny references (raises if unusable)."""
        if name not in self._encoders:
            try:
                self._encoders[name] = self._run_encoder(self.registry.get("encoder", name))
            except Exception as err:  # noqa: BLE001 - kept, and raised again for every caller
                self._encoders[name] = err
        found = self._encoders[name]
        if isinstance(found, Exception):
            raise found
        return found

    @staticmethod
    def _run_encoder(spec: Any) -> tuple[Encoder, Preference]:
        enc = build_checked(spec, _ctx())
        missing = sorted(set(spec.provides) - set(enc.provides))
        if missing:  # pairing trusts the registration: it must not promise more than the model gives
            raise PluginError(f"{who(spec)}: registered provides={list(spec.provides)}, but the built encoder does "
                              f"not provide {', '.join(missing)} (its provides: {sorted(enc.provides)})")
        with torch.no_grad():
            pref = enc.eval()(_refs())
        if not isinstance(pref, Preference):
            raise PluginError(f"{who(spec)}: forward returned {_describe(pref)}, not a piebench.Preference")
        vector = pref.vector
        if not isinstance(vector, torch.Tensor) or vector.ndim != 2 or vector.shape[0] != _B:
            shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else _describe(vector)
            raise PluginError(f"{who(spec)}: forward on {_B} users x {_N} references of "
                              f"{_SIZE}x{_SIZE} returned a vector of shape {shape}, expected ({_B}, D)")
        dim = vector.shape[1]
        if getattr(enc, "dim", None) != dim:
            raise PluginError(f"{who(spec)}: its dim is {getattr(enc, 'dim', None)!r} but forward returned vectors "
                              f"of length {dim} (enhancers size themselves from the encoder's dim)")
        with torch.no_grad():
            emb = enc.embed(_refs().targets[:, 0])
        if not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (_B, dim):
            got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else _describe(emb)
            raise PluginError(f"{who(spec)}: embed on {_B} images of {_SIZE}x{_SIZE} returned {got}, expected "
                              f"({_B}, {dim}) (one row of length dim per image)")
        return enc, pref

    def _encoder(self, spec: Any) -> None:
        self._encoder_run(spec.name)

    def _partners(self, spec: Any) -> list[str]:
        return partner_order(self.registry, spec.name, ("angular", "center", "star", "lab-stats"))

    def _enhancer(self, spec: Any) -> None:
        for partner in self._partners(spec):
            try:
                enc, pref = self._encoder_run(partner)
            except Exception:  # noqa: BLE001 - that encoder is not usable here; try the next
                continue
            try:
                enh = build_checked(spec, _ctx(encoder=enc))
            except PluginError:
                raise
            except PiebenchError:  # refuses this partner: try the next
                continue
            extra = sorted(set(enh.consumes) - set(spec.consumes))
            if extra:  # pairing trusts the registration: the model must not read more than it declares
                raise PluginError(f"{who(spec)}: the built enhancer consumes {', '.join(extra)}, which its "
                                  f"registration does not declare (consumes={list(spec.consumes)})")
            if check_compatible(partner, enc, spec.name, enh):
                continue
            x = torch.rand(_B, 3, _SIZE, _SIZE, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                out = enh.eval()(x, pref)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else _describe(out)
                raise PluginError(f"{who(spec)}: forward on input {tuple(x.shape)} (paired with encoder "
                                  f"'{partner}') returned {got}, expected {tuple(x.shape)} (the input's shape)")
            return

    def _loss(self, spec: Any) -> None:
        encoder = None
        for name in ("angular", "center", *self.registry.names("encoder")):
            try:
                encoder = self._encoder_run(name)[0]
                break
            except Exception:  # noqa: BLE001 - not usable here (or not installed): the next one
                continue
        loss = build_checked(spec, _ctx(encoder=encoder))
        if loss.kind not in ("image", "embedding"):
            raise PluginError(f"{who(spec)}: kind is {loss.kind!r}, expected 'image' or 'embedding'")
        g = torch.Generator().manual_seed(3)
        if loss.kind == "image":
            x, target = torch.rand(_B, 3, _SIZE, _SIZE, generator=g), torch.rand(_B, 3, _SIZE, _SIZE, generator=g)
            batch = Batch(input=x, target=target, refs=_refs(), user=torch.arange(_B), photo=torch.arange(_B))
            args, what = (x.clone().requires_grad_(True), target, batch), f"an output of shape {tuple(x.shape)}"
        elif encoder is not None:
            emb = torch.nn.functional.normalize(torch.rand(2 * _B, max(1, int(encoder.dim)), generator=g), dim=1)
            args, what = (emb, torch.arange(_B).repeat_interleave(2)), f"embeddings of shape {tuple(emb.shape)}"
        else:
            return
        try:
            value = loss(*args)
        except Exception:  # noqa: BLE001 - needs more than a tiny batch (a partner, weights): not reported
            return
        check_loss_value(spec, value, what)

    def _metric(self, spec: Any) -> None:
        probe_metric(spec, build_checked(spec, BuildContext()))

    def _dataset(self, spec: Any) -> None:
        check_signature(spec, _ctx(), spec.params(None))


def probe(registry: Any, kinds: list[str], plugins: set[str] | None = None) -> list[str]:
    """One line per component of ``kinds`` (of ``plugins`` only, when given) that breaks the
    contract (see :class:`Prober`)."""
    prober = Prober(registry)
    return [line for kind in kinds for spec in registry.all(kind)
            if (plugins is None or spec.plugin in plugins) and (line := prober.problem(spec))]
