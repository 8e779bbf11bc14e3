"""``piebench run``: train and evaluate one encoder/enhancer pair under a protocol."""

from __future__ import annotations

import click

from ..config import resolve
from ..distributed import current as current_process
from ..leaderboard import run_summary_table
from ..runner import run_experiment


def positive_int(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


@click.command("run")
@click.option("--encoder", required=True, help="Encoder plugin name (piebench list encoders).")
@click.option("--enhancer", required=True, help="Enhancer plugin name (piebench list enhancers).")
@click.option("--protocol", default="smoke", show_default=True, help="Protocol name or path to a .toml file.")
@click.option("--schedule", default=None, help="Training schedule of the protocol (two-stage, joint).")
@click.option("--dataset", default=None, help="Dataset override, NAME or NAME:PATH (e.g. folder:./photos).")
@click.option("--refs", type=int, default=None, callback=positive_int, help="References per preference (N).")
@click.option("--metric", "metrics", multiple=True,
              help="Also compute this installed metric (repeatable; piebench list metrics). Never splits a "
                   "leaderboard table: runs without it show '–'.")
@click.option("--loss", "losses", multiple=True, help="Image loss term NAME[:WEIGHT] (repeatable); weight 0 removes.")
@click.option("--lr-encoder", type=float, default=None, help="Encoder learning rate while the enhancer trains.")
@click.option("--lr-enhancer", type=float, default=None, help="Enhancer learning rate.")
@click.option("--steps", type=int, default=None, callback=positive_int,
              help="Total training steps (stages scaled proportionally).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--set", "sets", multiple=True, help="Override any config key: KEY=VALUE (e.g. train.batch_users=2).")
@click.option("--blind", is_flag=True, help="Blind twin: the enhancer gets a learned constant preference.")
@click.option("--pretrained", is_flag=True, help="Start backbones from torchvision ImageNet weights ($TORCH_HOME; fetched once).")
@click.option("--encoder-config", default=None, help="Encoder configuration (small, paper, ...).")
@click.option("--enhancer-config", default=None, help="Enhancer configuration (small, paper, ...).")
@click.option("--resume", is_flag=True,
              help="Continue the latest unfinished run of this configuration (reuse a finished one; wait for "
                   "another process running it).")
@click.option("--resume-from", default=None, type=click.Path(file_okay=False), help="Continue this run directory.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Mixed-precision training (autocast; fp16 adds a gradient scaler). Metrics stay float32.")
@click.option("--channels-last", is_flag=True, help="Models and images in the channels-last memory format.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the encoder and enhancer (slow first step).")
@click.option("--store-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the image store lives: on the GPU when it fits (auto), host memory with pinned "
                   "staging (cpu), or the GPU (cuda). Batches are identical either way.")
@click.option("--log", "loggers", multiple=True, metavar="NAME",
              help="Experiment tracker to write to (repeatable): tensorboard (event files in the run directory), "
                   "or any installed logger plugin (piebench list loggers).")
@click.option("--store-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Share of free device memory a resident store may take (default 0.5).")
def run(encoder, enhancer, protocol, schedule, dataset, refs, metrics, losses, lr_encoder, lr_enhancer, steps, seed,
        device, runs_dir, sets, blind, pretrained, encoder_config, enhancer_config, resume, resume_from,
        quiet, amp, channels_last, compile_, store_device, loggers, store_fraction) -> None:
    """Train and evaluate ENCODER + ENHANCER; print the results table and the record path."""
    cfg = resolve(protocol, encoder=encoder, enhancer=enhancer, schedule=schedule, refs=refs, losses=list(losses),
                  lr_encoder=lr_encoder, lr_enhancer=lr_enhancer, steps=steps, seed=seed, device=device,
                  sets=list(sets), blind=blind, pretrained=pretrained, encoder_config=encoder_config,
                  enhancer_config=enhancer_config, dataset=dataset, amp=amp, channels_last=channels_last,
                  compile=compile_, store_device=store_device, store_fraction=store_fraction,
                  metrics=list(metrics))
    run_dir, record = run_experiment(cfg, runs_dir, resume=resume, resume_from=resume_from, progress=not quiet,
                                     loggers=loggers)
    if not current_process().is_main:  # under torchrun, rank 0 reports
        return
    click.echo(run_summary_table(record))
    click.echo(f"record: {run_dir / 'record.json'}")
