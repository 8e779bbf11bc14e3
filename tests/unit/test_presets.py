"""Lightroom XMP presets: the crs: mapping, one warning for what is not emulated, synth output."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from piebench.data.fakefivek import _save, fake_photo
from piebench.data.presets import read_preset, synth
from piebench.data.retouch import retouch
from piebench.errors import UsageError

XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    crs:PresetType="Normal" crs:Version="15.0" crs:UUID="0123"
    crs:Exposure2012="+0.50" crs:Contrast2012="+20" crs:Highlights2012="-30" crs:Shadows2012="+25"
    crs:Whites2012="+10" crs:Blacks2012="-5" {wb} crs:Saturation="-10" crs:Vibrance="+30"
    crs:HueAdjustmentBlue="-20" crs:SaturationAdjustmentOrange="+15" crs:LuminanceAdjustmentGreen="-10"
    crs:SplitToningHighlightHue="50" crs:SplitToningHighlightSaturation="20" crs:SplitToningBalance="+10"
    crs:Clarity2012="+35" crs:Sharpness="40" crs:GrainAmount="0">
   <crs:Name><rdf:Alt><rdf:li xml:lang="x-default">Warm film</rdf:li></rdf:Alt></crs:Name>
   <crs:ToneCurvePV2012><rdf:Seq><rdf:li>0, 0</rdf:li><rdf:li>64, 50</rdf:li><rdf:li>192, 210</rdf:li>
    <rdf:li>255, 255</rdf:li></rdf:Seq></crs:ToneCurvePV2012>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def _preset(path, wb='crs:IncrementalTemperature="+40" crs:IncrementalTint="-10"'):
    path.write_text(XMP.replace("{wb}", wb))
    return path


def test_crs_keys_map_onto_retouch_params(tmp_path):
    p = read_preset(_preset(tmp_path / "warm.xmp"))
    q = p.params
    assert q.exposure == pytest.approx(0.5) and q.contrast == pytest.approx(0.2)
    assert (q.highlights, q.shadows, q.whites, q.blacks) == pytest.approx((-0.3, 0.25, 0.1, -0.05))
    assert (q.temperature, q.tint, q.saturation, q.vibrance) == pytest.approx((0.4, -0.1, -0.1, 0.3))
    assert (q.hue_blue, q.sat_orange, q.lum_green) == pytest.approx((-0.2, 0.15, -0.1))
    assert (q.split_highlight_hue, q.split_highlight_sat, q.split_balance) == pytest.approx((50, 0.2, 0.1))
    assert np.ravel(q.curve_points) == pytest.approx([0, 0, 64 / 255, 50 / 255, 192 / 255, 210 / 255, 1, 1])
    # Metadata is silent; effects that are not emulated are listed (zero-valued ones are not).
    assert p.unsupported == ["Clarity2012", "Sharpness"]


def test_absolute_temperature_in_kelvin(tmp_path):
    warm = read_preset(_preset(tmp_path / "a.xmp", 'crs:Temperature="7500" crs:Tint="+30"')).params
    assert warm.temperature == pytest.approx((1e6 / 5500 - 1e6 / 7500) / 100, rel=1e-6)
    assert warm.temperature > 0 and warm.tint == pytest.approx(0.2)
    cool = read_preset(_preset(tmp_path / "b.xmp", 'crs:Temperature="4000"')).params
    assert cool.temperature < 0


def test_unreadable_presets(tmp_path):
    (tmp_path / "bad.xmp").write_text("<x:xmpmeta><unclosed>")
    with pytest.raises(UsageError, match=r"bad\.xmp: not a readable XMP preset"):
        read_preset(tmp_path / "bad.xmp")
    (tmp_path / "none.xmp").write_text('<x xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>')
    with pytest.raises(UsageError, match=r"none\.xmp: no crs:"):
        read_preset(tmp_path / "none.xmp")
    (tmp_path / "curve.xmp").write_text(XMP.replace("{wb}", "").replace("<rdf:li>64, 50</rdf:li>", "<rdf:li>64</rdf:li>"))
    with pytest.raises(UsageError, match="ToneCurvePV2012 point"):
        read_preset(tmp_path / "curve.xmp")


def test_synth_writes_a_folder_dataset_with_one_warning(tmp_path):
    presets, photos = tmp_path / "presets", tmp_path / "photos"
    presets.mkdir()
    _preset(presets / "warm film.xmp")
    _preset(presets / "cool.xmp", 'crs:Temperature="4000"')
    for i in range(3):
        _save(photos / f"img{i}.jpg", fake_photo(i, 30, 50))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = synth(presets, photos, tmp_path / "out", max_size=40)
    assert len(caught) == 1 and "Clarity2012 (cool.xmp, warm film.xmp)" in str(caught[0].message)
    assert report["users"] == ["cool", "warm_film"] and report["photos"] == ["img0", "img1", "img2"]
    inp = np.asarray(Image.open(tmp_path / "out" / "input" / "img1.png")).astype(np.float32) / 255
    assert inp.shape == (24, 40, 3)
    out = np.asarray(Image.open(tmp_path / "out" / "warm_film" / "img1.png")).astype(np.float32)
    expected = retouch(inp, read_preset(presets / "warm film.xmp").params) * 255
    assert np.abs(out - expected).max() <= 1.01
    from piebench.data.folder import build_folder

    ds = build_folder(tmp_path / "out", resolution=16, test_fraction=0.0)
    assert [u.name for u in ds.users] == ["cool", "warm_film"] and len(ds.photos) == 3
    with pytest.raises(UsageError, match="no .xmp presets"):
        synth(photos, photos, tmp_path / "o2")
