"""The tests' one SSE parser follows WHATWG's event-stream rules, whatever the line ends and wherever reads split.

The parser is what every streamer, fault and benchmark test reads with, so it is checked against the
standard here (HTML, 9.2.6 "Interpreting an event stream"), then the clients built on it against a
scripted server on a real loopback socket: no product code involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sse import (
    Connection,
    Event,
    EventSource,
    EventStreamParser,
    RawEvent,
    assert_contiguous,
    following,
    gaps_and_duplicates,
    iter_events,
    parse,
    seqs_by_series,
    sse,
)

LINE_ENDS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}


def _stream(newline: bytes, *lines: bytes) -> bytes:
    return b"".join(line + newline for line in lines)


def _feed_in_cuts(stream: bytes, cut: int, parser: EventStreamParser | None = None) -> list[RawEvent]:
    parser = parser or EventStreamParser()
    return [event for i in range(0, len(stream), cut) for event in parser.feed(stream[i : i + cut])]


def _triples(events: list[RawEvent]) -> list[tuple[bytes, bytes, bytes | None]]:
    return [(e.type, e.data, e.id) for e in events]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_events_comments_and_retry_are_parsed_across_reads(newline: bytes) -> None:
    stream = newline.join(
        [
            b"retry: 2000",
            b"",
            b": ping",
            b"",
            b"event: points",
            b"id: 7",
            b"data: a",
            b"data: b",
            b"",
            b"data: c",
            b"",
            b"",
        ]
    )
    for cut in (1, 2, 3, 5, 64):
        parser = EventStreamParser()
        events = [event for i in range(0, len(stream), cut) for event in parser.feed(stream[i : i + cut])]
        assert [(e.type, e.data, e.id) for e in events] == [(b"points", b"a\nb", b"7"), (b"message", b"c", None)]
        assert parser.comments == 1
        assert parser.retry == 2000


@pytest.mark.parametrize("newline", LINE_ENDS.values(), ids=LINE_ENDS.keys())
def test_every_line_end_and_every_split_of_the_stream_give_the_same_events(newline: bytes) -> None:
    stream = _stream(newline, b"event: snapshot", b"id: 1", b'data: {"n": 1}', b"", b"data: two", b"data: lines", b"")
    expected = [(b"snapshot", b'{"n": 1}', b"1"), (b"message", b"two\nlines", None)]
    for cut in range(1, len(stream) + 1):
        assert _triples(_feed_in_cuts(stream, cut)) == expected, f"reads of {cut} bytes"
    for split in range(len(stream) + 1):  # two reads, split at every byte
        parser = EventStreamParser()
        assert _triples(parser.feed(stream[:split]) + parser.feed(stream[split:])) == expected, f"split at {split}"


def test_a_cr_ending_one_read_and_the_lf_starting_the_next_are_one_line_end() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n") == []  # CRLF: one line end, the block is not over
    assert _triples(parser.feed(b"\r\n")) == [(b"message", b"x", None)]
    # Two CRs are two line ends: a blank line, so the event is dispatched at the second CR.
    assert _triples(EventStreamParser().feed(b"data: y\r\r")) == [(b"message", b"y", None)]


def test_multi_line_data_keeps_empty_lines_and_drops_only_the_last_line_feed() -> None:
    events = EventStreamParser().feed(b"data: a\ndata:\ndata: b\ndata\n\n")
    assert _triples(events) == [(b"message", b"a\n\nb\n", None)]
    # A block whose only data line is empty is still an event, with empty data.
    assert _triples(EventStreamParser().feed(b"data:\n\n")) == [(b"message", b"", None)]


def test_one_leading_space_is_stripped_and_a_field_without_colon_has_an_empty_value() -> None:
    events = EventStreamParser().feed(b"data:  two spaces\ndata:none\nevent\n\n")
    assert _triples(events) == [(b"message", b" two spaces\nnone", None)]


def test_comments_and_unknown_fields_are_not_events_and_comments_are_counted() -> None:
    parser = EventStreamParser(record=True)
    assert parser.feed(b": heartbeat\n\n:\n\nfoo: bar\n\n") == []
    assert parser.comments == 2
    assert parser.comment_lines == [b": heartbeat", b":"]
    assert parser.blocks == [b": heartbeat", b":", b"foo: bar"]
    assert _triples(parser.feed(b"foo: bar\n: inside\ndata: x\n\n")) == [(b"message", b"x", None)]
    assert parser.comments == 3


def test_retry_takes_only_digits_and_a_retry_only_block_is_not_an_event() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"retry: 1500\n\n") == []
    assert parser.retry == 1500
    assert parser.feed(b"retry: 1.5s\n\nretry: -3\n\nretry:\n\n") == []
    assert parser.retry == 1500, "a retry field that is not all digits is ignored"


def test_the_last_event_id_persists_across_events_and_an_empty_id_clears_it() -> None:
    parser = EventStreamParser()
    first, second = parser.feed(b"id: 41\ndata: a\n\ndata: b\n\n")
    assert (first.id, second.id) == (b"41", None), "an event's own id is its block's id field"
    assert parser.last_event_id == b"41", "what a browser sends back as Last-Event-ID"
    parser.feed(b"id: 42\n\n")  # an id without data moves the id, and dispatches nothing
    assert parser.last_event_id == b"42"
    parser.feed(b"id: bad\0id\ndata: c\n\n")
    assert parser.last_event_id == b"42", "an id holding NUL is ignored"
    parser.feed(b"id\ndata: d\n\n")
    assert parser.last_event_id == b""
    assert EventStreamParser(last_event_id=b"7").last_event_id == b"7", "an EventSource carries it over"


def test_an_empty_event_field_means_message_and_an_unfinished_event_is_never_dispatched() -> None:
    parser = EventStreamParser()
    assert _triples(parser.feed(b"event:\ndata: x\n\nevent: points\ndata: y\n")) == [(b"message", b"x", None)]
    assert parser.pending == b"event: points\ndata: y\n"


def test_a_leading_bom_is_ignored_even_split_across_reads_and_only_at_the_start() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"
    for cut in (1, 2, 3, 4, len(stream)):
        events = _feed_in_cuts(stream, cut)
        assert _triples(events) == [(b"message", b"x", None)], "a later BOM makes an unknown field"


def test_events_carry_json_data_or_text_and_the_block_as_received() -> None:
    snapshot, text = parse(b'event: snapshot\r\nid: c1\r\ndata: {"points": []}\r\n\r\ndata: plain\r\n\r\n')
    assert (snapshot.event, snapshot.data, snapshot.id) == ("snapshot", {"points": []}, "c1")
    assert snapshot.raw == b'event: snapshot\nid: c1\ndata: {"points": []}'
    assert (text.event, text.data, text.id) == ("message", "plain", None)


# --- continuity -----------------------------------------------------------------------------------


def _points(kind: str, *points: tuple[str, int]) -> Event:
    return Event(kind, {"points": [{"series": s, "seq": q} for s, q in points]}, None)


def test_sequences_are_gathered_per_series_from_snapshots_and_points_only() -> None:
    events = [
        _points("snapshot", ("cpu", 100), ("memory", 100)),
        Event("notice", {"code": "upstream_unavailable"}, None),
        _points("points", ("cpu", 150), ("cpu", 200)),
        Event("points", {"columns": [], "rows": []}, None),  # table format: no points to follow
    ]
    assert seqs_by_series(events) == {"cpu": [100, 150, 200], "memory": [100]}


def test_a_gap_or_a_duplicate_breaks_continuity_and_is_named() -> None:
    assert gaps_and_duplicates([100, 150, 200]) == []
    assert gaps_and_duplicates([100, 200, 200, 250]) == [(100, 200), (200, 200)]
    assert gaps_and_duplicates([1000, 2000], step=1000) == []
    assert_contiguous([100, 150, 200])
    for broken in ([100, 200], [100, 150, 150], [200, 150], []):
        with pytest.raises(AssertionError):
            assert_contiguous(broken)


# --- the clients, against a scripted server on loopback -------------------------------------------


class Script:
    """A scripted event-stream server: each connection gets the next script, in awkward chunks, with CRLF."""

    def __init__(self, *scripts: list[bytes]) -> None:
        self.scripts = list(scripts)
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        parts = self.scripts.pop(0) if self.scripts else []
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in parts:
            # Each part in two chunks split mid-line, so a client meets every kind of boundary.
            for piece in (part[:5], part[5:]):
                if piece:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
        writer.write(b"0\r\n\r\n")  # the end of the stream: the server leaves
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def scripted(*scripts: list[bytes]) -> AsyncIterator[tuple[Script, str]]:
    script = Script(*scripts)
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    try:
        yield script, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


FIRST = [
    b"retry: 40\r\n\r\n",
    b'event: snapshot\r\nid: a\r\ndata: {"points": [{"series": "cpu", "seq": 100, "t": 100}]}\r\n\r\n',
    b": heartbeat\r\n\r\n",
    b'event: points\r\nid: b\r\ndata: {"points": [{"series": "cpu", "seq": 150, "t": 150}]}\r\n\r\n',
    b'event: points\r\ndata: {"points": [{"series": "cpu", "seq": 200, "t": 200}]}\r\n\r\n',
]
SECOND = [b'event: snapshot\r\nid: c\r\ndata: {"points": [{"series": "cpu", "seq": 250, "t": 250}]}\r\n\r\n']


async def test_the_httpx_reader_gives_events_retry_comments_blocks_and_the_rest() -> None:
    async with scripted(FIRST) as (_, url), sse(url + "/v1/stream") as reader:
        snapshot = await reader.next()
        assert (snapshot.event, snapshot.id, reader.retry) == ("snapshot", "a", 40)
        assert reader.blocks[0] == b"retry: 40", "retry: came first"
        events = await reader.until(lambda e: e.id == "b")
        assert [e.event for e in events] == ["points"]
        assert reader.comments == [b": heartbeat"]
        rest = await reader.rest()
    assert b"event: points" in rest and b'"seq": 200' in rest
    assert_contiguous(seqs_by_series(reader.events)["cpu"])


async def test_a_raw_connection_reads_the_chunked_body_as_events() -> None:
    async with scripted(FIRST) as (_, url):
        connection = await Connection.open(url + "/v1/stream")
        try:
            assert connection.status == 200 and connection.headers["content-type"] == "text/event-stream"
            events = [event async for event in connection.events()]
        finally:
            connection.close()
    assert [e.event for e in events] == ["snapshot", "points", "points"]


def test_the_synchronous_reader_reads_the_same_stream() -> None:
    ready, stop = threading.Event(), threading.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with scripted(FIRST) as (_, url):
            urls.append(url)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        with httpx.stream("GET", urls[0] + "/v1/stream", timeout=10) as response:
            events: Iterator[Event] = iter_events(response)
            assert [e.event for e in events] == ["snapshot", "points", "points"]
    finally:
        stop.set()
        thread.join(10)


async def test_an_event_source_reconnects_after_retry_with_the_last_event_id() -> None:
    async with scripted(FIRST, SECOND) as (script, url):
        source = EventSource([url], "/v1/stream?series=cpu")
        async with following(source):
            await source.wait_for(lambda e: e.id == "c", what="the second connection's snapshot")
    assert source.connections == 2
    assert source.retry_ms == 40, "the server's retry: is honoured"
    assert b"last-event-id: b\r\n" in script.requests[1].lower(), "the last id seen, not the last event's"
    assert [e.connection for e in source.of("snapshot")] == [1, 2]
    assert source.seqs == {"cpu": [100, 150, 200, 250]}
