"""``python -m bench`` (``make bench``): pulsestream against a tutorial-style bridge, side by side.

Examples::

    make bench                                   # defaults: about a minute
    make bench BENCH_ARGS="--clients 1000 --rate 100 --duration 10"
    make bench BENCH_ARGS="--sweep --json bench.json"
    make bench BENCH_ARGS="--scenario ingest"   # real data in: publish throughput, publish -> browser latency
    make bench BENCH_ARGS="--scenario ingest --history both"   # the same with the memory and the Redis history
    python -m bench --smoke --json -             # a few clients, a few seconds (the test suite runs this)

Every process it starts (generator, streamer, reference, load workers) runs
on 127.0.0.1 and is stopped before it exits; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.ingest import run_ingest
from bench.loadclient import raise_open_files_limit
from bench.report import render, render_markdown
from bench.runner import TARGETS, Scenario, run_scenario


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--clients", type=int, default=1000, help="concurrent SSE clients (N)")
    parser.add_argument("-r", "--rate", type=int, default=10, help="points per second per series (R, 1..100)")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds measured per target (D)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--series", default="cpu", help="comma-separated series each client subscribes to")
    parser.add_argument("--resolution", default="raw", choices=["raw", "1s", "5s", "1m"])
    parser.add_argument("--flush-interval", default="50ms", help="pulsestream's batching window (flushInterval)")
    parser.add_argument("--window", default="1s", help="history in pulsestream's first snapshot")
    parser.add_argument("--target", choices=[*TARGETS, "both"], default="both", help="what to measure")
    parser.add_argument(
        "--streamer-command",
        default="",
        help="run this instead of pulsestream-streamer (A/B a change; same STREAMER_* environment)",
    )
    parser.add_argument("--client-processes", type=int, default=0, help="load-client processes (0 = by N)")
    parser.add_argument("--sweep", action="store_true", help="N in 100,1000,5000 x R in 10,100, then idle memory")
    parser.add_argument("--idle", type=int, default=0, metavar="N", help="only the idle-connection memory run")
    parser.add_argument("--smoke", action="store_true", help="3 clients, 2 s: proves the harness works")
    parser.add_argument(
        "--scenario",
        choices=["fanout", "views", "ingest"],
        default="fanout",
        help="fanout: pulsestream vs the reference (default); views: raw vs maxPoints (bytes, first draw, CPU); "
        "ingest: publish throughput and publish -> browser latency, next to the synthetic path",
    )
    parser.add_argument("--ingest-batch", type=int, default=10_000, help="ingest: points per Publish request")
    parser.add_argument(
        "--history",
        choices=["memory", "redis", "both"],
        default="memory",
        help="ingest: where published history lives (GENERATOR_HISTORY_URL); both = side by side in one run",
    )
    parser.add_argument("--raw-viewers", type=int, default=20, help="views: raw viewers of the 1-hour window")
    parser.add_argument("--reduced-viewers", type=int, default=1000, help="views: maxPoints viewers of it")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown ('-' = stdout)")
    parser.add_argument("--logs", metavar="DIR", help="keep the services' logs in DIR")
    parser.add_argument("--profile", metavar="DIR", help="sample each target with py-spy while measuring")
    return parser


def _idle(base: Scenario, clients: int) -> Scenario:
    # A quiet stream (one point per minute) held open with heartbeats: what each idle browser costs.
    return replace(base, clients=clients, resolution="1m", heartbeat="5s", duration=12.0, warmup=2.0, idle=True)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    if not 1 <= args.rate <= 100:
        raise SystemExit("--rate must be between 1 and 100 points/s (the generator's period is 10 ms at least)")
    base = Scenario(
        clients=args.clients,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        series=tuple(name.strip() for name in args.series.split(",") if name.strip()),
        resolution=args.resolution,
        flush_interval=args.flush_interval,
        window=args.window,
        client_processes=args.client_processes,
        streamer_command=tuple(shlex.split(args.streamer_command)),
    )
    if args.smoke:
        return [replace(base, clients=3, rate=50, duration=2.0, warmup=1.0)]
    if args.idle:
        return [_idle(base, args.idle)]
    if args.sweep:
        grid = [replace(base, clients=n, rate=r) for n in (100, 1000, 5000) for r in (10, 100)]
        return [*grid, _idle(base, 10_000)]
    return [base]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _views(args: argparse.Namespace, out: Any) -> int:
    from bench import views

    with contextlib.ExitStack() as stack:
        logs = Path(args.logs) if args.logs else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logs.mkdir(parents=True, exist_ok=True)
        smoke = args.smoke
        result = views.run(
            logs,
            raw_viewers=2 if smoke else args.raw_viewers,
            reduced_viewers=5 if smoke else args.reduced_viewers,
            live=2.0 if smoke else args.duration,
            repeats=1 if smoke else 3,
        )
    table = views.render(result)
    print(table, file=out, flush=True)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        text = json.dumps({"machine": machine(), "command": sys.argv, "views": result}, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.scenario == "views":
        raise_open_files_limit()
        return _views(args, sys.stderr if args.json == "-" else sys.stdout)
    targets = list(TARGETS) if args.target == "both" else [args.target]
    raise_open_files_limit()
    out = sys.stderr if args.json == "-" else sys.stdout
    info = machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), load average {info['load_average']}", file=out)
    results: list[dict[str, Any]] = []
    if args.scenario == "ingest":
        (scenario,) = scenarios(args)[:1]
        print(f"running: ingest, {scenario.title} ...", file=out, flush=True)
        logs = Path(args.logs) if args.logs else None
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        histories = ("memory", "redis") if args.history == "both" else (args.history,)
        results = run_ingest(scenario, args.ingest_batch, logs, histories)
        print(render(results), file=out, flush=True)
    for scenario in scenarios(args) if args.scenario == "fanout" else ():
        print(f"running: {scenario.title} ...", file=out, flush=True)
        logs = Path(args.logs) / f"{len(results):02d}" if args.logs else None
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        profile_dir = Path(args.profile) if args.profile else None
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
        results.append(run_scenario(scenario, targets, logs, profile_dir))
        print(render(results[-1:]), file=out, flush=True)
    if args.markdown:
        table = render_markdown(results)
        if args.markdown == "-":
            print(table, file=out)
        else:
            Path(args.markdown).write_text(table + "\n")
    if args.json:
        document = {"machine": info, "command": sys.argv, "scenarios": results}
        text = json.dumps(document, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
