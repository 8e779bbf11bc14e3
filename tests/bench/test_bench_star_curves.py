"""pytest-benchmark: star's curve step and forward pass against the official gather-based step.

Outside the default run::

    pytest tests/bench/test_bench_star_curves.py -m bench --benchmark-enable -n 0

``official_gather_step`` is the curve step as the paper describes it and the official code
does it (input repeated to 9 channels, one ``gather`` on the ``[B, 9, 256]`` curves, sum over
the input channel), re-derived here. The interleaved cases alternate star and that step
round by round on one thread and assert star is at least as fast (median over rounds); the
plain cases give pytest-benchmark's own statistics per implementation.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from piebench_plugins.enhancers.star import StarEnhancer, apply_curves

from piebench.interfaces import Preference

pytestmark = pytest.mark.bench
SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}
ROUNDS = 5


def official_gather_step(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Residual of the official curve step: ``gather`` on the input repeated to 9 channels, summed over j."""
    b, _, h, w = x.shape
    idx = (x.repeat(1, 3, 1, 1) * (curves.shape[-1] - 1)).long().flatten(2)
    return torch.gather(curves, 2, idx).view(b, 3, 3, h, w).sum(dim=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StarEnhancer().eval()  # the paper configuration (ResNet-18 curve encoder at 224 px)


def _inputs(size: str, model: StarEnhancer):
    h, w = SIZES[size]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, h, w, generator=g)
    code = F.normalize(torch.randn(2, 512, generator=g), dim=1)
    pref = Preference(vector=code[:1], source=code[1:])
    with torch.no_grad():
        curves = model.enhancer.curves(x, model.mapping(pref.source), model.mapping(pref.vector))
    return x, pref, curves


def _official_forward(model: StarEnhancer, x: torch.Tensor, pref: Preference) -> torch.Tensor:
    curves = model.enhancer.curves(x, model.mapping(pref.source), model.mapping(pref.vector))
    return x + official_gather_step(x, curves)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("what", ["curve step", "end to end"])
def test_star_vs_official_interleaved(benchmark, model, size, what):
    x, pref, curves = _inputs(size, model)
    if what == "curve step":
        impls = {"star": lambda: apply_curves(x, curves), "official": lambda: official_gather_step(x, curves)}
    else:
        impls = {"star": lambda: model(x, pref), "official": lambda: _official_forward(model, x, pref)}
    times: dict[str, list[float]] = {k: [] for k in impls}
    outs = {}

    def one_round():
        for name, fn in impls.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)

    with torch.no_grad():
        benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    assert torch.equal(outs["star"], outs["official"])
    med = {k: statistics.median(v[-ROUNDS:]) for k, v in times.items()}
    mp = x.shape[2] * x.shape[3] / 1e6
    benchmark.extra_info.update({f"{k}_mp_per_s": mp / v for k, v in med.items()})
    benchmark.extra_info["ratio_star_vs_official"] = med["official"] / med["star"]
    assert med["star"] <= med["official"], f"star {mp / med['star']:.1f} MP/s < official {mp / med['official']:.1f}"


@pytest.mark.parametrize("impl", ["star", "official"])
def test_curve_step_1080p(benchmark, model, impl):
    x, _, curves = _inputs("1080p", model)
    fn = apply_curves if impl == "star" else official_gather_step
    benchmark.group = "star curve step 1080p"
    with torch.no_grad():
        out = benchmark(fn, x, curves)
    assert out.shape == x.shape
