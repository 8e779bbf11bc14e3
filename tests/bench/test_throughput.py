"""pytest-benchmark suite: enhancers' forward pass, the training sampler and the metrics.

Outside the default run. Run it with::

    pytest tests/bench -m bench --benchmark-enable -n 0

(add ``--benchmark-json=bench.json`` to keep the numbers). ``piebench bench`` measures the
per-size throughput table; this suite tracks regressions of the hot paths at one size.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.bench

SIZE = 256


def _enhancers() -> list[str]:
    from piebench.plugins import get_registry

    return get_registry().names("enhancer")


@pytest.mark.parametrize("name", _enhancers())
def test_enhancer_forward(benchmark, name):
    from piebench.bench import build_for_bench, random_refs

    encoder, enhancer, _, _ = build_for_bench(name)
    enhancer.eval()
    with torch.no_grad():
        pref = encoder.eval()(random_refs(3, 64)) if encoder is not None else None
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            return enhancer(x, pref)

    out = benchmark(forward)
    assert out.shape == x.shape and torch.isfinite(out).all()
    benchmark.extra_info["megapixels"] = SIZE * SIZE / 1e6


@pytest.fixture(scope="module")
def smoke_dataset():
    from piebench.build import build_dataset
    from piebench.config import resolve
    from piebench.plugins import get_registry

    return build_dataset(resolve("smoke", encoder="angular", enhancer="sa"), get_registry())


@pytest.mark.parametrize("pairs", [False, True])
def test_sampler(benchmark, smoke_dataset, pairs):
    from piebench.data.sampler import TrainSampler

    sampler = TrainSampler(smoke_dataset, batch_users=4, per_user=2, refs=3, pairs=pairs, seed=0)
    batch = benchmark(sampler.sample)
    assert batch.input.shape[0] == 8 and batch.refs.targets.shape[1] == 3
    assert (batch.refs.inputs is not None) == pairs


@pytest.mark.parametrize("metric", ["psnr", "ssim", "delta_e", "psnr_q8", "ssim_down"])
def test_metric(benchmark, metric):
    from piebench.metrics import fidelity

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(8, 3, SIZE, SIZE, generator=gen), torch.rand(8, 3, SIZE, SIZE, generator=gen)
    values = benchmark(getattr(fidelity, metric), a, b)
    assert values.shape == (8,) and torch.isfinite(values).all()
