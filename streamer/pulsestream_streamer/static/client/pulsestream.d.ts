// Types of pulsestream.js (kept by hand beside it; the JSDoc there says the same).

export declare const VERSION: string;

/** `connecting` until the first snapshot, `live` while a stream is open, `reconnecting` between streams, `closed` for good. */
export type Status = "connecting" | "live" | "reconnecting" | "closed";

/** A point as D3 draws it: raw ticks have `t`, `v`, `seq`; buckets add min/max/mean/count/first/last. */
export interface Point {
  series: string;
  /** Epoch milliseconds (a bucket's start). */
  t: number;
  /** The value (a bucket's mean). */
  v: number;
  /** The generator's sequence, strictly increasing per series. */
  seq: number;
  min?: number;
  max?: number;
  mean?: number;
  count?: number;
  first?: number;
  last?: number;
  /** On the first point after a hole the server reported (`data_gap`). */
  gap?: true;
}

/** The server's `notice` event body. */
export interface Notice {
  /** `upstream_unavailable`, `data_gap`, `degraded`, `slow_consumer`, `max_lifetime`, `server_shutdown`, ... */
  code: string;
  message: string;
  series?: string[];
  retryMs?: number;
  bucketMs?: number;
  resolution?: string;
  [key: string]: unknown;
}

/** What a token function is told: `refused` after a connect with its last token was refused (401/403). */
export interface TokenContext {
  refused: boolean;
}

/** A token, or a function returning a fresh one for each (re)connect. */
export type Credential = string | ((context: TokenContext) => string | Promise<string>);

export interface ConnectOptions {
  /** Series names (default: every series the streamer serves). */
  series?: string[] | string;
  /** `raw` (default) or an aggregate the generator serves: `1s`, `5s`, `1m`. */
  resolution?: string;
  /** History to ask for and keep: milliseconds, or a duration such as `"5m"` (default: the server's). */
  window?: number | string;
  /** At most this many points per series over the window (10 .. 10,000), e.g. the chart's width in pixels. */
  maxPoints?: number;
  /** Wire format; `points()` gives the same rows whatever it is. */
  format?: "d3" | "columns" | "table";
  /** The streamer, e.g. `"http://127.0.0.1:8080"` (default: this page's origin). */
  baseUrl?: string;
  /** Access token (sent as `?access_token=`), or a function returning a fresh one per (re)connect. */
  token?: Credential;
  /** API key (sent as `?api_key=`), for streamers that take keys. */
  apiKey?: Credential;
  /** Start from this cursor (resume an earlier session). */
  lastEventId?: string;
  /** Longest wait between reconnects, in ms (30,000). */
  maxRetryMs?: number;
  /** Aborting it closes the stream. */
  signal?: AbortSignal;
  /** The EventSource class (default `globalThis.EventSource`; in Node e.g. npm `eventsource`). */
  EventSource?: new (url: string) => EventTarget & { close(): void; readyState: number };
  /** Used once per failed connect to read why (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** Jitter source in [0, 1) (default `Math.random`). */
  random?: () => number;
  /** Clock in epoch ms (default `Date.now`), for `delayMs`. */
  now?: () => number;
}

export interface UpdateDetail {
  kind: "snapshot" | "points";
  /** Series whose points changed. */
  series: string[];
  /** The snapshot replaced everything (the cursor could not be honoured). */
  reset: boolean;
  /** The snapshot held exactly the points missed since the cursor. */
  resumed: boolean;
  /** How many points the event carried. */
  points: number;
}

export interface StatusDetail {
  status: Status;
  previous: Status;
}

export interface PulseStreamEventMap {
  update: CustomEvent<UpdateDetail>;
  status: CustomEvent<StatusDetail>;
  notice: CustomEvent<Notice>;
  error: CustomEvent<PulseStreamError>;
}

export declare class PulseStreamError extends Error {
  constructor(message: string, detail?: { status?: number; code?: string; retryAfterMs?: number; parameter?: string });
  /** HTTP status, 0 when the streamer did not answer. */
  readonly status: number;
  /** `unauthorized`, `forbidden`, `rate_limited`, `too_many_streams`, `bad_parameter`, `unreachable`, ... */
  readonly code: string;
  readonly retryAfterMs?: number;
  readonly parameter?: string;
}

export declare class PulseStream extends EventTarget {
  readonly status: Status;
  /** The cursor of the last event: where a reconnect resumes. */
  readonly lastEventId: string;
  /** The last snapshot's meta (units, domains, `bucketMs`, `resolution`, `windowMs`, `series`, ...). */
  readonly meta: Record<string, any> | null;
  /** Width of the points served, in ms (0 for raw). */
  readonly bucketMs: number;
  /** The server's retry, in ms. */
  readonly retryMs: number;
  /** The last notice. */
  readonly notice: Notice | null;
  /** Upstream trouble in force; `series` are those still waiting for points. */
  readonly trouble: Notice | null;
  /** Why the last (re)connect failed; null once a snapshot arrived. */
  readonly error: PulseStreamError | null;
  readonly reconnects: number;
  /** Smoothed delivery delay of live points, in ms. */
  readonly delayMs: number | null;
  /** The stream's URL with credentials hidden. */
  readonly url: string;
  /** The series of the stream. */
  readonly series: string[];
  /** The window kept, in ms (null until known). */
  readonly windowMs: number | null;
  /** The rolling window of `series` in time order (a copy). */
  points(series: string): Point[];
  /** The newest point of `series`. */
  latest(series: string): Point | undefined;
  /** Close the connection and cancel any reconnect. */
  close(): void;
  addEventListener<K extends keyof PulseStreamEventMap>(
    type: K,
    listener: (event: PulseStreamEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PulseStreamEventMap>(
    type: K,
    listener: (event: PulseStreamEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;
}

/** Open a live stream; it connects at once and reconnects on its own until `close()`. */
export declare function connect(options?: ConnectOptions): PulseStream;

/**
 * A token function from an API key: mints at `POST /v1/tokens` (the key in the `X-API-Key` header, never
 * in a URL), hands the token out until shortly before its expiry, then mints a fresh one.
 */
export declare function tokenFromKey(options: {
  apiKey: string;
  baseUrl?: string;
  /** Narrow the tokens to these series globs (within the key's scope). */
  series?: string[];
  /** Token lifetime, e.g. `"15m"` (default: the streamer's STREAMER_TOKEN_TTL). */
  ttl?: string;
  /** Mint again this long before expiry (default: a minute, or a tenth of a short lifetime). */
  refreshBeforeMs?: number;
  fetch?: typeof fetch;
  now?: () => number;
}): (context?: TokenContext) => Promise<string>;

/** `GET /v1/series`: the series the credentials may read (credentials go in headers, not the URL). */
export declare function listSeries(options?: {
  baseUrl?: string;
  token?: Credential;
  apiKey?: Credential;
  fetch?: typeof fetch;
}): Promise<Array<Record<string, any> & { name: string }>>;

/** Milliseconds of a duration such as `"500ms"`, `"5m"`, `"1m30s"` (a number is taken as ms). */
export declare function durationMs(value: number | string): number;

/** The points of a snapshot or points event body, whatever the format, as D3 rows. */
export declare function decodePoints(body: unknown): Point[];

/** The rolling window of every series of a stream (pure; `PulseStream` feeds one). */
export declare class RollingWindow {
  constructor(options?: { windowMs?: number | null; bucketMs?: number });
  windowMs: number | null;
  bucketMs: number;
  readonly edge: number | null;
  replace(points: Point[]): Set<string>;
  merge(points: Point[]): Set<string>;
  markHole(series: string[]): void;
  trim(): void;
  points(series: string): Point[];
  latest(series: string): Point | undefined;
  names(): string[];
}
