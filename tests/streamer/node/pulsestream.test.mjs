// Unit tests of pulsestream.js with node:test (Node 20, no npm dependency): the window's merge, trim
// and reset rules, decoding of every wire format, and the reconnect logic against a scripted
// EventSource and fetch, on mocked timers. Run: node --test tests/streamer/node/
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";

import {
  RollingWindow,
  connect,
  decodePoints,
  durationMs,
  listSeries,
} from "../../../streamer/pulsestream_streamer/static/client/pulsestream.js";

const raw = (series, seq, v = seq / 1000) => ({ series, t: seq, v, seq });
const seqs = (points) => points.map((p) => p.seq);

/** An EventSource whose server is the test: open(), send(event, body, id), drop(), refuse(). */
class ScriptedSource extends EventTarget {
  static all = [];
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    this.closed = false;
    ScriptedSource.all.push(this);
  }
  static get last() {
    return ScriptedSource.all[ScriptedSource.all.length - 1];
  }
  open() {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }
  send(event, body, id = "") {
    this.dispatchEvent(new MessageEvent(event, { data: JSON.stringify(body), lastEventId: id }));
  }
  drop() {
    this.readyState = 0; // what a browser does before its own retry (the module must not let it)
    this.dispatchEvent(new Event("error"));
  }
  refuse() {
    this.readyState = 2;
    this.dispatchEvent(new Event("error"));
  }
  close() {
    this.readyState = 2;
    this.closed = true;
  }
}

const snapshot = (points, extra = {}) => ({ points, meta: { bucketMs: 0, windowMs: 10_000 }, reset: false, resumed: false, retryMs: 100, ...extra });
const flush = () => new Promise((resolve) => setImmediate(resolve));

function answer(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

describe("durations and formats", () => {
  it("reads durations as the server writes them", () => {
    assert.equal(durationMs("500ms"), 500);
    assert.equal(durationMs("1m30s"), 90_000);
    assert.equal(durationMs(2500), 2500);
    assert.throws(() => durationMs("5 minutes"), /not a duration/);
  });

  it("decodes d3 rows, table rows and column blocks into the same points", () => {
    const rows = [raw("cpu", 1000), raw("cpu", 1010)];
    assert.deepEqual(decodePoints({ points: rows }), rows);
    assert.deepEqual(decodePoints({ columns: ["series", "t", "v", "seq"], rows: [["cpu", 1000, 1, 1000], ["cpu", 1010, 1.01, 1010]] }), [
      { series: "cpu", t: 1000, v: 1, seq: 1000 },
      { series: "cpu", t: 1010, v: 1.01, seq: 1010 },
    ]);
    const block = { series: "cpu", t0: 1000, dt: [10, 10], v: [1, 2, 3] };
    assert.deepEqual(seqs(decodePoints({ blocks: [block] })), [1000, 1010, 1020]);
    const buckets = { series: "m", t0: 0, dt: [1000], v: [1, 2], min: [0, 1], max: [2, 3], count: [10, 10], first: [0, 1], last: [2, 3], seq: [7, 8] };
    const [a, b] = decodePoints({ blocks: [buckets] });
    assert.deepEqual(a, { series: "m", t: 0, v: 1, seq: 7, min: 0, max: 2, mean: 1, count: 10, first: 0, last: 2 });
    assert.equal(b.t, 1000);
  });
});

describe("RollingWindow", () => {
  it("merges out of order and repeated points into one point per sequence, in order", () => {
    const w = new RollingWindow({ windowMs: 1_000 });
    w.merge([raw("cpu", 100), raw("cpu", 300)]);
    w.merge([raw("cpu", 200), raw("cpu", 300, 42), raw("cpu", 400)]);
    assert.deepEqual(seqs(w.points("cpu")), [100, 200, 300, 400]);
    assert.equal(w.points("cpu")[2].v, 42, "the newer copy of a sequence wins");
  });

  it("trims every series to the window before the newest point of the stream", () => {
    const w = new RollingWindow({ windowMs: 1_000 });
    w.merge([raw("cpu", 0), raw("cpu", 500), raw("mem", 400)]);
    w.merge([raw("cpu", 1_450)]);
    assert.deepEqual(seqs(w.points("cpu")), [500, 1_450]);
    assert.deepEqual(seqs(w.points("mem")), [], "a stalled series slides out with the others");
  });

  it("keeps a bucket while any of it overlaps the window", () => {
    const w = new RollingWindow({ windowMs: 60_000, bucketMs: 60_000 });
    w.merge([0, 60_000, 120_000].map((t) => ({ series: "cpu", t, v: 1, seq: t })));
    assert.deepEqual(seqs(w.points("cpu")), [0, 60_000, 120_000]);
    w.merge([{ series: "cpu", t: 180_000, v: 1, seq: 180_000 }]);
    assert.deepEqual(seqs(w.points("cpu")), [60_000, 120_000, 180_000]);
  });

  it("replace discards everything held (a reset) and marks the point after a hole", () => {
    const w = new RollingWindow({ windowMs: 10_000 });
    w.merge([raw("cpu", 100), raw("mem", 100)]);
    w.replace([raw("cpu", 5_000)]);
    assert.deepEqual(w.names(), ["cpu"]);
    w.markHole(["cpu"]);
    w.merge([raw("cpu", 7_000), raw("cpu", 7_100)]);
    assert.deepEqual(w.points("cpu").map((p) => p.gap === true), [false, true, false]);
  });

  it("points() is a copy: the caller cannot break the window", () => {
    const w = new RollingWindow();
    w.merge([raw("cpu", 1)]);
    w.points("cpu").length = 0;
    assert.equal(w.points("cpu").length, 1);
  });
});

describe("connect", () => {
  beforeEach(() => {
    ScriptedSource.all = [];
    mock.timers.enable({ apis: ["setTimeout"] });
  });
  afterEach(() => mock.timers.reset());

  const open = (options = {}) =>
    connect({ series: ["cpu", "mem"], window: "10s", EventSource: ScriptedSource, random: () => 0, baseUrl: "http://s", ...options });

  it("asks for what it was given, with the credentials encoded", async () => {
    const s = open({ resolution: "1s", maxPoints: 800, format: "columns", apiKey: "a+b/c=", token: () => "tok en" });
    await flush();
    const url = new URL(ScriptedSource.last.url);
    assert.equal(url.pathname, "/v1/stream");
    assert.equal(url.searchParams.get("series"), "cpu,mem");
    assert.equal(url.searchParams.get("resolution"), "1s");
    assert.equal(url.searchParams.get("window"), "10s");
    assert.equal(url.searchParams.get("maxPoints"), "800");
    assert.equal(url.searchParams.get("format"), "columns");
    assert.equal(url.searchParams.get("api_key"), "a+b/c=");
    assert.ok(ScriptedSource.last.url.includes("api_key=a%2Bb%2Fc%3D"), "a + in a key is sent encoded");
    assert.equal(url.searchParams.get("access_token"), "tok en");
    assert.ok(!s.url.includes("tok%20en") && !s.url.includes("a%2B"), "credentials are hidden in s.url");
    assert.ok(s.url.includes("api_key=…") && s.url.includes("access_token=…"));
    s.close();
  });

  it("is live with the snapshot, merges points, and resumes with the last id after a drop", async () => {
    const s = open();
    const updates = [];
    s.addEventListener("update", (e) => updates.push(e.detail));
    await flush();
    assert.equal(s.status, "connecting");
    const first = ScriptedSource.last;
    first.open();
    first.send("snapshot", snapshot([raw("cpu", 1_000), raw("cpu", 1_100)]), "c1");
    assert.equal(s.status, "live");
    first.send("points", { points: [raw("cpu", 1_200), raw("mem", 1_200)] }, "c2");
    assert.deepEqual(updates.map((u) => u.kind), ["snapshot", "points"]);
    assert.deepEqual(updates[1].series.sort(), ["cpu", "mem"]);

    first.drop();
    assert.ok(first.closed, "EventSource's own retry is never used");
    assert.equal(s.status, "reconnecting");
    mock.timers.tick(99);
    await flush();
    assert.equal(ScriptedSource.all.length, 1, "not before the server's retry (retryMs 100)");
    mock.timers.tick(1);
    await flush();
    const second = ScriptedSource.last;
    assert.equal(new URL(second.url).searchParams.get("lastEventId"), "c2");
    second.open();
    // The resumed snapshot repeats a point: it stays one.
    second.send("snapshot", snapshot([raw("cpu", 1_200), raw("cpu", 1_300)], { resumed: true }), "c3");
    assert.deepEqual(seqs(s.points("cpu")), [1_000, 1_100, 1_200, 1_300]);
    assert.equal(s.reconnects, 1);
    assert.equal(s.lastEventId, "c3");
    s.close();
    assert.equal(s.status, "closed");
  });

  it("a reset snapshot replaces the window", async () => {
    const s = open();
    await flush();
    ScriptedSource.last.open();
    ScriptedSource.last.send("snapshot", snapshot([raw("cpu", 1_000), raw("mem", 1_000)]), "c1");
    ScriptedSource.last.send("snapshot", snapshot([raw("cpu", 9_000)], { reset: true }), "c9");
    assert.deepEqual(seqs(s.points("cpu")), [9_000]);
    assert.deepEqual(seqs(s.points("mem")), []);
    s.close();
  });

  it("keeps upstream trouble while live and clears it series by series as points return", async () => {
    const s = open();
    const notices = [];
    s.addEventListener("notice", (e) => notices.push(e.detail.code));
    await flush();
    const es = ScriptedSource.last;
    es.open();
    es.send("snapshot", snapshot([raw("cpu", 1_000)]), "c1");
    es.send("notice", { code: "upstream_unavailable", message: "generator unavailable", series: ["cpu"] });
    es.send("notice", { code: "upstream_unavailable", message: "generator unavailable", series: ["mem"] });
    assert.equal(s.status, "live");
    assert.deepEqual(s.trouble.series, ["cpu", "mem"]);
    es.send("points", { points: [raw("cpu", 1_100)] }, "c2");
    assert.deepEqual(s.trouble.series, ["mem"]);
    es.send("points", { points: [raw("mem", 1_100)] }, "c3");
    assert.equal(s.trouble, null);
    assert.deepEqual(notices, ["upstream_unavailable", "upstream_unavailable"]);
    s.close();
  });

  it("a degraded notice changes the width; an ending notice sets the wait to its retry", async () => {
    const s = open();
    await flush();
    let es = ScriptedSource.last;
    es.open();
    es.send("snapshot", snapshot([raw("cpu", 1_000)]), "c1");
    es.send("notice", { code: "degraded", message: "coarser", bucketMs: 500, resolution: "500ms" });
    assert.equal(s.bucketMs, 500);
    es.send("notice", { code: "server_shutdown", message: "bye", retryMs: 40 });
    es.drop();
    mock.timers.tick(40);
    await flush();
    es = ScriptedSource.last;
    assert.equal(ScriptedSource.all.length, 2, "back after the shutdown's short retry");
    s.close();
  });

  it("computes the delivery delay from live points only, never from the snapshot", async () => {
    let now = 100_000;
    const s = open({ now: () => now });
    await flush();
    const es = ScriptedSource.last;
    es.open();
    es.send("snapshot", snapshot([raw("cpu", 60_000)]), "c1"); // 40 s old history
    assert.equal(s.delayMs, null);
    now = 100_050;
    es.send("points", { points: [raw("cpu", 100_000)] }, "c2");
    assert.equal(s.delayMs, 50);
    s.close();
  });

  it("diagnoses a refusal with one fetch: 429 waits Retry-After, 401 closes with the server's message", async () => {
    const calls = [];
    let reply = () => answer(429, { error: { code: "rate_limited", message: "slow down" } }, { "Retry-After": "3" });
    const fetch = async (url) => (calls.push(url), reply());
    const s = open({ fetch });
    const errors = [];
    s.addEventListener("error", (e) => errors.push(e.detail));
    await flush();
    ScriptedSource.last.refuse();
    await flush();
    assert.equal(calls.length, 1);
    assert.equal(errors[0].status, 429);
    assert.equal(s.status, "reconnecting");
    mock.timers.tick(2_999);
    await flush();
    assert.equal(ScriptedSource.all.length, 1, "no reconnect before Retry-After");
    mock.timers.tick(1);
    await flush();
    assert.equal(ScriptedSource.all.length, 2);
    reply = () => answer(401, { error: { code: "unauthorized", message: "a valid API key is required" } });
    ScriptedSource.last.refuse();
    await flush();
    await flush();
    assert.equal(s.status, "closed");
    assert.equal(s.error.code, "unauthorized");
    assert.equal(s.error.message, "a valid API key is required");
  });

  it("asks a token function for a fresh token at every connect, and retries a 401 once with a new one", async () => {
    let issued = 0;
    const token = async () => `t${(issued += 1)}`;
    const fetch = async () => answer(401, { error: { code: "unauthorized", message: "expired" } });
    const s = open({ token, fetch });
    await flush();
    assert.equal(new URL(ScriptedSource.last.url).searchParams.get("access_token"), "t1");
    ScriptedSource.last.refuse();
    await flush();
    await flush();
    mock.timers.tick(0);
    await flush();
    assert.equal(new URL(ScriptedSource.last.url).searchParams.get("access_token"), "t2");
    ScriptedSource.last.refuse();
    await flush();
    await flush();
    assert.equal(s.status, "closed", "a second refusal in a row is final");
  });

  it("backs off exponentially with jitter while the streamer is unreachable, up to maxRetryMs", async () => {
    const fetch = async () => {
      throw new TypeError("connection refused");
    };
    const s = open({ fetch, random: () => 1, maxRetryMs: 1_000 });
    await flush();
    const waits = [];
    for (let i = 0; i < 5; i += 1) {
      ScriptedSource.last.refuse();
      await flush();
      await flush();
      const before = ScriptedSource.all.length;
      let waited = 0;
      while (ScriptedSource.all.length === before) {
        mock.timers.tick(10);
        waited += 10;
        await flush();
      }
      waits.push(waited);
    }
    // retry 2000 ms by default, doubled per failure, capped at 1000, times 1.5 at most.
    assert.deepEqual(waits, [1_500, 1_500, 1_500, 1_500, 1_500]);
    assert.equal(s.error.code, "unreachable");
    s.close();
  });

  it("doubles the wait per failure from the server's retry", async () => {
    const fetch = async () => answer(503, { error: { code: "server_shutdown", message: "draining" } });
    const s = open({ fetch, random: () => 0 });
    await flush();
    ScriptedSource.last.open();
    ScriptedSource.last.send("snapshot", snapshot([]), "c1"); // retryMs 100
    const waits = [];
    ScriptedSource.last.drop();
    for (let i = 0; i < 4; i += 1) {
      const before = ScriptedSource.all.length;
      let waited = 0;
      while (ScriptedSource.all.length === before) {
        mock.timers.tick(10);
        waited += 10;
        await flush();
      }
      waits.push(waited);
      ScriptedSource.last.refuse();
      await flush();
      await flush();
    }
    assert.deepEqual(waits, [100, 200, 400, 800]);
    s.close();
  });
});

describe("listSeries", () => {
  it("returns the list, or throws the server's reason", async () => {
    const ok = async () => answer(200, [{ name: "cpu" }]);
    assert.deepEqual(await listSeries({ fetch: ok }), [{ name: "cpu" }]);
    const no = async () => answer(401, { error: { code: "unauthorized", message: "key needed" } });
    await assert.rejects(listSeries({ fetch: no }), (error) => error.status === 401 && error.code === "unauthorized");
  });
});
