"""Masked Style Modeling (Kosugi & Yamasaki): a Transformer predicts the style for the query image.

For each reference *pair* (input photo, the user's retouch) a style vector
``s = f(retouched) - f(input)`` comes from a ResNet-18 style encoder ``f`` (global average of
the last stage, its final ReLU skipped) and a content vector ``c`` from a second ResNet-18 (last
stage pooled to 2x2, 1x1 conv to 512/4 channels, flattened). Tokens ``[s || c]`` of the
references plus one masked token ``[m || c(query)]`` (``m`` a learned unit vector) go through a
Transformer encoder without positional encoding (so the order of the references does not
matter); a linear layer reads the query token out as the predicted style, which is the
preference vector. Padded references are removed through the key-padding mask and never reach
the CNNs.

Paper sizes (d_model 1024, 8 heads, 6 layers, PyTorch's default feed-forward 2048, dropout 0.1):
transformer + read-out 50,924,032 parameters (docs/models.md: 50.92 M). The official code builds
full torchvision ResNet-18s whose 1000-class classifier is never used; piebench leaves that
dead layer (513,000 parameters) out, so style encoder 11,176,512 (+ 513,000 = 11,689,512,
the official 11.69 M) and content encoder 11,242,048 (+ 513,000 = 11,755,048, the
official 11.76 M). The masked token adds 512. The official recipe trains the style encoder with the
enhancer first (stage 1) and regresses PCA-whitened styles in stage 2; here the encoder is
trained end to end with the enhancer (``metric_loss`` None), and the read-out predicts the
style directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

from ._resnet import PAPER_WIDTHS, ResNetTrunk, load_resnet18, per_valid


class ContentEncoder(nn.Module):
    """ResNet-18, last stage pooled to ``size x size``, 1x1 conv to ``width / size^2`` channels."""

    def __init__(self, widths: tuple[int, ...], size: int = 2) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(widths)
        width = self.trunk.out_channels
        if width % (size * size):
            raise UsageError(f"content width {width} is not divisible by {size}x{size}; change widths")
        self.pool = nn.AdaptiveAvgPool2d(size)
        self.conv1x1 = nn.Conv2d(width, width // (size * size), 1, bias=False)
        self.out_channels = width

    def forward(self, images: Tensor) -> Tensor:
        return self.conv1x1(self.pool(self.trunk.stages(images)[-1])).flatten(1)


class MaskedStyleEncoder(Encoder):
    """Style and content ResNet-18s, a masked-token Transformer, a linear read-out to ``dim``."""

    requires = frozenset({"targets", "inputs"})
    provides = frozenset({"vector"})
    metric_loss = None

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, d_model: int = 1024, heads: int = 8,
                 layers: int = 6, feedforward: int = 2048, dropout: float = 0.1, content_size: int = 2) -> None:
        super().__init__()
        self.style = ResNetTrunk(tuple(widths))
        self.content = ContentEncoder(tuple(widths), content_size)
        style_dim, content_dim = self.style.out_channels, self.content.out_channels
        self.dim = style_dim
        self.token_in = (nn.Identity() if style_dim + content_dim == d_model
                         else nn.Linear(style_dim + content_dim, d_model))
        self.mask_token = nn.Parameter(F.normalize(torch.randn(style_dim), dim=0))
        layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.readout = nn.Linear(d_model, style_dim)

    def embed(self, images: Tensor) -> Tensor:
        """The style encoder's feature ``f(image)`` ``[M, dim]`` (what style vectors are differences of)."""
        return self.style.pooled(images)

    def _pair_tokens(self, pairs: Tensor) -> Tensor:
        """Tokens ``[M, style + content]`` of pairs ``[M, 6, H, W]`` (input on channels 0-2, retouch 3-5)."""
        inputs, targets = pairs[:, :3], pairs[:, 3:]
        m = pairs.shape[0]
        feats = self.style.pooled(torch.cat([inputs, targets]))
        return torch.cat([feats[m:] - feats[:m], self.content(inputs)], 1)

    def forward(self, refs: RefSet) -> Preference:
        """The Transformer's style prediction for ``refs.query`` from the valid reference pairs."""
        if refs.inputs is None:
            raise UsageError(
                "encoder 'msm' needs reference pairs: RefSet.inputs (the references before retouching) "
                "is missing; use a dataset/sampler that provides reference inputs")
        if refs.query is None:
            raise UsageError("encoder 'msm' predicts the style of the query image: RefSet.query is missing")
        mask = refs.valid_mask()
        b = mask.shape[0]
        pairs = torch.cat([refs.inputs, refs.targets], 2)  # [B, N, 6, H, W]
        tokens = per_valid(self._pair_tokens, pairs, mask)
        query = torch.cat([F.normalize(self.mask_token, dim=0).expand(b, -1), self.content(refs.query)], 1)
        seq = self.token_in(torch.cat([tokens, query[:, None]], 1))
        padding = torch.cat([~mask, mask.new_zeros(b, 1)], 1)
        out = self.transformer(seq, src_key_padding_mask=padding)
        return Preference(vector=self.readout(out[:, -1]))


def build_msm(ctx: BuildContext, widths: tuple[int, ...] = PAPER_WIDTHS, d_model: int = 1024,
              heads: int = 8, layers: int = 6, feedforward: int = 2048, dropout: float = 0.1,
              content_size: int = 2) -> MaskedStyleEncoder:
    """Masked Style Modeling's encoder; ImageNet ResNet-18 weights for both CNNs when ``ctx.pretrained``."""
    enc = MaskedStyleEncoder(widths, d_model, heads, layers, feedforward, dropout, content_size)
    style = load_resnet18(enc.style, ctx)
    load_resnet18(enc.content.trunk, ctx)
    enc.pretrained_from = style if not ctx.pretrained else f"{style} (style and content encoders)"
    return enc


@hookimpl
def register_encoders(register):
    register(
        "msm", build=build_msm,
        description="Masked Style Modeling: Transformer over (style, content) tokens of reference pairs "
                    "predicts the query's style",
        paper="Kosugi & Yamasaki, Personalized Image Enhancement Featuring Masked Style Modeling, IEEE TCSVT 2023 (official code: satoshi-kosugi/masked-style-modeling)",
        configurations={
            "small": {"widths": (8, 16, 32, 64), "d_model": 128, "heads": 4, "layers": 2,
                      "feedforward": 256, "dropout": 0.1, "content_size": 2},
            "paper": {"widths": PAPER_WIDTHS, "d_model": 1024, "heads": 8, "layers": 6,
                      "feedforward": 2048, "dropout": 0.1, "content_size": 2},
        },
        version="1", requires=["targets", "inputs"], meta={"metric_loss": None, "pretrained_weights": "resnet18-f37072fd.pth"})
