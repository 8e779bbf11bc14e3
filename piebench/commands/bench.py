"""``piebench bench``: forward-pass throughput of an enhancer at several image sizes."""

from __future__ import annotations

import click

from ..bench import BenchSettings, bench_enhancer, bench_table, parse_sizes, write_bench_record


@click.command("bench")
@click.option("--enhancer", required=True, help="Enhancer plugin name (piebench list enhancers).")
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
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The record goes to RUNS_DIR/bench/.")
@click.option("--no-record", is_flag=True, help="Print only; write no record.")
def bench(enhancer, encoder, sizes, device, amp, channels_last, compile_, batch, configuration, encoder_config,
          repeats, warmup, with_encoder, threads, no_flops, runs_dir, no_record) -> None:
    """Images/s, MP/s, latency p50/p95, GFLOPs/MP and peak memory of ENHANCER's forward pass."""
    settings = BenchSettings(device=device, amp=amp, channels_last=channels_last, compile=compile_, batch=batch,
                             repeats=repeats, warmup=warmup, with_encoder=with_encoder, flops=not no_flops,
                             threads=threads)
    record = bench_enhancer(enhancer, encoder_name=encoder, configuration=configuration,
                            encoder_configuration=encoder_config, sizes=parse_sizes(sizes), settings=settings,
                            progress=lambda msg: click.echo(msg, err=True))
    click.echo(bench_table(record))
    if not no_record:
        click.echo(f"record: {write_bench_record(record, runs_dir)}")
