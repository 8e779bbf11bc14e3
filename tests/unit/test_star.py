"""StarEnhancer: official key names/shapes/counts, official checkpoint format, curves, dual AdaIN."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.nn.functional as F
from piebench_plugins.encoders.star import PROXY_SCALE, StarEncoder, build_star_encoder, load_official_encoder
from piebench_plugins.enhancers.star import StarEnhancer, apply_curves, build_star, load_official
from torch import nn

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference, RefSet

SHAPES = json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "starenhancer_state_dict_shapes.json")
                    .read_text())["files"]
SMALL_ENC = {"dim": 64, "layers": [1, 1, 1, 1], "planes": [16, 32, 64, 64], "input_size": None}
SMALL_ENH = {"code_dim": 64, "mapping_width": 64, "knots": 16, "layers": [1, 1, 1, 2],
             "planes": [16, 32, 64, 64], "pool_size": 64}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def official_shapes(module: nn.Module) -> dict[str, list[int]]:
    """The module's state_dict as an official DataParallel checkpoint would list it."""
    return {"module." + k: list(v.shape) for k, v in module.state_dict().items()}


def save_official(module: nn.Module, path: pathlib.Path) -> None:
    """Write ``module`` the way the official training scripts do."""
    torch.save({"state_dict": {"module." + k: v.clone() for k, v in module.state_dict().items()}}, path)


def randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (the Fixup init zeroes conv2 and the scalar biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def prefs(batch: int, dim: int, seed: int) -> Preference:
    g = torch.Generator().manual_seed(seed)
    unit = lambda: F.normalize(torch.randn(batch, dim, generator=g), dim=1)  # noqa: E731
    return Preference(vector=unit(), source=unit())


def test_paper_encoder_matches_official_stylish_with_10_styles():
    # The official ``Stylish`` module holds the encoder *and* the 10 class proxies, so the
    # 23,968,563 of the official code (docs/models.md) is reproduced by the paper configuration built with num_users=10.
    enc = build_star_encoder(BuildContext(num_users=10))
    assert n_params(enc) == 23_968_563
    assert n_params(enc.encoder) == 23_968_563 - 512 * 10
    assert official_shapes(enc) == SHAPES["stylish.pth.tar (Stylish, 10 styles)"]
    assert enc.dim == 512 and enc.provides == frozenset({"vector", "source"}) and enc.metric_loss == "normsoftmax"


def test_paper_enhancer_matches_official_checkpoint_layout():
    model = build_star(BuildContext())
    assert n_params(model.mapping) == 2_626_566
    assert n_params(model.enhancer) == 11_462_459
    assert official_shapes(model.mapping) == SHAPES["mapping.pth.tar"]
    assert official_shapes(model.enhancer) == SHAPES["enhancer.pth.tar (SlimEnhancer)"]
    assert model.consumes == frozenset({"vector", "source"})


def test_official_format_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    src = StarEnhancer()
    randomise(src, 1)
    save_official(src.mapping, tmp_path / "mapping.pth.tar")
    save_official(src.enhancer, tmp_path / "enhancer.pth.tar")
    dst = StarEnhancer()
    load_official(dst, str(tmp_path / "mapping.pth.tar"), str(tmp_path / "enhancer.pth.tar"))
    seen = []
    dst.enhancer.encoder.conv1.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    x, p = torch.rand(2, 3, 36, 52), prefs(2, 512, 2)
    with torch.no_grad():
        a, b = src.eval()(x, p), dst.eval()(x, p)
    assert a.shape == x.shape
    assert seen == [(2, 3, 224, 224)]  # the curve CNN sees the official 224 x 224 pooled image
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - x).abs().mean() > 1e-3

    with pytest.raises(UsageError, match="enhancer.pth.tar does not fit Mapping"):  # swapped files
        load_official(dst, str(tmp_path / "enhancer.pth.tar"), str(tmp_path / "mapping.pth.tar"))
    with pytest.raises(UsageError, match="nothing.pth.tar"):
        load_official(dst, str(tmp_path / "nothing.pth.tar"), str(tmp_path / "enhancer.pth.tar"))


def test_encoder_official_format_round_trip(tmp_path):
    src = StarEncoder(3, **SMALL_ENC)
    randomise(src, 3)
    save_official(src, tmp_path / "stylish.pth.tar")
    dst = StarEncoder(3, **SMALL_ENC)
    load_official_encoder(dst, str(tmp_path / "stylish.pth.tar"))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(src.embed(x), dst.embed(x), rtol=0, atol=0)
    assert "stylish.pth.tar" in dst.pretrained_from


def official_curve_residual(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """The official SlimEnhancer lookup, re-derived: gather on the input repeated to 9 channels."""
    b, _, h, w = x.shape
    idx = (x.repeat(1, 3, 1, 1) * (curves.shape[-1] - 1)).long().flatten(2)
    return torch.gather(curves, 2, idx).view(b, 3, 3, h, w).sum(dim=2)


def test_curves_are_looked_up_per_pixel_like_the_official_code():
    torch.manual_seed(4)
    x = torch.rand(2, 3, 17, 23)
    x[0, :, 0, 0] = 1.0  # the top entry of each curve
    x[1, :, 0, 0] = 0.0
    curves = torch.randn(2, 9, 256)
    torch.testing.assert_close(apply_curves(x, curves), official_curve_residual(x, curves), rtol=0, atol=1e-6)
    # channel i of the output reads curves 3i..3i+2 of channels R, G, B
    one_hot = torch.zeros(2, 9, 256)
    one_hot[:, 5] = torch.linspace(0, 1, 256)  # output G from input B, identity curve
    torch.testing.assert_close(apply_curves(x, one_hot)[:, 1], torch.floor(x[:, 2] * 255) / 255)
    assert apply_curves(x, one_hot)[:, [0, 2]].abs().max() == 0


def test_dual_adain_is_identity_when_source_equals_target():
    model = StarEnhancer(**SMALL_ENH).eval()
    randomise(model, 5)
    x = torch.rand(2, 3, 40, 48)
    code = F.normalize(torch.randn(2, 64), dim=1)
    enc = model.enhancer.encoder
    with torch.no_grad():
        out = model(x, Preference(vector=code, source=code))
        feats = enc.layer3(enc.layer2(enc.layer1(enc.stem(F.adaptive_avg_pool2d(x, (64, 64))))))
        for block in enc.layer4:
            feats = block(feats)  # no modulation
        params = enc.fc(enc.gap(feats).flatten(1) + enc.bias2).view(2, 9, 16, 1)
        curves = F.interpolate(params, (256, 1), mode="bicubic", align_corners=True).squeeze(3)
        expected = x + official_curve_residual(x, curves)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_dual_adain_formula():
    model = StarEnhancer(**SMALL_ENH)
    sa = [[torch.full((1, 64, 1, 1), 0.5), torch.full((1, 64, 1, 1), 0.2)]] * 2
    sb = [[torch.full((1, 64, 1, 1), 0.25), torch.full((1, 64, 1, 1), 0.7)]] * 2
    seen = []
    block = model.enhancer.encoder.layer4[0]
    orig = block.forward
    block.forward = lambda x, affine=None: (seen.append(affine), orig(x, affine))[1]
    model.enhancer(torch.rand(1, 3, 64, 64), sa, sb)
    alpha, beta = seen[0]
    f = torch.tensor(3.0)  # sigma_b (F - mu_a) / sigma_a + mu_b
    torch.testing.assert_close(f * alpha + beta, 0.25 * (f - 0.2) / 0.5 + 0.7 + 0 * alpha)


def test_different_preferences_give_different_outputs():
    model = StarEnhancer(**SMALL_ENH).eval()
    randomise(model, 6)
    x = torch.rand(2, 3, 48, 64)
    p, q = prefs(2, 64, 7), prefs(2, 64, 8)
    with torch.no_grad():
        a, a2 = model(x, p), model(x, p)
        b = model(x, p.replace(vector=q.vector))
        c = model(x, p.replace(source=q.source))
    torch.testing.assert_close(a, a2)
    assert (a - b).abs().mean() > 1e-4 and (a - c).abs().mean() > 1e-4
    with pytest.raises(UsageError, match="source"):
        model(x, Preference(vector=p.vector))


def test_curves_run_at_full_resolution_and_the_cnn_at_pool_size():
    model = StarEnhancer(**SMALL_ENH).eval()
    seen = []
    model.enhancer.encoder.conv1.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    x = torch.rand(1, 3, 2160, 3840)
    with torch.no_grad():
        y = model(x, prefs(1, 64, 9))
    assert seen == [(1, 3, 64, 64)]
    assert y.shape == x.shape


def test_encoder_preference_is_normalised_mean_and_source_is_query():
    enc = StarEncoder(4, **SMALL_ENC).eval()
    randomise(enc, 11)
    targets, query, inputs = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 3, 32, 32)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        pref = enc(RefSet(targets=targets, mask=mask, query=query))
        emb = enc.embed(targets.flatten(0, 1)).view(2, 3, -1)
        torch.testing.assert_close(pref.vector[0], F.normalize(emb[0, :2].mean(0), dim=0))
        torch.testing.assert_close(pref.vector[1], F.normalize(emb[1].mean(0), dim=0))
        torch.testing.assert_close(pref.source, enc.embed(query))
        torch.testing.assert_close(pref.source.norm(dim=1), torch.ones(2))
        fallback = enc(RefSet(targets=targets, inputs=inputs, mask=mask))
        emb_in = enc.embed(inputs.flatten(0, 1)).view(2, 3, -1)
        torch.testing.assert_close(fallback.source[0], F.normalize(emb_in[0, :2].mean(0), dim=0))
    assert pref.provided() == frozenset({"vector", "source"})
    with pytest.raises(UsageError, match="RefSet.query"):
        enc(RefSet(targets=targets))


def test_encoder_input_size_and_proxy_logits():
    enc = StarEncoder(10).eval()
    seen = []
    enc.encoder.conv1.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        e = enc.embed(torch.rand(1, 3, 300, 200))
        logits = enc.proxy_logits(F.normalize(enc.proxy.fc.t(), dim=1))
    assert seen == [(1, 3, 224, 224)] and e.shape == (1, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(1))
    torch.testing.assert_close(logits.diagonal(), torch.full((10,), PROXY_SCALE))
    assert PROXY_SCALE == 20.0


def test_registry_configurations(registry):
    enc_spec, enh_spec = registry.get("encoder", "star"), registry.get("enhancer", "star")
    assert enc_spec.params("small") == SMALL_ENC and enh_spec.params("small") == SMALL_ENH
    enc = enc_spec.create(BuildContext(num_users=3), "small")
    enh = enh_spec.create(BuildContext(encoder=enc), "small")
    refs = RefSet(targets=torch.rand(2, 2, 3, 64, 64), query=torch.rand(2, 3, 64, 64))
    out = enh(refs.query, enc(refs))
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    out.mean().backward()
    assert enc.encoder.conv1.weight.grad is not None and enh.mapping.mlp_in[0].weight.grad is not None
