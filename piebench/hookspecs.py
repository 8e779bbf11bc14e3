"""The plugin contract: every hook piebench calls, one documented function each.

A plugin is a module with functions decorated by :data:`piebench.hookimpl` and named after
these hooks. It is found through the ``piebench`` entry-point group::

    [project.entry-points.piebench]
    myplugin = "mypkg.plugin"

Registration hooks receive a ``register`` callback::

    register(name, build, *, description, paper="", configurations=None, version="1", **meta)

``build(ctx: BuildContext, **params)`` returns the component; ``configurations`` maps a
configuration name (``"small"`` for the CPU smoke protocol, ``"paper"`` for the published
size) to the keyword ``params`` passed to ``build``. ``meta`` is free-form data shown by
``piebench list --json``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("piebench")


@hookspec
def register_encoders(register):
    """Register style/preference encoders (builders return :class:`piebench.Encoder`)."""


@hookspec
def register_enhancers(register):
    """Register enhancers (builders return :class:`piebench.Enhancer`)."""


@hookspec
def register_losses(register):
    """Register losses (builders return :class:`piebench.Loss`, image or embedding kind)."""


@hookspec
def register_datasets(register):
    """Register datasets; ``build(ctx, **params)`` returns a :class:`piebench.data.PieDataset`."""


@hookspec
def register_metrics(register):
    """Register per-image fidelity metrics.

    ``build()`` returns a callable ``(output, target) -> [B]`` on float images in [0, 1], or
    raises :class:`piebench.errors.PiebenchError` saying why it is unavailable (e.g. LPIPS
    when its AlexNet weights cannot be had). ``meta`` may set ``higher_is_better``.
    """


@hookspec
def register_loggers(register):
    """Register experiment trackers that ``piebench run --log NAME`` switches on.

    ``build(ctx)`` checks the tracker can work (e.g. its package is installed; raise
    :class:`piebench.errors.UsageError` saying how to install it) before anything is written.
    The tracker itself is the plugin's lifecycle hooks below: they act only for runs whose
    ``run.loggers`` contains NAME.
    """


@hookspec
def on_run_start(run):
    """A run is about to train: ``run`` has ``config``, ``run_dir``, ``record`` and ``loggers``
    (the names given with ``--log``)."""


@hookspec
def on_step_end(run, stage, step, losses, lrs):
    """A training step ended: ``stage`` name, global ``step``, ``losses`` {term: float} (plus
    ``time_s``), ``lrs`` {parameter group: learning rate used by this step}."""


@hookspec
def on_eval_end(run, metrics):
    """Evaluation ended: ``metrics`` is the summary dict written to the record."""


@hookspec
def on_run_end(run, record):
    """The run ended (finished, failed or interrupted): ``record`` is the final record dict."""
