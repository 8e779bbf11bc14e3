"""Building components: a plugin's crashing builder, wrong signature or wrong return type is
reported in one line naming the component and its plugin; ``piebench list``'s probe finds
models of the wrong output shape on a tiny input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from piebench.build import build_metrics
from piebench.contract import Prober, build_checked, probe
from piebench.errors import PluginError, UsageError
from piebench.interfaces import BuildContext, Encoder, Enhancer, Loss, Preference
from piebench.registry import Registry, Spec


def _crashes(ctx, **kw):
    raise ZeroDivisionError("division by zero in the builder")


def _strict(ctx):
    return object()


def _forward(x, pref):
    return x


def test_a_crashing_builder_names_its_plugin():
    spec = Spec("enhancer", "boom", _crashes, plugin="third-party")
    with pytest.raises(PluginError, match=r"enhancer 'boom' \(plugin 'third-party'\) failed to build: ZeroDivisionError"):
        build_checked(spec, BuildContext())


def test_unknown_parameters_are_a_usage_error():
    spec = Spec("encoder", "strict", _strict, plugin="p")
    with pytest.raises(UsageError, match=r"does not accept parameters \['width'\]"):
        build_checked(spec, BuildContext(), None, {"width": 3})


@pytest.mark.parametrize(("kind", "expected"), [("encoder", "piebench.Encoder"), ("enhancer", "piebench.Enhancer"),
                                                ("loss", "piebench.Loss"),
                                                ("dataset", "piebench.data.PieDataset")])
def test_a_builder_returning_a_function_is_refused_naming_the_plugin(kind, expected):
    spec = Spec(kind, "fn", lambda ctx: _forward, plugin="tp-plugin")
    with pytest.raises(PluginError) as err:
        build_checked(spec, BuildContext())
    line = str(err.value)
    assert line == (f"{kind} 'fn' (plugin 'tp-plugin'): its builder returned a function (_forward), not a "
                    f"{expected}{' (an nn.Module subclass)' if kind != 'dataset' else ''}; see "
                    f"piebench.hookspecs.register_{kind}{'es' if kind == 'loss' else 's'}")


def test_a_metric_builder_without_ctx_is_refused_naming_the_plugin():
    spec = Spec("metric", "tp-metric", lambda: (lambda o, t: (o - t).abs().mean((1, 2, 3))), plugin="tp-plugin")
    with pytest.raises(PluginError, match=r"^metric 'tp-metric' \(plugin 'tp-plugin'\) has a builder <lambda>\(\) "
                                          r"that cannot be called as build\(ctx\) \(too many positional arguments\); "
                                          r"builders take the BuildContext first, see piebench.hookspecs.register_metrics$"):
        build_checked(spec)
    # The run refuses it too, rather than calling it "unavailable".
    registry = Registry()
    registry.add(spec)
    with pytest.raises(PluginError, match="tp-metric"):
        build_metrics(["tp-metric"], registry)


def test_a_configuration_the_builder_does_not_take_is_the_plugins_fault():
    spec = Spec("encoder", "cfg", _strict, configurations={"small": {"width": 8}}, plugin="tp-plugin")
    with pytest.raises(PluginError, match=r"encoder 'cfg' \(plugin 'tp-plugin'\) has a builder _strict\(ctx\) that "
                                          r"cannot be called as build\(ctx, width=...\) \(got an unexpected keyword"):
        build_checked(spec, BuildContext())


# ------------------------------------------------------------------------------------ probe
class _Gain(Enhancer):
    def __init__(self, crop: int = 0):
        super().__init__()
        self.gain, self.crop = nn.Parameter(torch.ones(1)), crop

    def forward(self, x, pref):
        return self.gain * (x[..., self.crop:, :] if self.crop else x)


class _FlatEncoder(Encoder):
    dim = 4

    def embed(self, images):
        return torch.zeros(images.shape[0], 4)

    def forward(self, refs):
        return Preference(vector=torch.zeros(refs.targets.shape[0] * 4))  # 1-D: the wrong shape


class _NoEmbed(Encoder):
    dim = 4

    def forward(self, refs):
        return Preference(vector=torch.zeros(refs.targets.shape[0], 4))


class _PerPixel(Loss):
    def forward(self, output, target, batch):
        return (output - target).abs()  # not reduced to a scalar


def test_an_encoder_without_embed_is_refused_before_training():
    spec = Spec("encoder", "tp-noembed", lambda ctx: _NoEmbed(), plugin="tp")
    with pytest.raises(PluginError, match=r"^encoder 'tp-noembed' \(plugin 'tp'\): its class _NoEmbed does not "
                                          r"implement embed\(images\) -> \[M, D\]"):
        build_checked(spec, BuildContext())


def test_a_metric_returning_numpy_is_one_line_naming_its_plugin():
    spec = Spec("metric", "tp-np", lambda ctx: (lambda o, t: (o - t).abs().mean((1, 2, 3)).numpy()), plugin="tp")
    fn = build_checked(spec)
    with pytest.raises(PluginError, match=r"^metric 'tp-np' \(plugin 'tp'\): on a batch of 3 image pairs it "
                                          r"returned a numpy.ndarray, not a torch.Tensor of shape \(3,\)"):
        fn(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8))
    ok = build_checked(Spec("metric", "tp-ok", lambda ctx: (lambda o, t: (o - t).abs().mean((1, 2, 3))), plugin="tp"))
    assert ok(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)).tolist() == [1.0, 1.0]


def _registry(registry, *specs):
    reg = Registry()
    reg.add(registry.get("encoder", "angular"))
    for spec in specs:
        reg.add(spec)
    return reg


def test_probe_reports_wrong_output_shapes_and_types_once_each(registry):
    reg = _registry(registry,
                    Spec("enhancer", "tp-crop", lambda ctx: _Gain(crop=4), plugin="tp"),
                    Spec("enhancer", "tp-ok", lambda ctx: _Gain(), plugin="tp"),
                    Spec("enhancer", "tp-fn", lambda ctx: _forward, plugin="tp"),
                    Spec("encoder", "tp-flat", lambda ctx: _FlatEncoder(), plugin="tp"),
                    Spec("metric", "tp-scalar", lambda ctx: (lambda o, t: (o - t).abs().mean()), plugin="tp"),
                    Spec("metric", "tp-ok", lambda ctx: (lambda o, t: (o - t).abs().mean((1, 2, 3))), plugin="tp"),
                    Spec("loss", "tp-fn", lambda ctx: _forward, plugin="tp"),
                    Spec("loss", "tp-pixel", lambda ctx: _PerPixel(), plugin="tp"))
    lines = probe(reg, ["encoder", "enhancer", "loss", "metric"], plugins={"tp"})
    assert len(lines) == 6, lines
    by_name = {(line.split()[0], line.split("'")[1]): line for line in lines}
    assert by_name["enhancer", "tp-crop"] == ("enhancer 'tp-crop' (plugin 'tp'): forward on input (2, 3, 32, 32) (paired with "
                                  "encoder 'angular') returned (2, 3, 28, 32), expected (2, 3, 32, 32) (the input's shape)")
    assert "its builder returned a function (_forward), not a piebench.Enhancer" in by_name["enhancer", "tp-fn"]
    assert "returned a function (_forward), not a piebench.Loss" in by_name["loss", "tp-fn"]
    assert "returned a vector of shape (8,), expected (2, D)" in by_name["encoder", "tp-flat"]
    assert "returned shape (), expected (2,)" in by_name["metric", "tp-scalar"]
    assert ("forward on an output of shape (2, 3, 32, 32) returned shape (2, 3, 32, 32), expected a scalar tensor"
            in by_name["loss", "tp-pixel"])
    assert Prober(reg).problem(reg.get("enhancer", "tp-ok")) is None


class _ReadsMaps(_Gain):
    consumes = frozenset({"vector", "maps"})


def test_probe_holds_the_built_models_to_their_registered_pairing_fields(registry):
    reg = _registry(registry,
                    Spec("encoder", "tp-promises", lambda ctx: _FlatEncoder(), plugin="tp", provides=("vector", "maps")),
                    Spec("enhancer", "tp-reads", lambda ctx: _ReadsMaps(), plugin="tp", pairs_with="angular"))
    assert probe(reg, ["encoder", "enhancer"], plugins={"tp"}) == [
        "encoder 'tp-promises' (plugin 'tp'): registered provides=['vector', 'maps'], but the built encoder does not "
        "provide maps (its provides: ['vector'])",
        "enhancer 'tp-reads' (plugin 'tp'): the built enhancer consumes maps, which its registration does not "
        "declare (consumes=['vector'])"]


def test_probe_finds_nothing_wrong_with_the_built_ins(registry):
    assert probe(registry, ["encoder", "enhancer", "loss", "metric"]) == []
