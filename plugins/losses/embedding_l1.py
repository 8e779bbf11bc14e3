"""PieNet's embedding loss: L1 distance between the encoder's embeddings of output and target.

``loss = mean |embed(output) - embed(target)|`` (mean over the batch and the embedding
dimensions, as ``torch.nn.L1Loss`` in the public PieNet re-implementation of Masked Style
Modeling); PieNet weighs it by 0.4 (``default_weight``). The encoder is the run's encoder
(``ctx.encoder``), evaluated in eval mode (fixed batch-norm statistics; the training flags are
restored afterwards). The target's embedding carries no gradient.

With ``detach_encoder=True`` (default, as in PieNet where the embedding network is pretrained
and fixed for this term) gradients reach the output image only, never the encoder's weights
(otherwise the term would reward collapsing the embedding). The encoder is held as a plain
reference, never a submodule: its parameters are not the loss's parameters, so they appear
once in the optimiser and once in the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Loss


class _Embed(nn.Module):
    """Calls ``encoder.embed`` as ``forward`` so that ``functional_call`` can swap its weights."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder.embed(images)


class EmbeddingL1Loss(Loss):
    """``mean |E(output) - E(target)|`` with the run's encoder ``E`` (not a submodule)."""

    kind = "image"
    default_weight = 0.4

    def __init__(self, encoder: Encoder, detach_encoder: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", encoder)  # plain reference: not in parameters()/state_dict
        self.detach_encoder = detach_encoder

    def forward(self, output: Tensor, target: Tensor, batch=None) -> Tensor:
        enc = self.encoder
        modes = [(m, m.training) for m in enc.modules()]
        enc.eval()
        try:
            with torch.no_grad():
                tgt = enc.embed(target)
            if self.detach_encoder:
                wrapper = _Embed(enc)
                fixed = {f"encoder.{n}": p.detach() for n, p in enc.named_parameters()}
                out = functional_call(wrapper, fixed, (output,), strict=False)
            else:
                out = enc.embed(output)
        finally:
            for m, mode in modes:
                m.training = mode
        return F.l1_loss(out, tgt)


def build_embedding_l1(ctx: BuildContext, detach_encoder: bool = True) -> EmbeddingL1Loss:
    """The loss over ``ctx.encoder``'s embeddings; UsageError when there is no encoder with ``embed``."""
    enc = ctx.encoder
    if enc is None:
        raise UsageError("loss 'embedding-l1' needs the run's encoder (BuildContext.encoder is None); "
                         "build the encoder first and pass it in the context")
    if type(enc).embed is Encoder.embed:
        raise UsageError(f"loss 'embedding-l1' needs an encoder with embed(); {type(enc).__name__} has none; "
                         "choose another encoder or drop the loss")
    return EmbeddingL1Loss(enc, detach_encoder)


@hookimpl
def register_losses(register):
    register("embedding-l1", build=build_embedding_l1,
             description="PieNet: L1 distance between encoder embeddings of output and target (weight 0.4)",
             paper="Kim et al., PieNet: Personalized Image Enhancement Network, ECCV 2020",
             configurations={"default": {"detach_encoder": True}},
             version="1", kind="image", meta={"default_weight": 0.4, "needs_encoder": True})
