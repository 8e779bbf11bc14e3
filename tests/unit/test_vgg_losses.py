"""perceptual / gram-vgg (staged VGG-16 only) and embedding-l1 (encoder held by reference)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from piebench.errors import UsageError
from piebench.interfaces import BuildContext


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def staged_vgg(torch_home):
    """A test-written vgg16-397923af.pth: torchvision VGG-16's ``features.*`` keys (the classifier's
    124 M parameters are never read, so the file leaves them out)."""
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, torch_home / "vgg16-397923af.pth")
    return features


@pytest.mark.parametrize("name", ["perceptual", "gram-vgg"])
def test_missing_vgg_weights_is_a_clear_error(registry, torch_home, name):
    with pytest.raises(UsageError) as err:
        registry.get("loss", name).create(BuildContext())
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and str(torch_home) in msg


@pytest.mark.parametrize("name", ["perceptual", "gram-vgg"])
def test_vgg_losses_with_staged_weights(registry, staged_vgg, name):
    loss = registry.get("loss", name).create(BuildContext())
    assert loss.kind == "image"
    assert torch.equal(loss.vgg.features[14].weight, staged_vgg[14].weight)  # relu3_3's conv, loaded
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 32, 32, generator=g)
    assert float(loss(target.clone(), target, None)) == 0.0
    output = (target * 0.7 + 0.1).requires_grad_(True)
    value = loss(output, target, None)
    assert value > 0
    value.backward()
    assert output.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.vgg.parameters())
    # follows .to() although it is not a submodule
    loss.to(torch.float64)
    assert loss.vgg.features[0].weight.dtype == torch.float64
    assert loss(output.detach().double(), target.double(), None) > 0


def test_perceptual_reference_value(registry, staged_vgg):
    """The loss equals the mean over relu1_2/relu2_2/relu3_3 of the L1 feature distance."""
    loss = registry.get("loss", "perceptual").create(BuildContext())
    x, y = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fx, fy = staged_vgg[:16]((x - mean) / std), staged_vgg[:16]((y - mean) / std)
        f3 = (staged_vgg[:4]((x - mean) / std) - staged_vgg[:4]((y - mean) / std)).abs().mean()
        f8 = (staged_vgg[:9]((x - mean) / std) - staged_vgg[:9]((y - mean) / std)).abs().mean()
        want = (f3 + f8 + (fx - fy).abs().mean()) / 3
        assert torch.allclose(loss(x, y, None), want, rtol=1e-5)
    with pytest.raises(UsageError, match="relu9_9"):
        registry.get("loss", "perceptual").create(BuildContext(), layers=("relu9_9",))


def test_gram_vgg_ignores_spatial_arrangement(registry, staged_vgg):
    """Gram statistics are (nearly) blind to where things are, unlike the perceptual loss."""
    gram = registry.get("loss", "gram-vgg").create(BuildContext())
    perc = registry.get("loss", "perceptual").create(BuildContext())
    x = torch.rand(1, 3, 32, 32)
    shifted = torch.roll(x, 16, dims=-1)
    darker = x * 0.5
    with torch.no_grad():
        assert gram(shifted, x, None) < 0.5 * gram(darker, x, None)
        assert perc(shifted, x, None) > perc(darker, x, None) * 0.5


# -- embedding-l1 ------------------------------------------------------------------------------
@pytest.fixture
def encoder(registry):
    torch.manual_seed(0)
    return registry.get("encoder", "pienet").create(BuildContext(image_size=32), "small")


def test_embedding_l1_keeps_encoder_params_out_of_the_loss(registry, encoder):
    loss = registry.get("loss", "embedding-l1").create(BuildContext(encoder=encoder))
    assert loss.default_weight == 0.4 and loss.kind == "image"
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert loss.encoder is encoder
    optimiser_params = list(encoder.parameters()) + list(loss.parameters())
    assert len({id(p) for p in optimiser_params}) == len(list(encoder.parameters()))


def test_embedding_l1_value_and_gradients(registry, encoder):
    loss = registry.get("loss", "embedding-l1").create(BuildContext(encoder=encoder))
    encoder.train()
    target = torch.rand(3, 3, 32, 32)
    output = (target * 0.6).requires_grad_(True)
    value = loss(output, target, None)
    encoder.eval()
    with torch.no_grad():
        want = (encoder.embed(output) - encoder.embed(target)).abs().mean()
    assert torch.allclose(value, want, atol=1e-6) and value > 0
    assert float(loss(target, target, None)) == 0.0
    assert encoder.training is False
    encoder.train()
    stats = encoder.trunk.bn1.running_mean.clone()
    loss(output, target, None).backward()
    assert torch.equal(encoder.trunk.bn1.running_mean, stats)  # evaluated in eval mode
    assert encoder.training and all(m.training for m in encoder.modules())  # modes restored
    assert output.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())  # detach_encoder (PieNet: fixed network)
    free = registry.get("loss", "embedding-l1").create(BuildContext(encoder=encoder), detach_encoder=False)
    free(output, target, None).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_embedding_l1_needs_an_encoder(registry):
    with pytest.raises(UsageError, match="encoder"):
        registry.get("loss", "embedding-l1").create(BuildContext())
