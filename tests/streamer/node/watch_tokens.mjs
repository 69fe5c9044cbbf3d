// Follows a streamer that needs credentials with the npm `eventsource` package and only tokens in URLs (issue 17):
// a bare EventSource with ?access_token= (a token minted once, the key in a header), and pulsestream.js with
// tokenFromKey on top of the same class (fresh tokens at every reconnect). Prints one JSON line per thing seen.
// Usage: node watch_tokens.mjs BASE_URL API_KEY NODE_MODULES_PARENT; write "end" on stdin for the summary.
// Used by tests/streamer/test_client_tokens.py.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

import { connect, tokenFromKey } from "../../../streamer/pulsestream_streamer/static/client/pulsestream.js";

const [base, key, parent] = process.argv.slice(2);
const { EventSource } = createRequire(`${parent}/`)("eventsource");
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const minted = await fetch(`${base}/v1/tokens`, {
  method: "POST",
  headers: { "X-API-Key": key, "Content-Type": "application/json" },
  body: JSON.stringify({ series: ["cpu"], ttl: "1h" }),
});
const { token } = await minted.json();
say({ kind: "minted", status: minted.status });

const bare = new EventSource(`${base}/v1/stream?series=cpu&window=5s&access_token=${encodeURIComponent(token)}`);
const seqs = [];
bare.addEventListener("snapshot", (e) => {
  for (const p of JSON.parse(e.data).points) seqs.push(p.seq);
  say({ kind: "snapshot" });
});
bare.addEventListener("points", (e) => {
  for (const p of JSON.parse(e.data).points) seqs.push(p.seq);
  say({ kind: "points" });
});
bare.addEventListener("error", () => say({ kind: "error", readyState: bare.readyState }));

const fromKey = tokenFromKey({ baseUrl: base, apiKey: key });
const tokens = new Set(); // distinct tokens the module was handed
const counted = async (context) => {
  const fresh = await fromKey(context);
  tokens.add(fresh);
  return fresh;
};
const s = connect({ baseUrl: base, series: ["cpu"], window: "20s", token: counted, EventSource });
s.addEventListener("status", (e) => say({ kind: "status", status: e.detail.status }));
s.addEventListener("error", (e) => say({ kind: "module-error", status: e.detail.status, code: e.detail.code }));

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "end") return;
  bare.close();
  const module = { reconnects: s.reconnects, window: s.points("cpu").map((p) => p.seq), tokens: tokens.size, url: s.url };
  say({ kind: "summary", seqs, module });
  s.close();
  process.exit(0);
});
