"""``identity``: returns the input unchanged (the do-nothing baseline every table needs)."""

from __future__ import annotations

from torch import Tensor

from piebench import hookimpl
from piebench.interfaces import BuildContext, Enhancer, Preference


class IdentityEnhancer(Enhancer):
    """``forward(x, pref) = x``; consumes nothing, has no parameters, is not trained."""

    consumes = frozenset()
    trainable = False

    def forward(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        return x


def build_identity(ctx: BuildContext | None = None) -> IdentityEnhancer:
    """Build :class:`IdentityEnhancer`."""
    return IdentityEnhancer()


@hookimpl
def register_enhancers(register):
    """Register the identity baseline."""
    register("identity", build=build_identity, description="output = input (no enhancement baseline)",
             paper="baseline: output = input (the floor every model must beat)", configurations={"small": {}, "paper": {}}, version="1", consumes=[], role="baseline",
             full_resolution=True)
