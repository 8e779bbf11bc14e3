"""Property tests of the --loss and --set parsers (and of resolve with --set): any text gives a
result or a UsageError, never another exception; valid specs round-trip."""

from __future__ import annotations

import json
import math
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from piebench.config import DEFAULT_WEIGHT, parse_loss, parse_set, resolve
from piebench.errors import UsageError

NAME = st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=12)
WEIGHT = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
KEY = st.lists(st.text(string.ascii_letters + "_", min_size=1, max_size=8), min_size=1, max_size=4)
VALUE = st.one_of(
    st.integers(-10**9, 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.lists(st.integers(-1000, 1000), max_size=4),
    st.text(string.ascii_letters + string.digits + " _-", max_size=12),
)


def toml_repr(value) -> str:
    """How a user would type ``value`` after ``=``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
@example(":")
@example("gram:")
@example("gram:nan")
@example("gram:-0")
@example("gram:1e400")
@example(" : 1")
def test_parse_loss_gives_a_spec_or_a_usage_error(text: str):
    try:
        name, weight = parse_loss(text)
    except UsageError:
        return
    assert name and name == name.strip() and ":" not in name
    assert weight == DEFAULT_WEIGHT or (math.isfinite(weight) and weight >= 0)


@given(NAME, WEIGHT)
def test_parse_loss_round_trips(name: str, weight: float):
    assert parse_loss(f"{name}:{weight!r}") == (name, weight)
    got_name, got_weight = parse_loss(name)
    assert got_name == name and got_weight == DEFAULT_WEIGHT


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
@example("a=" + "[" * 2000)
@example("=1")
@example("a..b=1")
@example("a.b=")
def test_parse_set_gives_a_pair_or_a_usage_error(text: str):
    try:
        parts, _ = parse_set(text)
    except UsageError:
        return
    assert parts and all(parts)


@given(KEY, VALUE)
def test_parse_set_round_trips(parts: list[str], value):
    got_parts, got = parse_set(f"{'.'.join(parts)}={toml_repr(value)}")
    assert got_parts == parts
    assert got == value and type(got) is type(value)


KNOWN_KEYS = ["train.stages", "train.stages.0", "train.stages.0.steps", "train.stages.1.losses",
              "train.stages.0.lr", "train.stages.1.lr.enhancer", "train.batch_users", "train.refs", "train.threads",
              "train.grad_clip", "train.augment", "eval.refs", "eval.metrics", "eval.max_photos", "eval.data",
              "eval.data.resolution", "eval.dataset", "eval.draws", "seed", "encoder.params", "protocol",
              "train.checkpoint_every", "train.stages.0.train", "train.stages.0.schedule"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN_KEYS), st.one_of(VALUE, st.text(max_size=20)))
def test_resolve_with_any_set_value_gives_a_config_or_a_usage_error(key: str, value):
    text = value if isinstance(value, str) and not value.isalnum() else toml_repr(value)
    try:
        resolve("smoke", encoder="center", enhancer="sa", sets=[f"{key}={text}"])
    except UsageError:
        pass
