"""``piebench sweep`` and ``piebench ablate``: many runs, finished ones skipped, deltas paired."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import given_list
from ..errors import RunFailed
from ..launch import Launcher, parse_slurm_opts
from ..sweep import (
    ABLATION_KEYS,
    ablation_table,
    parse_ablation,
    parse_seeds,
    sweep_table,
    write_ablation,
)
from ..sweep import ablate as run_ablation
from ..sweep import sweep as run_sweep


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("sweep")
@click.option("--encoders", default=None, help="Comma-separated encoders (default: every installed one).")
@click.option("--enhancers", default=None, help="Comma-separated enhancers (default: every installed one).")
@click.option("--protocol", default="smoke", show_default=True, help="Protocol name or .toml path.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--cross", is_flag=True,
              help="Every encoder with sa (else its first compatible enhancer), every enhancer with angular.")
@click.option("--steps", type=int, default=None, help="Total training steps per run.")
@click.option("--set", "sets", multiple=True, help="Config override KEY=VALUE for every run (repeatable).")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--blind-twins", is_flag=True, help="Also run each pair's blind twin and report the gain over it.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--progress", is_flag=True, help="Show each run's progress bars.")
@click.option("--launcher", type=click.Choice(["inline", "local", "slurm"]), default="inline", show_default=True,
              help="inline: one run after another in this process; local: one process per (pair, seed) on this "
                   "machine; slurm: one Slurm job per (pair, seed) (submitit).")
@click.option("--gpus-per-job", type=int, default=0, show_default=True,
              help="GPUs per job (local/slurm); more than 1 trains under torchrun inside the job.")
@click.option("--cpus-per-job", type=int, default=1, show_default=True, help="CPUs per job (local/slurm).")
@click.option("--mem-gb", type=float, default=None, help="Memory per Slurm job in GB.")
@click.option("--timeout-min", type=int, default=24 * 60, show_default=True,
              help="Time limit per job in minutes (a Slurm job is requeued at preemption or timeout).")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--account", default=None, help="Slurm account.")
@click.option("--qos", default=None, help="Slurm QOS.")
@click.option("--slurm-opt", "slurm_opts", multiple=True, metavar="KEY=VALUE",
              help="Any other sbatch option without its dashes (repeatable), e.g. constraint=a100.")
@click.option("--max-parallel", type=int, default=None,
              help="Jobs at once (local default: CPU count / --cpus-per-job; Slurm: all, the scheduler queues).")
def sweep(encoders, enhancers, protocol, seeds, cross, steps, sets, runs_dir, blind_twins, device, progress,
          launcher, gpus_per_job, cpus_per_job, mem_gb, timeout_min, partition, account, qos, slurm_opts,
          max_parallel) -> None:
    """Run a grid of ENCODERS x ENHANCERS over SEEDS (finished runs are reused, unfinished resumed)."""
    spec = None
    given = {"--gpus-per-job": gpus_per_job != 0, "--cpus-per-job": cpus_per_job != 1, "--mem-gb": mem_gb is not None,
             "--timeout-min": timeout_min != 24 * 60, "--partition": partition is not None,
             "--account": account is not None, "--qos": qos is not None, "--slurm-opt": bool(slurm_opts),
             "--max-parallel": max_parallel is not None}
    if launcher != "slurm" and any(given[k] for k in ("--mem-gb", "--partition", "--account", "--qos", "--slurm-opt")):
        raise click.UsageError("--mem-gb, --partition, --account, --qos and --slurm-opt are Slurm options: add "
                               "--launcher slurm")
    if launcher == "inline" and any(given.values()):
        raise click.UsageError(f"{', '.join(k for k, v in given.items() if v)}: only with --launcher local or slurm")
    if launcher != "inline":
        spec = Launcher(kind=launcher, gpus=gpus_per_job, cpus=cpus_per_job, mem_gb=mem_gb, timeout_min=timeout_min,
                        partition=partition, account=account, qos=qos, slurm_opts=parse_slurm_opts(list(slurm_opts)),
                        max_parallel=max_parallel)
        spec.check_available()  # before any planning or training
    items = run_sweep(protocol, given_list(encoders, "--encoders", "angular,star"),
                      given_list(enhancers, "--enhancers", "sa,lut3d"), seeds=parse_seeds(seeds), cross=cross,
                      steps=steps, sets=list(sets), runs_dir=runs_dir, blind_twins=blind_twins, device=device,
                      progress=progress, echo=_echo, launcher=spec)
    click.echo(sweep_table(items))
    skipped = [it for it in items if it.status == "incompatible"]
    if skipped:
        click.echo(f"{len(skipped)} incompatible pair(s) skipped (see the note column).")
    failed = [it for it in items if it.status == "failed"]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(items)} runs failed; rerun the same command to retry them "
                        f"(finished runs are reused)")


@click.command("ablate")
@click.option("--encoder", required=True)
@click.option("--enhancer", required=True)
@click.option("--protocol", default="smoke", show_default=True)
@click.option("--set", "changes", multiple=True, required=True,
              help=f"KEY=V1,V2,... each value run as a single change against the base; KEY: {ABLATION_KEYS}.")
@click.option("--base-set", "base_sets", multiple=True, help="Override KEY=VALUE applied to the base and every variant.")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated seeds; an interval (a verdict) needs >= 2, e.g. 0,1,2.")
@click.option("--steps", type=int, default=None, help="Total training steps per run.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where the markdown and JSON go (default RUNS_DIR/ablations).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--progress", is_flag=True)
def ablate(encoder, enhancer, protocol, changes, base_sets, seeds, steps, runs_dir, out, device, progress) -> None:
    """Each --set change against the base config; PSNR deltas paired per image with 95% CIs."""
    result = run_ablation(protocol, encoder, enhancer, parse_ablation(list(changes)), seeds=parse_seeds(seeds),
                          steps=steps, sets=list(base_sets), runs_dir=runs_dir, device=device, progress=progress,
                          echo=_echo)
    click.echo(ablation_table(result))
    md, js = write_ablation(result, out or Path(runs_dir) / "ablations")
    click.echo(f"wrote {md} and {js}")
    failed = [it for v in result.variants for it in v["runs"] if it.status == "failed"] + \
        [it for it in result.base if it.status == "failed"]
    if failed:
        print(f"piebench: {len(failed)} run(s) failed", file=sys.stderr)
        raise RunFailed(f"{len(failed)} ablation run(s) failed; rerun the same command to retry them")
