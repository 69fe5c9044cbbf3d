// @ts-check
/**
 * pulsestream.js: live time-series from a pulsestream streamer, as a rolling window per series.
 *
 *     import { connect } from "/client/pulsestream.js";
 *     const s = connect({ series: ["cpu"], resolution: "raw", window: "1m" });
 *     s.addEventListener("update", () => draw(s.points("cpu")));
 *
 * One ES module, no build step, no dependency (browsers, Deno, Node 20+ with an EventSource such as
 * npm `eventsource` passed as `EventSource`). What it does that a bare EventSource does not:
 *
 * - One stream for many series (browsers allow 6 HTTP/1.1 connections per origin), kept as one window
 *   per series, in sequence order, trimmed to `window`, merged across the snapshot, live points,
 *   resumed snapshots and `reset` snapshots without a duplicate (a point is keyed by its `seq`).
 * - Reconnects itself, never through EventSource's own retry: each (re)connect asks `token()` for a
 *   fresh token (`tokenFromKey()` makes such a function from an API key: the key goes in a header,
 *   only short-lived tokens go in URLs), resumes with the last event id (`?lastEventId=`, which the server reads like the
 *   header), waits at least the server's `retry` (repeated as `retryMs` in the snapshot and in the
 *   notices that end a stream, since EventSource hides the field) and backs off with jitter.
 * - 401, 403, 429 and other refusals, which an EventSource reports as a bare `error`, are diagnosed
 *   with one `fetch` of the same URL: the JSON error, `Retry-After` for 429.
 * - The server's `notice` events (never named `error`: that name is EventSource's): upstream trouble
 *   shows as `trouble` while the stream stays `live`, cleared series by series as points come back.
 *
 * Wire format: see the streamer's README ("SSE events"). Types: pulsestream.d.ts beside this file.
 */

export const VERSION = "0.1.0";

/** @typedef {"connecting" | "live" | "reconnecting" | "closed"} Status */
/**
 * @typedef {object} Point
 * @property {string} series
 * @property {number} t epoch milliseconds (a bucket's start for aggregates)
 * @property {number} v the value (a bucket's mean)
 * @property {number} seq the generator's sequence (strictly increasing per series)
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [mean]
 * @property {number} [count]
 * @property {number} [first]
 * @property {number} [last]
 * @property {true} [gap] on the first point after a hole the server reported (`data_gap`)
 */
/**
 * @typedef {object} Notice
 * @property {string} code upstream_unavailable, data_gap, degraded, slow_consumer, max_lifetime, server_shutdown, ...
 * @property {string} message
 * @property {string[]} [series]
 * @property {number} [retryMs]
 * @property {number} [bucketMs]
 */
/**
 * What a token function is told: `refused` is true when the last connect was refused (401/403) with
 * the token it gave, so a cached token should not be handed out again.
 * @typedef {{refused: boolean}} TokenContext
 */
/** @typedef {string | ((context: TokenContext) => string | Promise<string>)} Credential */

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const DEFAULT_RETRY_MS = 2_000;
const DEFAULT_MAX_RETRY_MS = 30_000;
const DIAGNOSE_TIMEOUT_MS = 5_000;
/** Codes of the notices after which the server ends the stream (and the client should come back). */
const ENDING = new Set(["max_lifetime", "server_shutdown", "slow_consumer"]);

/**
 * Milliseconds of a duration: a number (ms) or text such as "500ms", "15s", "5m", "1h", "1m30s".
 * @param {number | string} value
 * @returns {number}
 */
export function durationMs(value) {
  if (typeof value === "number" && Number.isFinite(value) && value >= 0) return value;
  const text = String(value).trim();
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (!parts.length || parts.map((m) => m[0]).join("") !== text) {
    throw new TypeError(`not a duration: ${JSON.stringify(value)} (write e.g. 500ms, 15s, 5m, 1h)`);
  }
  return parts.reduce((sum, m) => sum + Number(m[1]) * UNIT_MS[/** @type {keyof UNIT_MS} */ (m[2])], 0);
}

/**
 * The points of a `snapshot` or `points` event body, whatever its format (d3 rows, table, columns),
 * as d3 rows: `{series, t, v, seq}` plus `min, max, mean, count, first, last` for buckets.
 * @param {any} body
 * @returns {Point[]}
 */
export function decodePoints(body) {
  if (!body || typeof body !== "object") return [];
  if (Array.isArray(body.points)) return body.points;
  if (Array.isArray(body.blocks)) return body.blocks.flatMap(fromBlock);
  if (Array.isArray(body.rows) && Array.isArray(body.columns)) {
    const names = body.columns;
    return body.rows.map((/** @type {unknown[]} */ row) => {
      /** @type {any} */ const p = {};
      names.forEach((/** @type {string} */ name, /** @type {number} */ i) => (p[name] = row[i]));
      return p;
    });
  }
  return [];
}

/** @param {any} block */
function fromBlock(block) {
  const out = [];
  let t = block.t0;
  const aggregated = Array.isArray(block.min);
  for (let i = 0; i < block.v.length; i += 1) {
    if (i > 0) t += block.dt[i - 1];
    /** @type {Point} */
    const p = { series: block.series, t, v: block.v[i], seq: block.seq ? block.seq[i] : t };
    if (aggregated) {
      p.min = block.min[i];
      p.max = block.max[i];
      p.mean = block.v[i];
      p.count = block.count[i];
      p.first = block.first[i];
      p.last = block.last[i];
    }
    out.push(p);
  }
  return out;
}

/**
 * First index in `list` (sorted by `key`) whose key is >= `value`.
 * @param {Point[]} list
 * @param {number} value
 * @param {(p: Point) => number} key
 */
function lowerBound(list, value, key) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(list[mid]) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const bySeq = (/** @type {Point} */ p) => p.seq;
const byT = (/** @type {Point} */ p) => p.t;

/**
 * The rolling window of every series of a stream: points in sequence order, one per `seq`, trimmed to
 * the points that overlap the last `windowMs` before the newest point of the stream. Pure (no I/O):
 * {@link PulseStream} feeds it; it is exported for tests and for clients that bring their own transport.
 */
export class RollingWindow {
  /** @param {{windowMs?: number | null, bucketMs?: number}} [options] */
  constructor(options = {}) {
    /** @type {number | null} */
    this.windowMs = options.windowMs ?? null;
    /** Width of the points (0 for raw): a bucket overlaps the window until its end leaves it. */
    this.bucketMs = options.bucketMs ?? 0;
    /** @type {Map<string, Point[]>} */
    this._series = new Map();
    /** @type {Set<string>} series whose next point follows a hole */
    this._holes = new Set();
    this._edge = -Infinity;
  }

  /** Replace everything with `points` (a fresh or `reset` snapshot). @param {Point[]} points */
  replace(points) {
    this._series.clear();
    this._edge = -Infinity;
    return this.merge(points);
  }

  /**
   * Insert `points` by sequence; a sequence already held is replaced, never doubled. Returns the series changed.
   * @param {Point[]} points
   * @returns {Set<string>}
   */
  merge(points) {
    /** @type {Set<string>} */
    const changed = new Set();
    for (const p of points) {
      if (!p || typeof p.series !== "string" || !Number.isFinite(p.t)) continue;
      if (!Number.isFinite(p.seq)) p.seq = p.t;
      let list = this._series.get(p.series);
      if (!list) this._series.set(p.series, (list = []));
      if (this._holes.delete(p.series)) p.gap = true;
      const last = list[list.length - 1];
      if (!last || p.seq > last.seq) list.push(p);
      else {
        const i = lowerBound(list, p.seq, bySeq);
        if (i < list.length && list[i].seq === p.seq) list[i] = p;
        else list.splice(i, 0, p);
      }
      if (p.t > this._edge) this._edge = p.t;
      changed.add(p.series);
    }
    this.trim();
    return changed;
  }

  /** The next point of each of `series` follows a hole (a `data_gap` notice). @param {string[]} series */
  markHole(series) {
    for (const name of series) this._holes.add(name);
  }

  /** Drop the points that no longer overlap the window. */
  trim() {
    if (this.windowMs === null || !Number.isFinite(this._edge)) return;
    const horizon = this._edge - this.windowMs - this.bucketMs;
    for (const list of this._series.values()) {
      const cut = lowerBound(list, horizon, byT);
      if (cut > 0) list.splice(0, cut);
    }
  }

  /** A copy of the window of `series`, in time order. @param {string} series @returns {Point[]} */
  points(series) {
    return (this._series.get(series) ?? []).slice();
  }

  /** The newest point of `series`, if any. @param {string} series @returns {Point | undefined} */
  latest(series) {
    const list = this._series.get(series);
    return list ? list[list.length - 1] : undefined;
  }

  /** Names of the series held. */
  names() {
    return [...this._series.keys()];
  }

  /** The newest point's time across every series (the window's right edge), or null. */
  get edge() {
    return Number.isFinite(this._edge) ? this._edge : null;
  }
}

/** An HTTP refusal or failure, as the streamer explained it (`{"error": {"code", "message"}}`). */
export class PulseStreamError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, retryAfterMs?: number, parameter?: string}} [detail]
   */
  constructor(message, detail = {}) {
    super(message);
    this.name = "PulseStreamError";
    /** HTTP status (0: no answer). */
    this.status = detail.status ?? 0;
    /** The server's error code (`unauthorized`, `forbidden`, `rate_limited`, `bad_parameter`, ...). */
    this.code = detail.code ?? (this.status ? `http_${this.status}` : "unreachable");
    /** @type {number | undefined} */
    this.retryAfterMs = detail.retryAfterMs;
    /** @type {string | undefined} */
    this.parameter = detail.parameter;
  }
}

/**
 * @param {Credential | undefined} credential
 * @param {TokenContext} [context]
 * @returns {Promise<string>}
 */
async function resolveCredential(credential, context = { refused: false }) {
  if (credential === undefined || credential === null) return "";
  const value = typeof credential === "function" ? await credential(context) : credential;
  return value ? String(value) : "";
}

/**
 * Credentials as request headers, for `fetch` (which, unlike an EventSource, can send them): a token
 * as `Authorization: Bearer`, a key as `X-API-Key`. Nothing of them goes into the URL.
 * @param {string} token @param {string} apiKey
 * @returns {Record<string, string>}
 */
function credentialHeaders(token, apiKey) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  else if (apiKey) headers["X-API-Key"] = apiKey;
  return headers;
}

/**
 * The URL of `path` on the streamer, with `query` and the credentials (`access_token`, `api_key`).
 * @param {string | undefined} baseUrl
 * @param {string} path
 * @param {Record<string, string | undefined>} query
 */
function streamerUrl(baseUrl, path, query) {
  const base = baseUrl ? baseUrl.replace(/\/+$/, "") : "";
  const parts = Object.entries(query)
    .filter(([, value]) => value !== undefined && value !== "")
    .map(([key, value]) => `${key}=${String(value).split(",").map(encodeURIComponent).join(",")}`);
  return `${base}${path}${parts.length ? `?${parts.join("&")}` : ""}`;
}

/** The URL with its credentials hidden, for showing and logging. @param {string} url */
function hideCredentials(url) {
  return url.replace(/([?&](?:api_key|access_token)=)[^&]*/g, "$1…");
}

/**
 * Why a request was refused, from its answer (JSON error body, Retry-After).
 * @param {Response} res
 */
async function refusal(res) {
  let message = `HTTP ${res.status}`;
  /** @type {any} */
  let detail = {};
  try {
    const body = await res.json();
    detail = body && typeof body.error === "object" ? body.error : {};
    if (detail.message) message = String(detail.message);
  } catch {
    /* not JSON: keep the status */
  }
  const seconds = Number(res.headers.get("Retry-After"));
  return new PulseStreamError(message, {
    status: res.status,
    code: detail.code,
    parameter: detail.parameter,
    retryAfterMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : undefined,
  });
}

/**
 * The series a streamer serves (`GET /v1/series`): name, unit, description, expectedRange, resolutions, ...
 * Throws a {@link PulseStreamError} that says why when the streamer refuses (401 without a key, ...).
 * @param {{baseUrl?: string, token?: Credential, apiKey?: Credential, fetch?: typeof fetch}} [options]
 * @returns {Promise<any[]>}
 */
export async function listSeries(options = {}) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const url = streamerUrl(options.baseUrl, "/v1/series", {});
  const credentials = credentialHeaders(await resolveCredential(options.token), await resolveCredential(options.apiKey));
  let res;
  try {
    res = await doFetch(url, { headers: { Accept: "application/json", ...credentials } });
  } catch (error) {
    throw new PulseStreamError(`streamer unreachable: ${error instanceof Error ? error.message : error}`);
  }
  if (!res.ok) throw await refusal(res);
  const body = await res.json();
  return Array.isArray(body) ? body : body.series ?? [];
}

/**
 * A token function for {@link connect} and {@link listSeries} from an API key: the first call trades
 * the key (sent in the `X-API-Key` header, never in a URL) for a short-lived token at `POST /v1/tokens`;
 * later calls hand out the same token until it is within `refreshBeforeMs` of its expiry (or a connect
 * with it was refused), then mint a fresh one. Concurrent calls share one request.
 * Throws a {@link PulseStreamError} saying why the streamer refused (401 for a wrong key, ...).
 * @param {{apiKey: string, baseUrl?: string, series?: string[], ttl?: string, refreshBeforeMs?: number,
 *   fetch?: typeof fetch, now?: () => number}} options
 * @returns {(context?: TokenContext) => Promise<string>}
 */
export function tokenFromKey(options) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const now = options.now ?? Date.now;
  const body = {};
  if (options.series) body.series = [...options.series];
  if (options.ttl) body.ttl = options.ttl;
  /** @type {{token: string, expiresAt: number, lifetimeMs: number} | null} */
  let held = null;
  /** @type {Promise<string> | null} */
  let pending = null;

  async function mint() {
    const url = streamerUrl(options.baseUrl, "/v1/tokens", {});
    let res;
    try {
      res = await doFetch(url, {
        method: "POST",
        headers: { Accept: "application/json", "Content-Type": "application/json", "X-API-Key": options.apiKey },
        body: JSON.stringify(body),
      });
    } catch (error) {
      throw new PulseStreamError(`streamer unreachable: ${error instanceof Error ? error.message : error}`);
    }
    if (res.status !== 201) throw await refusal(res);
    const answer = await res.json();
    const expiresAt = Date.parse(answer.expiresAt);
    const issued = now();
    held = { token: String(answer.token), expiresAt, lifetimeMs: Math.max(0, expiresAt - issued) };
    return held.token;
  }

  return async (context = { refused: false }) => {
    if (held && !context.refused) {
      // Re-mint a little before expiry: a minute, or a tenth of the lifetime for short tokens.
      const margin = options.refreshBeforeMs ?? Math.min(60_000, held.lifetimeMs / 10);
      if (now() < held.expiresAt - margin) return held.token;
    }
    if (!pending) pending = mint().finally(() => (pending = null));
    return pending;
  };
}

/**
 * @typedef {object} ConnectOptions
 * @property {string[] | string} [series] names (default: every series the streamer serves)
 * @property {string} [resolution] "raw" (default), "1s", "5s", "1m": what the generator aggregates to
 * @property {number | string} [window] history to keep and to ask for: ms, or "5m" (default: the server's)
 * @property {number} [maxPoints] at most this many points per series over the window (e.g. the chart's width)
 * @property {"d3" | "columns" | "table"} [format] wire format; points() gives d3 rows whatever it is
 * @property {string} [baseUrl] the streamer, e.g. "http://127.0.0.1:8080" (default: this page's origin)
 * @property {Credential} [token] access token, or a function (sync or async; see tokenFromKey) returning a fresh one per connect; sent as ?access_token=
 * @property {Credential} [apiKey] API key (sent as ?api_key=, for streamers without tokens)
 * @property {string} [lastEventId] start from this cursor (resume an earlier session)
 * @property {number} [maxRetryMs] longest wait between reconnects (30 s)
 * @property {AbortSignal} [signal] aborting it closes the stream
 * @property {any} [EventSource] the EventSource class (default: globalThis.EventSource)
 * @property {typeof fetch} [fetch] for diagnosing refusals (default: globalThis.fetch)
 * @property {() => number} [random] jitter source (default Math.random)
 * @property {() => number} [now] clock in epoch ms (default Date.now), for the delivery delay
 */

/**
 * A live stream of many series. Events: `update` (points changed: detail `{kind, series, reset, resumed, points}`),
 * `status` (detail `{status, previous}`), `notice` (detail: the server's notice), `error` (detail: a
 * {@link PulseStreamError}: a refused or failed (re)connect; the stream retries unless it is then `closed`).
 */
export class PulseStream extends EventTarget {
  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    const series = options.series;
    /** @type {string[] | null} the series asked for (null: every one) */
    this.requested = series === undefined ? null : Array.isArray(series) ? [...series] : String(series).split(",");
    this.options = { ...options };
    /** @type {Status} */
    this.status = "connecting";
    /** The cursor of the last event: where a reconnect resumes. */
    this.lastEventId = options.lastEventId ?? "";
    /** The last snapshot's `meta` (units, domains, `bucketMs`, `resolution`, `windowMs`, ...). */
    /** @type {any} */
    this.meta = null;
    /** Width of the points now served, in ms (0 for raw): `meta.bucketMs`, or a `degraded` notice's. */
    this.bucketMs = 0;
    /** The server's `retry`: the least time to wait before reconnecting. */
    this.retryMs = DEFAULT_RETRY_MS;
    /** @type {Notice | null} the last notice the server sent */
    this.notice = null;
    /** @type {Notice | null} upstream trouble in force (`upstream_unavailable`), `series` those still waiting */
    this.trouble = null;
    /** @type {PulseStreamError | null} why the last (re)connect failed; null once a snapshot arrived */
    this.error = null;
    /** Connections opened after the first. */
    this.reconnects = 0;
    /** Smoothed delivery delay of live points (receive time minus the point's end), in ms; null before any. */
    /** @type {number | null} */
    this.delayMs = null;
    /** The stream's URL, credentials hidden. */
    this.url = "";
    this._window = new RollingWindow({
      windowMs: options.window === undefined ? null : durationMs(options.window),
    });
    this._random = options.random ?? Math.random;
    this._now = options.now ?? Date.now;
    /** @type {any} */
    this._source = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    this._failures = 0;
    this._ending = false;
    this._opens = 0;
    this._freshTokenTried = false;
    if (options.signal) {
      if (options.signal.aborted) queueMicrotask(() => this.close());
      else options.signal.addEventListener("abort", () => this.close(), { once: true });
    }
    queueMicrotask(() => this._open());
  }

  /** The rolling window of `series`: its points in time order (a copy). @param {string} series */
  points(series) {
    return this._window.points(series);
  }

  /** The newest point of `series`. @param {string} series */
  latest(series) {
    return this._window.latest(series);
  }

  /** Names of the series of the stream (as asked, else as the server said, else as seen). */
  get series() {
    if (this.requested) return [...this.requested];
    const named = this.meta && Array.isArray(this.meta.series) ? this.meta.series.map((/** @type {any} */ s) => s.name) : null;
    return named ?? this._window.names();
  }

  /** Width of the window kept, in ms (the option, else the server's `meta.windowMs`). */
  get windowMs() {
    return this._window.windowMs;
  }

  /** Stop: close the connection, cancel any reconnect. */
  close() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this._source) this._source.close();
    this._source = null;
    this._setStatus("closed");
  }

  // ------------------------------------------------------------------ connecting

  async _open() {
    if (this.status === "closed") return;
    this._timer = null;
    const o = this.options;
    let url;
    try {
      url = streamerUrl(o.baseUrl, "/v1/stream", {
        series: this.requested ? this.requested.join(",") : undefined,
        resolution: o.resolution,
        window: o.window === undefined ? undefined : typeof o.window === "number" ? `${o.window}ms` : o.window,
        maxPoints: o.maxPoints === undefined ? undefined : String(o.maxPoints),
        format: o.format,
        lastEventId: this.lastEventId || undefined,
        access_token: await resolveCredential(o.token, { refused: this._freshTokenTried }),
        api_key: await resolveCredential(o.apiKey),
      });
    } catch (error) {
      // A refusal of the token's own request (a wrong key at POST /v1/tokens) keeps its status: 401 closes.
      const failure = error instanceof PulseStreamError ? error : null;
      this._failed(failure ?? new PulseStreamError(`token: ${error instanceof Error ? error.message : error}`, { code: "token" }));
      return;
    }
    if (/** @type {Status} */ (this.status) === "closed") return; // close() may have run while the token came
    const Source = o.EventSource ?? globalThis.EventSource;
    if (!Source) throw new TypeError("no EventSource: pass one as connect({EventSource})");
    this.url = hideCredentials(url);
    this._ending = false;
    if (this._opens > 0) this.reconnects += 1;
    this._opens += 1;
    const es = new Source(url);
    this._source = es;
    let opened = false;
    const mine = (/** @type {(ev: any) => void} */ handler) => (/** @type {any} */ ev) => {
      if (es === this._source) handler(ev);
    };
    es.addEventListener("open", mine(() => (opened = true)));
    es.addEventListener("snapshot", mine((ev) => this._onSnapshot(ev)));
    es.addEventListener("points", mine((ev) => this._onPoints(ev)));
    es.addEventListener("notice", mine((ev) => this._onNotice(ev)));
    es.addEventListener("error", mine(() => this._onDropped(es, url, opened)));
  }

  /**
   * The connection ended or never opened. Reconnect on our own terms (fresh credentials, jittered
   * backoff), never by EventSource's retry; a connection that never opened is diagnosed first.
   * @param {any} es @param {string} url @param {boolean} opened
   */
  _onDropped(es, url, opened) {
    es.close();
    this._source = null;
    if (this.status === "closed") return;
    if (opened) {
      // A stream that ran: the server ended it (with a notice saying so) or the connection broke.
      // After a notice that ends the stream, the server's retry is the whole wait; otherwise the
      // drop counts as a failure, so a server that keeps dropping connections is backed off from.
      const planned = this._ending;
      this._schedule(this._delay(planned ? 0 : this._failures));
      if (!planned) this._failures += 1;
      return;
    }
    this._diagnose(url).then((error) => this._failed(error));
  }

  /** One fetch of the URL that failed: the status and JSON error an EventSource cannot read. @param {string} url */
  async _diagnose(url) {
    const doFetch = this.options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!doFetch) return new PulseStreamError("connection failed");
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), DIAGNOSE_TIMEOUT_MS);
    try {
      const res = await doFetch(url, { headers: { Accept: "text/event-stream" }, signal: ctl.signal });
      if (res.ok) {
        ctl.abort(); // it would stream: the failure was passing
        return new PulseStreamError("the stream closed before it opened; retrying", { status: res.status, code: "closed" });
      }
      return await refusal(res);
    } catch (error) {
      return new PulseStreamError("streamer unreachable", { code: "unreachable" });
    } finally {
      clearTimeout(timer);
    }
  }

  /** A (re)connect failed with `error`: retry what can heal, close on what cannot. @param {PulseStreamError} error */
  _failed(error) {
    if (this.status === "closed") return;
    this.error = error;
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
    const status = error.status;
    if (status === 401 || status === 403) {
      // A token function may have handed out one that expired on the way: one more try with a fresh one.
      if (typeof this.options.token === "function" && !this._freshTokenTried) {
        this._freshTokenTried = true;
        this._schedule(0);
        return;
      }
      this.close();
      return;
    }
    if (status === 400 || status === 404) {
      this.close();
      return;
    }
    const delay = this._delay(this._failures, error.retryAfterMs ?? 0);
    this._failures += 1;
    this._schedule(delay);
  }

  /**
   * How long to wait before reconnect number `failures` (0 = first): never less than the server's
   * retry (or `Retry-After`), doubling per failure up to `maxRetryMs`, plus up to half as much again at
   * random so that the clients of a restarted server do not all come back at once.
   * @param {number} failures @param {number} [floorMs]
   */
  _delay(failures, floorMs = 0) {
    const cap = this.options.maxRetryMs ?? DEFAULT_MAX_RETRY_MS;
    const base = Math.max(floorMs, Math.min(cap, this.retryMs * 2 ** failures));
    return Math.round(base * (1 + this._random() * 0.5));
  }

  /** @param {number} delayMs */
  _schedule(delayMs) {
    if (this.status === "closed") return;
    this._setStatus("reconnecting");
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  /** @param {Status} status */
  _setStatus(status) {
    if (status === this.status) return;
    const previous = this.status;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, previous } }));
  }

  // ------------------------------------------------------------------ events

  /** @param {any} ev */
  _parse(ev) {
    try {
      return JSON.parse(ev.data);
    } catch {
      return null;
    }
  }

  /** @param {MessageEvent} ev */
  _onSnapshot(ev) {
    const body = this._parse(ev);
    if (!body) return;
    if (ev.lastEventId) this.lastEventId = ev.lastEventId;
    if (Number.isFinite(body.retryMs)) this.retryMs = body.retryMs;
    const meta = body.meta ?? {};
    this.meta = meta;
    if (Number.isFinite(meta.bucketMs)) this.bucketMs = meta.bucketMs;
    const win = this._window;
    win.bucketMs = this.bucketMs;
    if (this.options.window === undefined && Number.isFinite(meta.windowMs)) win.windowMs = meta.windowMs;
    const points = decodePoints(body);
    const reset = body.reset === true;
    const resumed = body.resumed === true && !reset;
    // A resumed snapshot holds exactly the points missed: merge. Any other is the window's whole
    // history (fresh, or reset: the cursor could not be honoured): it replaces what is held.
    const changed = resumed ? win.merge(points) : win.replace(points);
    this.trouble = null; // the server repeats a trouble still in force right after the snapshot
    this.error = null;
    this._failures = 0;
    this._freshTokenTried = false;
    this._setStatus("live");
    this._update("snapshot", changed, reset, resumed, points.length);
  }

  /** @param {MessageEvent} ev */
  _onPoints(ev) {
    const body = this._parse(ev);
    if (!body) return;
    if (ev.lastEventId) this.lastEventId = ev.lastEventId;
    const points = decodePoints(body);
    const changed = this._window.merge(points);
    let newest = -Infinity;
    for (const p of points) if (p.t > newest) newest = p.t;
    if (Number.isFinite(newest)) {
      // Live points only: a snapshot's newest point may be a bucket that closed long ago.
      const sample = this._now() - (newest + this.bucketMs);
      this.delayMs = this.delayMs === null ? sample : 0.8 * this.delayMs + 0.2 * sample;
    }
    if (this.trouble && this.trouble.series) {
      const waiting = this.trouble.series.filter((name) => !changed.has(name));
      this.trouble = waiting.length ? { ...this.trouble, series: waiting } : null;
    }
    this._setStatus("live");
    this._update("points", changed, false, false, points.length);
  }

  /** @param {MessageEvent} ev */
  _onNotice(ev) {
    /** @type {Notice | null} */
    const notice = this._parse(ev);
    if (!notice || typeof notice.code !== "string") return;
    this.notice = notice;
    if (Number.isFinite(notice.retryMs)) this.retryMs = /** @type {number} */ (notice.retryMs);
    const series = Array.isArray(notice.series) ? notice.series : this.series;
    if (notice.code === "upstream_unavailable") {
      const already = this.trouble?.series ?? [];
      this.trouble = { ...notice, series: [...new Set([...already, ...series])] };
    } else if (notice.code === "data_gap") {
      this._window.markHole(series);
    } else if (notice.code === "degraded" && Number.isFinite(notice.bucketMs)) {
      this.bucketMs = /** @type {number} */ (notice.bucketMs);
      this._window.bucketMs = this.bucketMs;
    }
    if (ENDING.has(notice.code)) this._ending = true;
    this.dispatchEvent(new CustomEvent("notice", { detail: notice }));
  }

  /**
   * @param {string} kind @param {Set<string>} changed @param {boolean} reset @param {boolean} resumed
   * @param {number} count points the event carried
   */
  _update(kind, changed, reset, resumed, count) {
    const detail = { kind, series: [...changed], reset, resumed, points: count };
    this.dispatchEvent(new CustomEvent("update", { detail }));
  }
}

/**
 * Open a live stream of `series` (see {@link ConnectOptions}); it connects at once and reconnects on its own.
 * @param {ConnectOptions} [options]
 * @returns {PulseStream}
 */
export function connect(options = {}) {
  return new PulseStream(options);
}
