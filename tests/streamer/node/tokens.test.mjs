// Unit tests of pulsestream.js's token handling (issue 17), node:test: tokenFromKey mints with the key in a
// header and never in a URL, hands the token out until shortly before expiry, mints again when a connect
// was refused; connect() passes {refused} to token functions; listSeries sends credentials as headers.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";

import { connect, listSeries, tokenFromKey } from "../../../streamer/pulsestream_streamer/static/client/pulsestream.js";

const KEY = "a+b/c=key";
const flush = () => new Promise((resolve) => setImmediate(resolve));

function answer(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** A streamer's POST /v1/tokens: records each request, mints t1, t2, ... expiring `lifetimeMs` after `clock.now`. */
function minter(clock, lifetimeMs = 900_000) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    requests.push({ url: String(url), init });
    if (init.headers?.["X-API-Key"] !== KEY) return answer(401, { error: { code: "unauthorized", message: "the API key is not valid" } });
    const expiresAt = new Date(clock.now + lifetimeMs).toISOString().replace(/\.\d+Z$/, "Z");
    return answer(201, { token: `t${requests.length}`, expiresAt, series: ["**"], tokenType: "Bearer" });
  };
  return { fetch, requests };
}

class ScriptedSource extends EventTarget {
  static all = [];
  constructor(url) {
    super();
    this.url = url;
    ScriptedSource.all.push(this);
  }
  static get last() {
    return ScriptedSource.all[ScriptedSource.all.length - 1];
  }
  refuse() {
    this.dispatchEvent(new Event("error"));
  }
  close() {}
}

describe("tokenFromKey", () => {
  it("trades the key in a header for a token, once, and never puts the key in a URL", async () => {
    const clock = { now: Date.UTC(2026, 0, 1) };
    const { fetch, requests } = minter(clock);
    const token = tokenFromKey({ apiKey: KEY, baseUrl: "http://s/", series: ["cpu"], ttl: "10m", fetch, now: () => clock.now });
    const [a, b] = await Promise.all([token(), token()]);
    assert.equal(a, "t1");
    assert.equal(b, "t1", "concurrent calls share one request");
    assert.equal(await token(), "t1");
    assert.equal(requests.length, 1);
    const [{ url, init }] = requests;
    assert.equal(url, "http://s/v1/tokens");
    assert.ok(!url.includes(KEY) && !url.includes(encodeURIComponent(KEY)));
    assert.equal(init.method, "POST");
    assert.deepEqual(JSON.parse(init.body), { series: ["cpu"], ttl: "10m" });
  });

  it("mints again shortly before expiry, and at once after a refused connect", async () => {
    const clock = { now: Date.UTC(2026, 0, 1) };
    const { fetch, requests } = minter(clock, 900_000);
    const token = tokenFromKey({ apiKey: KEY, fetch, now: () => clock.now });
    assert.equal(await token(), "t1");
    clock.now += 900_000 - 61_000; // more than a minute left
    assert.equal(await token(), "t1");
    clock.now += 2_000; // within the last minute
    assert.equal(await token(), "t2");
    assert.equal(await token({ refused: true }), "t3");
    assert.equal(requests.length, 3);
  });

  it("a wrong key is a PulseStreamError with the server's status and code", async () => {
    const { fetch } = minter({ now: 0 });
    const token = tokenFromKey({ apiKey: "wrong", fetch });
    await assert.rejects(token(), (error) => error.status === 401 && error.code === "unauthorized");
  });
});

describe("connect with tokens", () => {
  beforeEach(() => {
    ScriptedSource.all = [];
    mock.timers.enable({ apis: ["setTimeout"] });
  });
  afterEach(() => mock.timers.reset());

  it("tells the token function when its token was refused, and closes on a key the streamer refuses", async () => {
    const contexts = [];
    const token = async (context) => {
      contexts.push(context.refused);
      return `t${contexts.length}`;
    };
    const fetch = async () => answer(401, { error: { code: "unauthorized", message: "the token expired" } });
    const s = connect({ series: ["cpu"], token, fetch, EventSource: ScriptedSource, baseUrl: "http://s", random: () => 0 });
    await flush();
    assert.equal(new URL(ScriptedSource.last.url).searchParams.get("access_token"), "t1");
    ScriptedSource.last.refuse();
    await flush();
    await flush();
    mock.timers.tick(0);
    await flush();
    assert.deepEqual(contexts, [false, true]);
    assert.equal(new URL(ScriptedSource.last.url).searchParams.get("access_token"), "t2");
    s.close();

    // tokenFromKey with a key the streamer refuses: the mint's 401 closes the stream, nothing is streamed.
    const wrong = tokenFromKey({ apiKey: "wrong", fetch: minter({ now: 0 }).fetch });
    const before = ScriptedSource.all.length;
    const t = connect({ series: ["cpu"], token: wrong, EventSource: ScriptedSource, baseUrl: "http://s" });
    for (let i = 0; i < 6; i += 1) {
      await flush();
      mock.timers.tick(0);
    }
    assert.equal(t.status, "closed");
    assert.equal(t.error.status, 401);
    assert.equal(ScriptedSource.all.length, before, "no EventSource was opened");
  });
});

describe("listSeries credentials", () => {
  it("sends a token as Authorization and a key as X-API-Key, in headers only", async () => {
    const seen = [];
    const fetch = async (url, init) => {
      seen.push({ url: String(url), headers: init.headers });
      return answer(200, [{ name: "cpu" }]);
    };
    await listSeries({ baseUrl: "http://s", token: () => "tok", fetch });
    await listSeries({ baseUrl: "http://s", apiKey: KEY, fetch });
    assert.deepEqual(seen.map((r) => r.url), ["http://s/v1/series", "http://s/v1/series"]);
    assert.equal(seen[0].headers.Authorization, "Bearer tok");
    assert.equal(seen[1].headers["X-API-Key"], KEY);
  });
});
