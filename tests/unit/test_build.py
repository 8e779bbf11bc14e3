"""Building components: a plugin's crashing builder is reported naming the plugin."""

from __future__ import annotations

import pytest

from piebench.build import _create
from piebench.errors import PluginError, UsageError
from piebench.interfaces import BuildContext
from piebench.registry import Spec


def _crashes(ctx, **kw):
    raise ZeroDivisionError("division by zero in the builder")


def _strict(ctx):
    return object()


def test_a_crashing_builder_names_its_plugin():
    spec = Spec("enhancer", "boom", _crashes, plugin="third-party")
    with pytest.raises(PluginError, match=r"enhancer 'boom' \(plugin 'third-party'\) failed to build: ZeroDivisionError"):
        _create(spec, BuildContext(), None, {})


def test_unknown_parameters_are_a_usage_error():
    spec = Spec("encoder", "strict", _strict, plugin="p")
    with pytest.raises(UsageError, match=r"does not accept parameters \['width'\]"):
        _create(spec, BuildContext(), None, {"width": 3})
