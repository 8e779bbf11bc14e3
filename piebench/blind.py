"""The blind twin: the same enhancer trained with a learned constant preference.

``--blind`` wraps the run's encoder so that every sample gets the same learned Preference
(vector, maps and source with the wrapped encoder's shapes). What the blind twin reaches is
what the enhancer achieves without personalisation; gain = model - blind twin.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .interfaces import Encoder, Preference, RefSet


class BlindEncoder(Encoder):
    """A learned constant Preference shaped like ``encoder``'s output."""

    metric_loss = None

    def __init__(self, encoder: Encoder, resolution: tuple[int, int], refs: int) -> None:
        super().__init__()
        self.requires = encoder.requires
        self.provides = encoder.provides
        self.dim = encoder.dim
        self.map_channels = encoder.map_channels
        self.pretrained_from = "blind twin: learned constant preference"
        h, w = resolution
        probe = RefSet(targets=torch.rand(1, refs, 3, h, w), inputs=torch.rand(1, refs, 3, h, w),
                       query=torch.rand(1, 3, h, w))
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            pref = encoder(probe)
        encoder.train(was_training)
        self.vector = nn.Parameter(pref.vector[0].detach().clone())
        self.maps = nn.ParameterList([nn.Parameter(m[0].mean(0).detach().clone()) for m in pref.maps or ()])
        self.source = nn.Parameter(pref.source[0].detach().clone()) if pref.source is not None else None
        self._has_maps = pref.maps is not None
        self._wrapped = [encoder]  # kept for embed(); not a submodule, so it is neither trained nor saved

    def embed(self, images: Tensor) -> Tensor:
        return self._wrapped[0].embed(images)

    def forward(self, refs: RefSet) -> Preference:
        b, n = refs.batch_size, refs.num_refs
        maps = tuple(m.expand(b, n, *m.shape) for m in self.maps) if self._has_maps else None
        source = self.source.expand(b, -1) if self.source is not None else None
        return Preference(vector=self.vector.expand(b, -1), maps=maps, mask=None, source=source)
