"""``pulsestream-publish``: JSON lines on standard input (or a file, followed) to a generator.

Each line is one point::

    {"series": "orders", "v": 12.5, "t": 1732650000000}

``t`` (epoch milliseconds) is optional: the time the line is read is used.
``series`` may be left out when ``--series`` names a default. Blank lines
are skipped. A bad line is reported on standard error with its number and
why (``line 7: "v" must be a finite number``), is not published, and makes
the exit status 1; the other lines are still published.

Points are batched and published with :class:`~pulsestream.publish.Publisher`:
retries are safe (see :mod:`pulsestream.publish`), and a full buffer pushes
back on the input (the reader waits), so ``some-command | pulsestream-publish``
slows ``some-command`` down rather than dropping its points. At the end of
the input, everything held is sent (``--flush-timeout``).

Exit status: 0 every line published and acknowledged; 1 bad lines (the good
ones published); 2 bad arguments; 3 not delivered (a token refused, the
generator unreachable until the flush timeout, points left unacknowledged).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import orjson

from pulsestream.publish.buffer import check_point
from pulsestream.publish.publisher import DEFAULT_TARGET, PublishError
from pulsestream.publish.threaded import Publisher

__all__ = ["main", "parse_line"]

PROGRAM = "pulsestream-publish"
#: How often a followed file is read again once its end is reached (seconds).
FOLLOW_POLL = 0.2


class BadLine(ValueError):
    """A line that is not a point; ``str()`` says why."""


def parse_line(text: str, default_series: str | None) -> tuple[str, float, int | None]:
    """``(series, value, t)`` of one JSON line, or :class:`BadLine` saying what is wrong."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise BadLine(f"not JSON ({error.args[0] if error.args else error})") from None
    if not isinstance(document, dict):
        raise BadLine(f'expected a JSON object like {{"series": "orders", "v": 12.5}}, got {type(document).__name__}')
    series = document.get("series", default_series)
    if series is None:
        raise BadLine('no "series" (and no --series default)')
    if not isinstance(series, str):
        raise BadLine('"series" must be a string')
    value = document.get("v")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadLine('"v" must be a number' if "v" in document else 'no "v" (the value)')
    t = document.get("t")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
        raise BadLine('"t" must be a number (epoch milliseconds)')
    try:
        number = check_point(series, value)
    except ValueError as error:
        raise BadLine(str(error)) from None
    return series, number, None if t is None else int(t)


def _lines(stream: IO[str], follow: bool) -> Iterator[str]:
    """The lines of ``stream``; with ``follow``, waits for more at its end (like ``tail -f``) until interrupted."""
    while True:
        line = stream.readline()
        if line:
            yield line
        elif follow:
            time.sleep(FOLLOW_POLL)
        else:
            return


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not args.tls_ca:
        return None
    ca = Path(args.tls_ca).read_bytes()
    cert = Path(args.tls_cert).read_bytes() if args.tls_cert else None
    key = Path(args.tls_key).read_bytes() if args.tls_key else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description='Publish JSON lines {"series": "orders", "v": 12.5, "t": 1732650000000} (t optional, epoch ms) '
        "from standard input to a pulsestream generator.",
    )
    parser.add_argument("file", nargs="?", help="read this file instead of standard input")
    target = os.environ.get("PULSESTREAM_TARGET") or DEFAULT_TARGET
    parser.add_argument(
        "--target", default=target, help=f"generator HOST:PORT (default: $PULSESTREAM_TARGET, else {DEFAULT_TARGET})"
    )
    parser.add_argument("--token", help="ingest token (default: $PULSESTREAM_INGEST_TOKEN)")
    parser.add_argument("--series", help='series of lines that have no "series"')
    parser.add_argument("--rate", type=float, help="publish at most this many points per second (replaying a file)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading the file as it grows (tail -f)")
    parser.add_argument("--batch-size", type=int, default=1000, help="points per request (default 1000)")
    parser.add_argument("--linger", type=float, default=0.1, help="seconds a point waits for its batch (default 0.1)")
    parser.add_argument("--buffer", type=int, default=100_000, help="points held at most (default 100000)")
    parser.add_argument("--flush-timeout", type=float, default=30.0, help="seconds to deliver the rest at the end")
    parser.add_argument("--tls-ca", help="PEM CA bundle: use TLS and verify the generator with it")
    parser.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="PEM key of the client certificate")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary at the end")
    return parser


class _Pacer:
    """Holds the reader to ``rate`` points per second (no-op without a rate)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
        self.next = max(self.next, now) + self.interval


def _publish(args: argparse.Namespace, stream: IO[str], publisher: Publisher) -> int:
    """Publish every good line of ``stream``; the number of bad lines."""
    bad = 0
    pacer = _Pacer(args.rate)
    for number, line in enumerate(_lines(stream, args.follow), start=1):
        if not line.strip():
            continue
        try:
            series, value, t = parse_line(line, args.series)
        except BadLine as error:
            bad += 1
            print(f"{PROGRAM}: line {number}: {error}", file=sys.stderr, flush=True)
            continue
        pacer.wait()
        publisher.put(series, value, t)
    return bad


def run(argv: list[str] | None = None, stdin: IO[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        print(f"{PROGRAM}: --rate must be positive", file=sys.stderr)
        return 2
    if args.follow and not args.file:
        print(f"{PROGRAM}: --follow needs a file", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("PULSESTREAM_INGEST_TOKEN") or None
    options: dict[str, Any] = {
        "token": token,
        "credentials": _credentials(args),
        "batch_size": args.batch_size,
        "linger": args.linger,
        "max_buffer": args.buffer,
    }
    stream: IO[str] = stdin or sys.stdin
    if args.file:
        stream = open(args.file, encoding="utf-8")  # noqa: SIM115 - closed below, after following ends
    publisher = Publisher(args.target, **options)
    bad = 0
    try:
        bad = _publish(args, stream, publisher)
    except KeyboardInterrupt:
        pass
    except PublishError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
    finally:
        if args.file:
            stream.close()
    try:
        publisher.close(args.flush_timeout)
    except (PublishError, TimeoutError) as error:
        print(f"{PROGRAM}: {error or 'timed out'}", file=sys.stderr)
        return 3
    stats = publisher.stats
    if not args.quiet:
        print(
            f"{PROGRAM}: {stats.acknowledged} points acknowledged by {args.target} ({stats.accepted} stored, "
            f"{stats.duplicates} duplicates, {stats.out_of_order} out of order, {stats.refused} refused), "
            f"{bad} bad lines",
            file=sys.stderr,
        )
    if stats.refused or stats.out_of_order:
        return 3
    return 1 if bad else 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROGRAM}: %(message)s")
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")
    sys.exit(run())


if __name__ == "__main__":
    main()
