"""``piebench bench``: forward-pass throughput of an enhancer at several image sizes, or (``--sampler``)
the training sampler against the memory-copy limit and the training step."""

from __future__ import annotations

import click

from ..bench import BenchSettings, bench_enhancer, bench_table, parse_sizes
from ..benchfiles import write_bench_record
from ..loader_bench import LoaderSettings, bench_sampler, loader_table, write_loader_record


@click.command("bench")
@click.option("--enhancer", default=None, help="Enhancer plugin name (piebench list enhancers).")
@click.option("--encoder", default=None,
              help="Encoder that computes the preference (default: the enhancer's namesake, else angular).")
@click.option("--sizes", default="480p,1080p", show_default=True,
              help="Comma-separated sizes: 240p 360p 480p 720p 1080p 1440p 4k or WIDTHxHEIGHT.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="Autocast precision.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format for model and input.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the enhancer.")
@click.option("--batch", type=int, default=1, show_default=True, help="Images per forward pass.")
@click.option("--configuration", default="small", show_default=True, help="Enhancer configuration (small, paper, ...).")
@click.option("--encoder-config", default=None, help="Encoder configuration (default: like the enhancer's, else small).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed batches per size (median reported).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed batches per size first.")
@click.option("--with-encoder", is_flag=True, help="Time the encoder too (references recomputed every batch).")
@click.option("--threads", type=int, default=None, help="CPU threads for the measurement (default: torch's).")
@click.option("--no-flops", is_flag=True, help="Skip the FLOP count (one extra forward per size).")
@click.option("--no-full-res", is_flag=True,
              help="Skip timing the full-resolution step against the memory-bandwidth bound.")
@click.option("--copy-mb", type=click.IntRange(1), default=256, show_default=True,
              help="Array size (MB) copied to measure the memory bandwidth for that bound.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The record goes to RUNS_DIR/bench/.")
@click.option("--no-record", is_flag=True, help="Print only; write no record.")
@click.option("--sampler", "sampler_mode", is_flag=True,
              help="Benchmark the training sampler (batches/s for N references) against a raw memory copy of "
                   "the same bytes and the sa enhancer's training step, instead of an enhancer's forward pass.")
@click.option("--protocols", default="smoke,quick", show_default=True, help="--sampler: protocols to measure.")
@click.option("--refs", "refs_list", default="1,5,10", show_default=True, help="--sampler: reference counts N.")
@click.option("--store-mode", type=click.Choice(["auto", "resident", "staged"]), default="auto",
              show_default=True, help="--sampler: store on the device (resident) or in host memory (staged).")
@click.option("--store-crops", type=int, default=8, show_default=True,
              help="--sampler: crops per scene of the benchmark store (0 = the protocol's).")
@click.option("--train-repeats", type=int, default=3, show_default=True,
              help="--sampler: timed training steps per N (median reported).")
@click.option("--batches", type=int, default=20, show_default=True,
              help="--sampler: timed batches (and memory copies) per N (median reported).")
@click.option("--no-train", is_flag=True, help="--sampler: skip the training-step timing.")
def bench(enhancer, encoder, sizes, device, amp, channels_last, compile_, batch, configuration, encoder_config,
          repeats, warmup, with_encoder, threads, no_flops, no_full_res, copy_mb, runs_dir, no_record, sampler_mode, protocols,
          refs_list, store_mode, store_crops, train_repeats, batches, no_train) -> None:
    """Images/s, MP/s, latency p50/p95, GFLOPs/MP and peak memory of ENHANCER's forward pass
    (or, with --sampler, the training sampler's batches/s)."""
    if sampler_mode:
        _bench_sampler(protocols, refs_list, device, store_mode, store_crops, batches, warmup, train_repeats,
                       not no_train, threads, runs_dir, no_record)
        return
    if not enhancer:
        raise click.UsageError("give --enhancer NAME (piebench list enhancers), or --sampler")
    settings = BenchSettings(device=device, amp=amp, channels_last=channels_last, compile=compile_, batch=batch,
                             repeats=repeats, warmup=warmup, with_encoder=with_encoder, flops=not no_flops,
                             threads=threads, full_resolution=not no_full_res, copy_mb=copy_mb)
    record = bench_enhancer(enhancer, encoder_name=encoder, configuration=configuration,
                            encoder_configuration=encoder_config, sizes=parse_sizes(sizes), settings=settings,
                            progress=lambda msg: click.echo(msg, err=True))
    click.echo(bench_table(record))
    if not no_record:
        click.echo(f"record: {write_bench_record(record, runs_dir)}")


def _bench_sampler(protocols, refs_list, device, store_mode, store_crops, batches, warmup, train_repeats, train,
                   threads, runs_dir, no_record) -> None:
    try:
        refs = tuple(int(x) for x in refs_list.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{refs_list}'", param_hint="--refs") from None
    settings = LoaderSettings(protocols=tuple(p.strip() for p in protocols.split(",") if p.strip()), refs=refs,
                              device=device, store_mode=store_mode, store_crops=store_crops or None,
                              repeats=batches, warmup=max(warmup, 2),
                              train_repeats=train_repeats, train=train, threads=threads)
    record = bench_sampler(settings, progress=lambda msg: click.echo(msg, err=True))
    click.echo(loader_table(record))
    if not no_record:
        click.echo(f"record: {write_loader_record(record, runs_dir)}")
