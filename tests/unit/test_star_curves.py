"""star's curve step: the chunked inference lookup equals the official gather-and-sum bit for bit."""

from __future__ import annotations

import piebench_plugins.enhancers.star as star
import pytest
import torch
from piebench_plugins.enhancers.star import StarEnhancer, apply_curves

from piebench.interfaces import Preference


def official_gather_step(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """The paper's curve step as the official code does it: the input repeated to 9 channels,
    scaled to curve indices (truncated), one ``gather`` on ``[B, 9, depth]``, summed over j."""
    b, _, h, w = x.shape
    idx = (x.clamp(0, 1).repeat(1, 3, 1, 1) * (curves.shape[-1] - 1)).long().flatten(2)
    return torch.gather(curves, 2, idx).view(b, 3, 3, h, w).sum(dim=2)


def previous_step(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """piebench's previous lookup: per input channel an ``index_select`` of rows of ``[B * depth, 3]``."""
    b, _, h, w = x.shape
    depth = curves.shape[-1]
    tables = curves.view(b, 3, 3, depth).permute(0, 2, 3, 1)
    offset = (torch.arange(b) * depth).view(b, 1)
    out = None
    for j in range(3):
        idx = (x[:, j].clamp(0, 1) * (depth - 1)).long().flatten(1) + offset
        vals = tables[:, j].reshape(b * depth, 3).index_select(0, idx.flatten())
        out = vals if out is None else out + vals
    return out.view(b, h * w, 3).transpose(1, 2).reshape(b, 3, h, w)


def awkward_inputs(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    edge = torch.tensor([0.0, 1.0, 1 - 1e-7, 254.9999 / 255, 1 / 255, -0.3, 1.7, 0.5])
    x.view(b, 3, -1)[:, :, :edge.numel()] = edge
    return x


@pytest.mark.parametrize("chunk", [star.CHUNK, 97])  # 97: many chunks, the last one partial
def test_inference_lookup_equals_official_gather_and_previous_code(monkeypatch, chunk):
    monkeypatch.setattr(star, "CHUNK", chunk)
    x = awkward_inputs(3, 19, 29, 0)
    curves = torch.randn(3, 9, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = apply_curves(x, curves)
    assert torch.equal(got, official_gather_step(x, curves))
    assert torch.equal(got, previous_step(x, curves))
    # each output channel reads its own three curves: a one-hot curve set isolates one term
    one_hot = torch.zeros(3, 9, 256)
    one_hot[:, 7] = torch.linspace(0, 1, 256)  # output B from input G, identity curve
    with torch.no_grad():
        iso = apply_curves(x, one_hot)
    torch.testing.assert_close(iso[:, 2], torch.floor(x[:, 1].clamp(0, 1) * 255) / 255, rtol=0, atol=1e-7)
    assert iso[:, :2].abs().max() == 0


def test_training_lookup_is_equal_and_gives_the_same_gradient():
    x = awkward_inputs(2, 11, 13, 2)
    curves = torch.randn(2, 9, 256, generator=torch.Generator().manual_seed(3), requires_grad=True)
    ref = curves.detach().clone().requires_grad_(True)
    got, want = apply_curves(x, curves), official_gather_step(x, ref)
    assert got.requires_grad and torch.equal(got, want)
    w = torch.rand(got.shape, generator=torch.Generator().manual_seed(4))
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(curves.grad, ref.grad, rtol=0, atol=1e-6)


def test_end_to_end_output_is_x_plus_the_official_residual():
    model = StarEnhancer(code_dim=64, mapping_width=64, knots=16, layers=(1, 1, 1, 2), planes=(16, 32, 64, 64),
                         pool_size=64).eval()
    x = awkward_inputs(2, 40, 56, 5).clamp(0, 1)
    code = torch.nn.functional.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(6)), dim=1)
    pref = Preference(vector=code, source=code.flip(0))
    before = x.clone()
    with torch.no_grad():
        out = model(x, pref)
        sa, sb = model.mapping(pref.source), model.mapping(pref.vector)
        curves = model.enhancer.curves(x, sa, sb)
    assert torch.equal(out, x + official_gather_step(x, curves))
    assert torch.equal(x, before) and not torch.equal(out, x)  # the in-place add never touches the input
