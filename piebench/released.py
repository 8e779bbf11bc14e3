"""Published models in one call: a released enhancer plus, when it needs one, its style code.

:func:`load_released` is what ``piebench enhance --enhancer NAME --weights W`` runs. An enhancer
that consumes nothing (3D-LUT, CSRNet) is returned as :func:`~piebench.pretrained.load_pretrained`
gives it, and ``--refs`` / ``--style`` are refused. An enhancer that consumes a preference
(StarEnhancer) is loaded together with the released encoder that pairs with it (the spec's
``pairs_with``, else its namesake) from the same weights, and wrapped in :class:`StyledModel`,
which computes the preference of each photo it enhances:

* target code (``Preference.vector``): from ``--refs DIR``, the L2-normalised mean of the
  reference photos' style codes, each photo area-resized to the encoder's input size first
  (the official ``fetch_embedding.py`` reads each photo as float RGB / 255 and resizes it with
  OpenCV's ``INTER_AREA`` to 224 x 224; :func:`area_resize` is that filter); or from
  ``--style K`` (1-based, as the official ``--target_id``), a style stored with the weights
  (the encoder's ``stored_styles()``: StarEnhancer's ``embeddings.npy`` centres, else its proxies);
* source code (``Preference.source``): the photo's own code, computed the same way (the
  official test uses the centre of the input style's training photos; a user's photo has no
  labelled style, so piebench uses the photo itself, as its ``star`` encoder does).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import torch
from torch import Tensor, nn

from .data.images import list_images, read_image, to_srgb
from .errors import UsageError
from .interfaces import Preference
from .plugins import get_registry
from .pretrained import load_pretrained


def _area_weights(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` weights of OpenCV's ``INTER_AREA`` along one axis when shrinking:
    each output averages the input interval ``[i s, (i + 1) s)``, ``s = n_in / n_out``, by overlap."""
    s = n_in / n_out
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for k in range(int(math.floor(a)), min(n_in, int(math.ceil(b)))):
            w[i, k] = (min(b, k + 1) - max(a, k)) / s
    return w


def _linear_area_weights(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` weights of OpenCV's ``INTER_AREA`` when an axis is enlarged (its linear
    branch with area coefficients: ``sx = floor(dx * scale)``, ``fx = (dx + 1) - (sx + 1) / scale``
    taken modulo 1 when positive, else 0; borders clamped)."""
    scale = n_in / n_out
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for dx in range(n_out):
        sx = math.floor(dx * scale)
        fx = (dx + 1) - (sx + 1) / scale
        fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        if sx < 0:
            sx, fx = 0, 0.0
        if sx >= n_in - 1:
            sx, fx = n_in - 1, 0.0
        w[dx, sx] += 1 - fx
        if fx:
            w[dx, sx + 1] += fx
    return w


def area_resize(x: Tensor, height: int, width: int) -> Tensor:
    """Resize ``x [B, C, H, W]`` like OpenCV's ``cv2.resize(..., interpolation=INTER_AREA)``.

    Shrinking on both axes: exact area averaging (every input pixel weighted by its overlap with
    the output pixel). Otherwise OpenCV's linear branch with area coefficients on both axes.
    Computed separably in float64 with sparse (banded) weights, returned in ``x``'s dtype; a 4K
    photo to 224 x 224 takes a fraction of a second on one CPU thread.
    """
    b, c, h, w = x.shape
    if (h, w) == (height, width):
        return x
    fn = _area_weights if (h >= height and w >= width) else _linear_area_weights
    wy, wx = (fn(n, m).to_sparse().to(x.device) for n, m in ((h, height), (w, width)))
    y = torch.sparse.mm(wy, x.double().permute(2, 0, 1, 3).reshape(h, -1)).view(height, b, c, w)
    y = torch.sparse.mm(wx, y.permute(3, 1, 2, 0).reshape(w, -1)).view(width, b, c, height)
    return y.permute(1, 2, 3, 0).to(x.dtype)


def style_codes(encoder: Any, images: list[Tensor]) -> Tensor:
    """Style codes ``[N, dim]`` of photos ``[3, H, W]`` (float in [0, 1]), each area-resized to the
    encoder's square ``input_size`` first (kept as is when it has none)."""
    size = getattr(encoder, "input_size", None)
    codes = []
    with torch.no_grad():
        for img in images:
            x = img[None]
            if size:
                x = area_resize(x, size, size)
            codes.append(encoder.embed(x))
    return torch.cat(codes)


def target_code(encoder: Any, images: list[Tensor]) -> Tensor:
    """The official style centre of ``images``: the L2-normalised mean of their codes, ``[1, dim]``."""
    return nn.functional.normalize(style_codes(encoder, images).mean(0, keepdim=True), p=2, dim=1)


class StyledModel(nn.Module):
    """A released preference-conditioned enhancer bound to one target style: ``model(x)``.

    ``forward(x [B, 3, H, W])`` computes each photo's source code with the encoder (area-resized
    as for the references) and runs the enhancer with ``Preference(vector=target, source=...)``.
    ``enhancer`` is the raw enhancer module, ``encoder`` the released encoder.
    """

    consumes = frozenset()

    def __init__(self, name: str, enhancer: nn.Module, encoder: nn.Module, target: Tensor, style: str) -> None:
        super().__init__()
        self.name, self.style = name, style
        self.enhancer, self.encoder = enhancer, encoder
        self.register_buffer("target", target)

    def preference(self, x: Tensor) -> Preference:
        """``Preference(vector=target, source=code of each photo of x)``."""
        source = style_codes(self.encoder, list(x))
        return Preference(vector=self.target.expand(x.shape[0], -1), source=source)

    def forward(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        return self.enhancer(x, pref if pref is not None else self.preference(x))


def _read_photos(folder: str | pathlib.Path, max_refs: int | None) -> list[Tensor]:
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--refs {folder}: folder not found")
    files = list_images(folder)[:max_refs] if max_refs else list_images(folder)
    if not files:
        raise UsageError(f"--refs {folder}: no photos (png, jpg, tif, webp, bmp) directly in the folder")
    return [torch.from_numpy(to_srgb(read_image(f))).permute(2, 0, 1).contiguous() for f in files]


def load_released(name: str, weights: str, *, configuration: str = "paper", device: str = "cpu",
                  refs: str | None = None, style: int | None = None, max_refs: int | None = None) -> nn.Module:
    """The released enhancer ``name`` ready to call as ``model(x)``, bound to a style when it needs one.

    ``refs`` (a folder of photos in the wanted style) or ``style`` (1-based index of a style
    stored with the weights) pick the target style of a preference-conditioned enhancer; an
    enhancer without a style input refuses both. Every bad combination is a one-line UsageError.
    """
    if refs and style is not None:
        raise UsageError("give either --refs STYLE_DIR or --style K, not both")
    if style is not None and style < 1:
        raise UsageError(f"--style {style}: styles are numbered from 1")
    model = load_pretrained(name, weights, configuration=configuration, device=device)
    if not model.consumes:
        if refs or style is not None:
            raise UsageError(f"enhancer '{name}' has no style input; drop --refs/--style "
                             "(to personalise, train a run and use --run with --refs)")
        return model
    registry = get_registry()
    spec = registry.get("enhancer", name)
    encoders = registry.names("encoder")
    enc_name = next((n for n in (spec.pairs_with, name) if n in encoders
                     and callable(registry.get("encoder", n).load_weights)), None)
    if enc_name is None:
        raise UsageError(f"enhancer '{name}' needs a preference and no released encoder pairs with it; "
                         "train a run and use --run with --refs")
    if not refs and style is None:
        raise UsageError(f"enhancer '{name}' needs a target style: --refs STYLE_DIR (photos in that style) "
                         "or --style K (a style stored with the weights)")
    encoder = load_pretrained(enc_name, weights, configuration=configuration, device=device, kind="encoder")
    if style is not None:
        stored = getattr(encoder, "stored_styles", None)
        table = stored() if callable(stored) else None
        if table is None or len(table) == 0:
            raise UsageError(f"the weights {weights} store no styles; use --refs STYLE_DIR")
        if style > len(table):
            raise UsageError(f"--style {style}: the weights {weights} store {len(table)} styles (1..{len(table)})")
        target, label = table[style - 1:style].to(device), f"stored style {style}"
    else:
        target, label = target_code(encoder, [p.to(device) for p in _read_photos(refs, max_refs)]), f"refs {refs}"
    return StyledModel(name, model.enhancer, encoder, target, label).to(device).eval()
