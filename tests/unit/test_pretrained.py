"""piebench.load_pretrained: released weights through the registry, ready to call on images."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_lut3d import astronaut, reference_lookup

import piebench
from piebench.errors import UsageError
from piebench.interfaces import Preference
from piebench.pretrained import load_into, read_state_dict

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "data" / "3dlut-srgb"


def test_lut3d_released_model_matches_the_independent_lookup():
    model = piebench.load_pretrained("lut3d", str(WEIGHTS))
    assert not model.training
    img = astronaut()
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = model(x)[0].permute(1, 2, 0).numpy()
        w = model.enhancer.classifier(x)[0].double().numpy()
    tables = torch.load(WEIGHTS / "LUTs.pth", map_location="cpu")
    lut = sum(w[k] * tables[str(k)]["LUT"].double().numpy() for k in range(3))
    np.testing.assert_allclose(out, reference_lookup(img, lut), atol=1e-5, rtol=0)
    # the mixing weights come from the released classifier, not from a fresh initialisation
    state = torch.load(WEIGHTS / "classifier.pth", map_location="cpu")
    torch.testing.assert_close(model.enhancer.classifier.model[1].weight, state["model.1.weight"])


def test_conditioned_enhancer_needs_a_preference(tmp_path):
    from piebench_plugins.enhancers.star import StarEnhancer

    src = StarEnhancer(code_dim=64, mapping_width=64, knots=16, layers=(1, 1, 1, 2), planes=(16, 32, 64, 64),
                       pool_size=64)  # the 'small' configuration
    for part, name in ((src.mapping, "mapping.pth.tar"), (src.enhancer, "enhancer.pth.tar")):
        torch.save({"state_dict": {"module." + k: v for k, v in part.state_dict().items()}}, tmp_path / name)
    model = piebench.load_pretrained("star", str(tmp_path), configuration="small")
    x = torch.rand(1, 3, 24, 32)
    with pytest.raises(UsageError, match="needs a Preference.*source, vector"):
        model(x)
    code = F.normalize(torch.randn(1, 64), dim=1)
    with torch.no_grad():
        out = model(x, Preference(vector=code, source=code))
        torch.testing.assert_close(out, src.eval()(x, Preference(vector=code, source=code)), rtol=0, atol=0)


def test_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(UsageError, match="unknown enhancer 'lut3e'.*did you mean 'lut3d'"):
        piebench.load_pretrained("lut3e", str(WEIGHTS))
    with pytest.raises(UsageError, match="no configuration 'huge'"):
        piebench.load_pretrained("lut3d", str(WEIGHTS), configuration="huge")
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match="nowhere"):
        piebench.load_pretrained("lut3d", str(missing))
    (tmp_path / "classifier.pth").write_bytes(b"\x00garbage")
    (tmp_path / "LUTs.pth").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError) as err:
        piebench.load_pretrained("lut3d", str(tmp_path))
    assert "classifier.pth" in str(err.value) and "\n" not in str(err.value)
    half = tmp_path / "half"
    half.mkdir()
    torch.save(torch.load(WEIGHTS / "classifier.pth", map_location="cpu"), half / "classifier.pth")
    with pytest.raises(UsageError, match=r"not found: .*half/LUTs.pth"):
        piebench.load_pretrained("lut3d", str(half))
    with pytest.raises(UsageError, match="no released weights"):
        piebench.load_pretrained("hdrnet", str(WEIGHTS))


def test_unconditioned_model_checks_its_input():
    model = piebench.load_pretrained("lut3d", str(WEIGHTS))
    with pytest.raises(UsageError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 16, 16))


def test_state_dict_helpers(tmp_path):
    net = torch.nn.Linear(3, 2)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "w.pth.tar")
    state = read_state_dict(tmp_path / "w.pth.tar")
    assert set(state) == {"weight", "bias"}
    other = torch.nn.Linear(3, 2)
    load_into(other, state, tmp_path / "w.pth.tar")
    torch.testing.assert_close(other.weight, net.weight)
    with pytest.raises(UsageError, match=r"w.pth.tar does not fit Linear: 1 key\(s\) of another shape .*\(2, 3\)"):
        load_into(torch.nn.Linear(4, 2), state, tmp_path / "w.pth.tar")
    with pytest.raises(UsageError, match=r"1 unexpected key\(s\)"):
        load_into(torch.nn.Linear(3, 2, bias=False), state, tmp_path / "w.pth.tar")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UsageError, match="list.pth does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pth")
