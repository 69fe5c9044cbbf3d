// Follows a streamer with the npm `eventsource` package two ways, printing one JSON line per thing seen:
// a bare EventSource (its own reconnects, Last-Event-ID), and pulsestream.js on top of the same class.
// Usage: node watch_eventsource.mjs BASE_URL API_KEY NODE_MODULES_PARENT; write "end" on stdin to stop,
// then it prints {"kind": "summary", ...} and exits.
// Used by tests/streamer/test_npm_eventsource_and_httpx_sse_see_no_spurious_events.py.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

import { connect } from "../../../streamer/pulsestream_streamer/static/client/pulsestream.js";

const [base, key, parent] = process.argv.slice(2);
const { EventSource } = createRequire(`${parent}/`)("eventsource");
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const url = `${base}/v1/stream?series=cpu&window=5s&api_key=${encodeURIComponent(key)}`;
const bare = new EventSource(url);
const seqs = [];
bare.addEventListener("open", () => say({ kind: "open", readyState: bare.readyState }));
bare.addEventListener("error", (e) => say({ kind: "error", readyState: bare.readyState, message: e.message ?? null }));
bare.addEventListener("message", (e) => say({ kind: "message", data: e.data }));
for (const name of ["snapshot", "points", "notice"]) {
  bare.addEventListener(name, (e) => {
    const body = JSON.parse(e.data);
    if (name !== "notice") for (const p of body.points) seqs.push(p.seq);
    say({ kind: name, readyState: bare.readyState, code: body.code ?? null, reset: body.reset ?? null, resumed: body.resumed ?? null, id: e.lastEventId });
  });
}

const s = connect({ baseUrl: base, series: ["cpu"], window: "10s", apiKey: key, EventSource });
const statuses = [];
s.addEventListener("status", (e) => statuses.push(e.detail.status));

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "end") return;
  bare.close();
  say({ kind: "summary", seqs, module: { statuses, reconnects: s.reconnects, window: s.points("cpu").map((p) => p.seq), status: s.status } });
  s.close();
  process.exit(0);
});
