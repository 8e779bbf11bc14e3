"""The metric-learning encoders: one backbone per loss name, staged ResNet-18 weights, masking."""

from __future__ import annotations

import pytest
import torch
from piebench_plugins.encoders.metric import METRIC_LOSSES, RESNET18_FILE
from torchvision.models import resnet18

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, RefSet


def test_one_encoder_per_metric_loss(registry):
    for name in METRIC_LOSSES:
        spec = registry.get("encoder", name)
        enc = spec.create(BuildContext(), "small")
        assert enc.metric_loss == name == spec.meta["metric_loss"]
        assert registry.has("loss", name), f"encoder '{name}' names a loss that is not registered"
        assert spec.paper


def test_preference_is_normalised_mean_of_valid_embeddings(registry):
    enc = registry.get("encoder", "angular").create(BuildContext(), "small").eval()
    refs = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        pref = enc(RefSet(refs, mask=mask))
        emb = enc.embed(refs.flatten(0, 1)).view(2, 3, -1)
    expected0 = torch.nn.functional.normalize(emb[0, [0, 2]].mean(0), dim=0)
    expected1 = torch.nn.functional.normalize(emb[1].mean(0), dim=0)
    torch.testing.assert_close(pref.vector, torch.stack([expected0, expected1]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 3))
    assert pref.maps[0].shape == (2, 3, 64, 8, 8)  # stride 8
    assert pref.maps[0][0, 1].abs().sum() == 0  # padded reference: zero map
    assert torch.equal(pref.mask, mask)


def test_pretrained_needs_the_staged_file(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=RESNET18_FILE) as err:
        registry.get("encoder", "triplet").create(BuildContext(pretrained=True), "paper")
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value)


def test_pretrained_loads_torchvision_weights(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    staged = resnet18(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(staged, tmp_path / "hub" / "checkpoints" / RESNET18_FILE)
    enc = registry.get("encoder", "triplet").create(BuildContext(pretrained=True), "paper")
    torch.testing.assert_close(enc.trunk.stem[0].weight, staged["conv1.weight"])
    torch.testing.assert_close(enc.trunk.layer4[1].bn2.running_var, staged["layer4.1.bn2.running_var"])
    assert RESNET18_FILE in enc.pretrained_from
    assert enc.dim == 512 and enc.map_channels == (128,)


def test_unknown_backbone_is_a_usage_error(registry):
    with pytest.raises(UsageError, match="backbone"):
        registry.get("encoder", "angular").create(BuildContext(), "small", backbone="vgg")
