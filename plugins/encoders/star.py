"""StarEnhancer's style encoder (Song et al., ICCV 2021; official code IDKiro/StarEnhancer).

``StyleEncoder``: a ResNet of Fixup-style residual blocks without batch normalisation
(scalar biases before each conv and activation, PReLU, a scalar ``scale`` on the residual
branch, zero-initialised second conv), [4, 4, 4, 4] blocks of widths 64/128/256/512 in the
``paper`` configuration, average + max global pooling summed, a linear layer and L2
normalisation. ``StarEncoder`` holds it as ``encoder`` next to ``proxy``, the normalised-softmax
class proxies ``[dim, num_users]`` (scale 20 = temperature 0.05), exactly like the official
``Stylish`` module: its state_dict keys are the official ``stylish.pth.tar`` keys without the
``module.`` prefix, and the ``paper`` configuration built with ``num_users=10`` has the official
23,968,563 parameters (23,963,443 in the encoder + 5,120 in the proxies).

Preference:
  vector: the L2-normalised mean embedding of the user's valid retouched references (the
    target style code; the official code uses the normalised centroid of a style's embeddings).
  source: the code of the *input* image's own style, used by the ``star`` enhancer's dual AdaIN.
    The official code uses the normalised centroid of the input style's training embeddings;
    piebench has no labelled "input style", so ``source`` is the normalised embedding of the
    image being enhanced (``RefSet.query``). When the sampler passes no query but reference
    pairs (``RefSet.inputs``), the normalised mean embedding of the references' inputs is used
    instead (the official recipe, with the references as the style's sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet
from piebench.pretrained import load_into, read_state_dict

#: Normalised-softmax scale of the official training script (``F.cross_entropy(sim * 20, y)``).
PROXY_SCALE = 20.0


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class FixupBlock(nn.Module):
    """Fixup residual block without normalisation (official ``ResBlk``).

    ``forward(x, affine=None)``: with ``affine = (alpha, beta)`` the first conv's output is
    modulated as ``out * alpha + beta`` before the second activation (the official
    ``DualAdainResBlk``); parameter names and shapes are the same either way.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.actv1 = nn.PReLU()
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.conv1 = conv3x3(cin, cout, stride)
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.actv2 = nn.PReLU()
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.conv2 = conv3x3(cout, cout)
        self.scale = nn.Parameter(torch.ones(1))
        self.downsample = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor, affine: tuple[Tensor, Tensor] | None = None) -> Tensor:
        out = self.actv1(x + self.bias1a)
        identity = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out + self.bias1b)
        if affine is not None:
            out = out * affine[0] + affine[1]
        out = self.actv2(out + self.bias2a)
        out = self.conv2(out + self.bias2b)
        return out * self.scale + identity


class FixupResNet(nn.Module):
    """Stem (7x7/2 conv, scalar bias, PReLU, 3x3/2 max pool) and four stages of :class:`FixupBlock`.

    Stages are ``layer1..layer4`` (``nn.Sequential`` of blocks, or ``nn.ModuleList`` when
    ``last_stage_list`` so that the last stage's blocks can take per-block modulation).
    Subclasses add the head. Initialisation follows the official ``_reset_params``.
    """

    def __init__(self, layers: Sequence[int], planes: Sequence[int], last_stage_list: bool = False) -> None:
        super().__init__()
        if len(layers) != 4 or len(planes) != 4 or min(layers) < 1:
            raise UsageError(f"star: 'layers' and 'planes' need 4 positive entries, got {list(layers)}, {list(planes)}")
        self.layers = [int(n) for n in layers]
        self.planes = [int(p) for p in planes]
        self.num_layers = sum(self.layers)
        self.conv1 = nn.Conv2d(3, self.planes[0], 7, 2, 3, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.actv = nn.PReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = self.planes[0]
        for i, (n, p) in enumerate(zip(self.layers, self.planes, strict=True)):
            blocks = [FixupBlock(cin, p, 1 if i == 0 else 2)] + [FixupBlock(p, p) for _ in range(n - 1)]
            cin = p
            stage = nn.ModuleList(blocks) if (last_stage_list and i == 3) else nn.Sequential(*blocks)
            self.add_module(f"layer{i + 1}", stage)

    def reset_parameters(self) -> None:
        """The official Fixup initialisation (conv1 scaled by depth^-1/2, conv2 zero, xavier fc)."""
        for m in self.modules():
            if isinstance(m, FixupBlock):
                w = m.conv1.weight
                std = np.sqrt(2 / (w.shape[0] * np.prod(w.shape[2:]))) * self.num_layers ** (-0.5)
                nn.init.normal_(w, 0.0, float(std))
                nn.init.zeros_(m.conv2.weight)
                if m.downsample is not None:
                    d = m.downsample.weight
                    nn.init.normal_(d, 0.0, float(np.sqrt(2 / (d.shape[0] * np.prod(d.shape[2:])))))
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """conv1 -> PReLU(x + bias1) -> max pool."""
        return self.maxpool(self.actv(self.conv1(x) + self.bias1))


class StyleEncoder(FixupResNet):
    """The official ``StyleEncoder``: Fixup ResNet -> (avg + max pool) -> fc -> L2 normalise."""

    def __init__(self, dim: int = 512, layers: Sequence[int] = (4, 4, 4, 4),
                 planes: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__(layers, planes)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.gmp = nn.AdaptiveMaxPool2d(1)
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(self.planes[3], dim)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = (self.gmp(x) + self.gap(x)).flatten(1)
        return F.normalize(self.fc(x + self.bias2), p=2, dim=1)


class Proxy(nn.Module):
    """Class proxies ``fc [dim, classes]``; ``forward`` gives cosine similarities ``[M, classes]``."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Parameter(torch.empty(dim, classes))
        nn.init.xavier_normal_(self.fc)

    def forward(self, embeddings: Tensor) -> Tensor:
        return embeddings.matmul(F.normalize(self.fc, p=2, dim=0))


class StarEncoder(Encoder):
    """StarEnhancer's style encoder with its proxy classifier (the official ``Stylish``).

    ``embed`` average-pools images to ``input_size`` (224 in the official code) and returns
    L2-normalised codes; ``forward`` gives ``Preference(vector=target code, source=input code)``
    (see the module docstring); ``proxy_logits`` gives the scaled normalised-softmax logits of
    the official training loss (``cross_entropy(proxy_logits(e), style)``).
    """

    provides = frozenset({"vector", "source"})
    metric_loss = "normsoftmax"

    def __init__(self, num_users: int, dim: int = 512, layers: Sequence[int] = (4, 4, 4, 4),
                 planes: Sequence[int] = (64, 128, 256, 512), input_size: int | None = 224) -> None:
        super().__init__()
        if num_users < 1:
            raise UsageError(f"star encoder: num_users must be >= 1, got {num_users}")
        self.dim = int(dim)
        self.input_size = input_size
        self.encoder = StyleEncoder(dim, layers, planes)
        self.proxy = Proxy(dim, num_users)

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised style codes ``[M, dim]`` of ``images [M, 3, H, W]``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise UsageError(f"star encoder: expected images [M, 3, H, W], got {tuple(images.shape)}")
        if self.input_size is not None:
            images = F.adaptive_avg_pool2d(images, (self.input_size, self.input_size))
        return self.encoder(images)

    def proxy_logits(self, embeddings: Tensor) -> Tensor:
        """``PROXY_SCALE`` x cosine similarity to each user's proxy: ``[M, num_users]``."""
        return PROXY_SCALE * self.proxy(embeddings)

    def _centroid(self, images: Tensor, mask: Tensor) -> Tensor:
        b, n = images.shape[:2]
        emb = self.embed(images.flatten(0, 1)).view(b, n, -1)
        return F.normalize(self.masked_mean(emb, mask), p=2, dim=1)

    def forward(self, refs: RefSet) -> Preference:
        mask = refs.valid_mask()
        vector = self._centroid(refs.targets, mask)
        if refs.query is not None:
            source = self.embed(refs.query)
        elif refs.inputs is not None:
            source = self._centroid(refs.inputs, mask)
        else:
            raise UsageError("star encoder: Preference.source needs the image being enhanced "
                             "(RefSet.query) or the references' inputs (RefSet.inputs); pass one of them")
        return Preference(vector=vector, mask=mask, source=source)


    def stored_styles(self) -> Tensor:
        """The trained styles ``[S, dim]``, L2-normalised: the centres of the official
        ``embeddings.npy`` when it was loaded with the weights, else the normalised proxies."""
        centres = getattr(self, "style_centres", None)
        return centres if centres is not None else F.normalize(self.proxy.fc.detach().t(), p=2, dim=1)


def load_official_encoder(encoder: StarEncoder, path: str) -> None:
    """Load an official ``stylish.pth.tar`` (``{'state_dict': ...}``, ``module.`` keys) into ``encoder``.

    ``path`` is the file or the folder holding it (the official ``save_model/``). The proxy
    table takes the checkpoint's number of styles (10 for the released model). When the folder
    also holds ``embeddings.npy`` (the official ``fetch_embedding.py`` output, ``[styles, images,
    dim]``), each style's normalised mean embedding -- the official test's target centre -- is
    kept as ``encoder.style_centres`` for :meth:`StarEncoder.stored_styles`.
    """
    folder = path if os.path.isdir(path) else None
    if folder is not None:
        path = os.path.join(folder, "stylish.pth.tar")
    state = read_state_dict(path)
    fc = state.get("proxy.fc")
    if isinstance(fc, Tensor) and fc.dim() == 2 and fc.shape[0] == encoder.dim and fc.shape[1] != encoder.proxy.fc.shape[1]:
        encoder.proxy = Proxy(encoder.dim, int(fc.shape[1]))
    load_into(encoder, state, path)
    encoder.pretrained_from = f"official StarEnhancer checkpoint {path}"
    encoder.style_centres = None
    npy = os.path.join(folder, "embeddings.npy") if folder is not None else None
    if npy is not None and os.path.isfile(npy):
        try:
            emb = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UsageError(f"could not read {npy}: {err}") from None
        if emb.ndim != 3 or emb.shape[2] != encoder.dim:
            raise UsageError(f"{npy} must hold [styles, images, {encoder.dim}] embeddings, got {list(emb.shape)}")
        encoder.style_centres = F.normalize(torch.from_numpy(emb.astype(np.float32)).mean(1), p=2, dim=1)


def build_star_encoder(ctx: BuildContext, dim: int = 512, layers: Sequence[int] = (4, 4, 4, 4),
                       planes: Sequence[int] = (64, 128, 256, 512), input_size: int | None = 224) -> StarEncoder:
    """Build the style encoder with ``ctx.num_users`` proxies."""
    return StarEncoder(ctx.num_users, dim=dim, layers=layers, planes=planes, input_size=input_size)


@hookimpl
def register_encoders(register):
    register(
        "star", build=build_star_encoder,
        description="StarEnhancer style encoder: Fixup ResNet (no BN), avg+max pool, normalised-softmax proxies",
        paper="Song et al., StarEnhancer, ICCV 2021 (IDKiro/StarEnhancer)",
        configurations={
            "small": {"dim": 64, "layers": [1, 1, 1, 1], "planes": [16, 32, 64, 64], "input_size": None},
            "paper": {"dim": 512, "layers": [4, 4, 4, 4], "planes": [64, 128, 256, 512], "input_size": 224},
        },
        version="1",
        provides=["vector", "source"], load_weights=load_official_encoder, meta={"parameters": {"paper (num_users=10)": 23_968_563}})
