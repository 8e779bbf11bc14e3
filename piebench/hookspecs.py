"""The plugin contract: every hook piebench calls, one documented function each.

docs/plugins.md is the guide for plugin authors (the same contract, with a worked example
package of every kind, kept true by tests/integration/test_plugin_guide.py).

A plugin is a module with functions decorated by :data:`piebench.hookimpl` and named after
these hooks. It is found through the ``piebench`` entry-point group::

    [project.entry-points.piebench]
    myplugin = "mypkg.plugin"

Registration hooks receive a ``register`` callback::

    register(name, build, *, description="", paper="", configurations=None, version="1",
             meta=None, **typed_fields)

* ``build`` is called as ``build(ctx, **params)`` for every kind: ``ctx`` is a
  :class:`piebench.BuildContext` (positional, first), ``params`` the keyword parameters of the
  chosen configuration plus any the user passes. Each kind's hook below says what ``build``
  must return; a builder that cannot be called that way, crashes, or returns the wrong type
  is reported in one line naming the component and the plugin (the run stops;
  ``piebench list`` warns).
* ``configurations`` maps a configuration name (``"small"`` for the CPU smoke protocol,
  ``"paper"`` for the published size) to those keyword ``params``. Encoders and enhancers are
  built with the protocol's ``train.encoder_config`` / ``train.enhancer_config`` (``small`` in
  ``smoke`` and ``quick``; ``--encoder-config``) plus ``--set encoder.params.KEY=VALUE``; other
  kinds with ``small`` when registered, else the first (datasets: plus the run's ``eval.data``).
  Without configurations a builder gets no parameters.
* ``version`` is the component's own version: runs of two versions never share a run key
  nor a leaderboard entry. Bump it when a change alters the outputs of a trained model
  (architecture, initialisation, preprocessing), not for refactors.
* ``meta``: a dict of free-form data the core never reads (``piebench list --json`` shows it).
* typed fields, per kind (each hook below lists its own; they become attributes of
  :class:`piebench.registry.Spec`). Any other keyword is reported in one warning line naming
  the plugin (``PIEBENCH_STRICT_PLUGINS=1``: an error) and kept in ``meta``; a value of the
  wrong type is one warning line naming the plugin (strict: an error) and that component is
  not registered.

Pairing: an encoder and an enhancer pair when the enhancer's ``consumes`` is a subset of the
encoder's ``provides`` (both default to ``["vector"]``); :func:`piebench.registry.compatible`
decides it for ``run``, ``sweep``, ``bench`` and ``list``, and the built instances' attributes
(:class:`piebench.Encoder` ``provides`` / ``map_channels``, :class:`piebench.Enhancer`
``consumes``) are checked once more before training.

Lifecycle hooks (``on_*``) are observers: one that raises is reported once, naming the plugin,
and that plugin's lifecycle hooks are skipped for the rest of the run
(``PIEBENCH_STRICT_PLUGINS=1``: the run fails with that line as its recorded reason). They must
be plain hooks (no ``hookwrapper``).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("piebench")


@hookspec
def register_encoders(register):
    """Register style/preference encoders.

    ``build(ctx: BuildContext, **params) -> piebench.Encoder``; ``ctx`` carries ``num_users``
    (training users, for proxy classifiers), ``num_refs``, ``image_size``, ``pretrained`` and
    ``dataset`` (may be None). ``forward(refs: RefSet) -> Preference`` (``vector`` ``[B, dim]``)
    and ``embed(images [M, 3, H, W]) -> [M, dim]`` (every evaluation calls it; an encoder class
    without it is refused before training). Instance attributes: ``dim``, ``provides``,
    ``requires``, ``map_channels``, ``metric_loss`` (the embedding loss of stages that ask for
    ``metric``), ``trainable``, ``pretrained_from``.

    Typed fields: ``provides`` (list of ``"vector"``, ``"maps"``, ``"source"``; default
    ``["vector"]``: what its ``Preference`` fills), ``requires`` (``["targets"]`` or
    ``["targets", "inputs"]``: reference pairs), ``map_channels`` (int or list: channels of each
    map at the small configuration, a hint; the instance's ``map_channels`` is what enhancers
    read), ``role`` (``"model"``, or ``"oracle"`` for an encoder that reads the answer: shown as an
    upper bound, never ranked), ``load_weights`` (``load_weights(module, path)``: released weights).
    """


@hookspec
def register_enhancers(register):
    """Register enhancers.

    ``build(ctx: BuildContext, **params) -> piebench.Enhancer``; ``ctx.encoder`` is the already
    built encoder it is paired with (read its ``dim`` or ``map_channels``; None when built for
    released weights by ``load_pretrained``); raise :class:`piebench.errors.UsageError` to refuse
    an encoder. ``forward(x, pref) -> [B, 3, H, W]``, the input's shape, for any H and W.

    Typed fields: ``consumes`` (list of preference fields it may read, default ``["vector"]``;
    ``[]`` for none), ``pairs_with`` (name of the encoder it is preferably paired with),
    ``full_resolution`` (True: applies to any resolution in one pass, e.g. curves or a LUT;
    otherwise full-size photos are enhanced in tiles), ``role`` (``"model"``, or ``"baseline"``
    for one that learns nothing per user: shown, never ranked), ``load_weights``
    (``load_weights(module, path)``: released single-style weights).
    """


@hookspec
def register_losses(register):
    """Register losses.

    ``build(ctx: BuildContext, **params) -> piebench.Loss`` of ``kind`` ``"image"``
    (``forward(output, target, batch: Batch) -> scalar tensor``) or ``"embedding"``
    (``forward(embeddings [M, D], labels [M]) -> scalar tensor``); ``ctx.encoder`` is the run's
    encoder, ``ctx.dataset`` its dataset. ``piebench run --loss NAME[:WEIGHT]`` adds an image loss
    (``default_weight`` when no weight is given) to every stage that trains the enhancer.

    Typed field: ``kind`` (``"image"``, the default, or ``"embedding"``), as the instance's.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    ``build(ctx: BuildContext, **params) -> piebench.data.PieDataset``; ``ctx.num_refs`` is the
    evaluation's ``eval.refs`` (the other fields keep their defaults); ``params`` are the
    configuration's plus the run's ``eval.data`` table (``--set eval.data.KEY=VALUE``;
    ``--dataset NAME:PATH`` sets ``root``).

    Typed field: ``training_users_param`` (the build parameter that sets how many users it
    trains on; ``piebench users-curve`` varies it).
    """


@hookspec
def register_metrics(register):
    """Register per-image fidelity metrics.

    ``build(ctx: BuildContext, **params)`` returns a callable ``(output, target) -> Tensor [B]``
    on float32 images ``[B, 3, H, W]`` in [0, 1] on the run's device (``ctx`` is a default
    :class:`piebench.BuildContext`; accept and ignore it), or raises
    :class:`piebench.errors.PiebenchError` saying why it is unavailable (e.g. LPIPS when its
    AlexNet weights cannot be had). A result that is not a tensor of shape ``[B]`` stops the run
    with one line naming the plugin.

    Typed fields: ``higher_is_better`` (default True; the arrow and the direction of "best"),
    ``label`` (column heading, default the name), ``digits`` (decimals shown, default 3),
    ``variant`` (which convention the implementation follows, stored in each record). A run
    computes the metrics of its protocol's ``eval.metrics`` plus those named with
    ``piebench run --metric NAME``; the metric list is not part of the evaluation spec, so adding
    one never splits a leaderboard table. Every display takes the column from these fields.
    """


@hookspec
def register_loggers(register):
    """Register experiment trackers that ``piebench run --log NAME`` switches on.

    ``build(ctx: BuildContext, **params)`` (``ctx`` a default context; the return value is not
    used) checks the tracker can work (e.g. its package is installed; raise
    :class:`piebench.errors.UsageError` saying how to install it) before anything is written.
    The tracker itself is the plugin's lifecycle hooks below: they are called for every run and
    act only for runs whose ``run.loggers`` contains NAME.
    """


@hookspec
def on_run_start(run):
    """A run is about to train (``config.json``, ``manifest.json`` and ``record.json`` are
    written; also on resume): ``run`` has ``config`` (the resolved configuration), ``run_dir``
    (a Path), ``record`` (the record, a dict: read it, do not change it), ``loggers`` (the
    names given with ``--log``) and ``run_key``. Lifecycle hooks run on the main process only."""


@hookspec
def on_step_end(run, stage, step, losses, lrs):
    """A training step ended: ``stage`` name, global ``step`` (from 1), ``losses`` {term: float}
    (each weighted term, plus ``loss``, their sum, and ``time_s``), ``lrs`` {parameter group
    (``encoder``, ``enhancer``, ``loss.NAME``): learning rate used by this step}."""


@hookspec
def on_eval_end(run, metrics):
    """Evaluation ended: ``metrics`` is the summary the record stores as ``metrics``: per user
    group (``seen``, ``unseen``, ``all``) ``{name: {"mean": ...}}`` for metrics and diagnostics."""


@hookspec
def on_run_end(run, record):
    """The run ended (``record["status"]`` finished, failed or interrupted, with ``reason``):
    ``record`` is the final record, already written to ``record.json``."""
