/*
 * pulsestream dashboard: one EventSource, a D3 line chart per series on a shared sliding time axis,
 * and a table of the latest values.
 *
 * Why it is built this way:
 * - One EventSource for all series: browsers allow only 6 HTTP/1.1 connections per origin.
 * - Events only update in-memory buffers and set a dirty flag; drawing happens in requestAnimationFrame,
 *   so a burst of events costs one render, and a hidden tab costs none.
 * - Paths are rebuilt when data changes (or once a second); between rebuilds the time axis slides by a
 *   transform, which keeps the motion smooth without re-generating path strings every frame.
 * - The series have different units (%, MB, req/s, ms), so each gets its own lane and y axis, all
 *   sharing one time axis, instead of one y axis that would flatten all but the largest series.
 * - EventSource cannot set headers, so an API key given as `/?api_key=...` is passed on as a query
 *   parameter to every /v1 call.
 * - State is exposed read-only on `window.pulsestream` for tests and for debugging in the console.
 * - The resolutions come from the server (/v1/series carries them, from the generator's ListSeries),
 *   never from a list in this file: until the first answer the picker offers only "raw", which every
 *   generator serves. A bucket's width is read from its name ("5s", "1m"), the durations' notation.
 * - The stream asks for `maxPoints` = the plot's width in pixels: the server reduces each series to about
 *   one bucket per pixel (min/max/mean/count, drawn as a line with its min-max band), so a 10-minute window
 *   at 10 ms is ~1,000 buckets, not 60,000 points. The bucket width actually served is `meta.bucketMs`.
 */
(() => {
  "use strict";

  const d3 = window.d3;
  const FALLBACK_RESOLUTIONS = ["raw"]; // until /v1/series says what the generator aggregates to
  const WINDOWS = { "1m": 60_000, "5m": 300_000, "10m": 600_000 };
  const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
  const MAX_POINTS_PER_SERIES = 20_000; // memory bound even if the server sends more than the window
  const REBUILD_EVERY_MS = 1_000; // rebuild paths at least this often while idle (trim, rescale)
  const SELECTION_DEBOUNCE_MS = 200; // ticking several boxes in a row reopens the stream once

  const pageParams = new URLSearchParams(window.location.search);
  // A key never holds a space, but may hold "+", which URLSearchParams decodes as a space.
  const apiKey = (pageParams.get("api_key") || "").replace(/ /g, "+");

  const state = {
    status: "connecting", // connecting | live | reconnecting | error | paused
    message: "",
    events: 0,
    points: 0,
    snapshots: 0,
    serverErrors: 0,
    opens: 0,
    reconnects: 0,
    renders: 0,
    lastEventId: "",
    streamUrl: "",
    resolution: pageParams.get("resolution") || "raw", // checked against the served list once it is known
    resolutions: FALLBACK_RESOLUTIONS,
    window: pageParams.get("window") in WINDOWS ? pageParams.get("window") : "5m",
    selected: [],
    delayMs: null,
    renderMs: null, // smoothed cost of one full redraw (chart and table), for profiling
    meta: {},
    bucketMs: 0, // width of the points served (meta.bucketMs): 0 = raw ticks
    maxPoints: null, // what the stream asked for (the plot's width in pixels)
    notice: null, // the last server notice that is not trouble (e.g. {code: "degraded", bucketMs})
    firstDrawMs: null, // performance.now() when the chart first drew data (time to first draw)
    openDrawMs: null, // from opening the current stream to drawing its data (a window or resolution switch)
  };
  let openedAt = 0;
  const seriesInfo = new Map(); // name -> {name, unit, description, range: [lo, hi] | null}
  const buffers = new Map(); // name -> points sorted by seq, trimmed to the window
  const color = d3.scaleOrdinal(d3.schemeTableau10);

  const $ = (sel) => document.querySelector(sel);
  const el = {
    status: $("#status"),
    statusLabel: $("#status .status-label"),
    banner: $("#error-banner"),
    seriesOptions: $("#series-options"),
    resolutionOptions: $("#resolution-options"),
    windowSelect: $("#window"),
    events: $("#count-events"),
    points: $("#count-points"),
    delay: $("#count-delay"),
    reconnects: $("#count-reconnects"),
    lastId: $("#last-event-id"),
    legend: $("#legend"),
    chartBox: $("#chart-box"),
    chart: $("#chart"),
    empty: $("#chart-empty"),
    tbody: $("#latest tbody"),
    streamUrl: $("#stream-url"),
  };

  // ---------------------------------------------------------------- URLs

  /** A same-origin URL for a /v1 route, with the page's API key passed on. */
  function apiUrl(path, query = {}) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    if (apiKey) url.searchParams.set("api_key", apiKey);
    return url.pathname + url.search;
  }

  /** Keep the page URL shareable: it reflects the current selection (and keeps the API key). */
  function syncPageUrl() {
    const url = new URL(window.location.href);
    url.searchParams.set("series", state.selected.join(","));
    url.searchParams.set("resolution", state.resolution);
    url.searchParams.set("window", state.window);
    window.history.replaceState(null, "", url);
  }

  // ---------------------------------------------------------------- formatting

  function fmtValue(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
    return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const fmtTime = d3.timeFormat("%H:%M:%S.%L");
  /** y tick labels: plain numbers (0.2, 1,500) up to 10k, SI prefixes (25k, 1.2M) beyond; never "200m" for 0.2. */
  function yTickFormat(y, ticks) {
    const [lo, hi] = y.domain();
    return Math.max(Math.abs(lo), Math.abs(hi)) >= 10_000 ? d3.format("~s") : y.tickFormat(ticks);
  }
  /** 24-hour time ticks: "14:05" on whole minutes, ":30" between them, ".250" below a second. */
  function fmtAxisTime(date) {
    if (date.getMilliseconds()) return d3.timeFormat(".%L")(date);
    if (date.getSeconds()) return d3.timeFormat(":%S")(date);
    return d3.timeFormat("%H:%M")(date);
  }

  /** Bucket width of a resolution in ms, from its name ("1s", "5s", "1m"); 0 for raw. */
  function bucketMs(resolution) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(resolution);
    return m ? Number(m[1]) * UNIT_MS[m[2]] : 0;
  }

  // ---------------------------------------------------------------- series metadata

  /** An expected range as [lo, hi], from the shapes /v1/series and meta use; null when unknown (lo >= hi). */
  function pickRange(e) {
    const valid = (lo, hi) => (Number.isFinite(lo) && Number.isFinite(hi) && lo < hi ? [lo, hi] : null);
    const r = e.expectedRange ?? e.expected_range ?? e.range ?? e.domain ?? null;
    if (Array.isArray(r) && r.length === 2) return valid(Number(r[0]), Number(r[1]));
    if (r && typeof r === "object") return valid(r.min ?? r.low, r.max ?? r.high);
    return valid(e.expectedMin ?? e.expected_min ?? e.min, e.expectedMax ?? e.expected_max ?? e.max);
  }

  function absorbSeriesList(body) {
    const list = Array.isArray(body) ? body : body.series ?? body.items ?? [];
    // /v1/series repeats the catalogue-wide resolutions on every entry; stream meta's series have none.
    const served = list.find((e) => e && Array.isArray(e.resolutions) && e.resolutions.length)?.resolutions;
    if (served) state.resolutions = served.map(String);
    for (const e of list) {
      const entry = typeof e === "string" ? { name: e } : e;
      if (!entry || !entry.name) continue;
      seriesInfo.set(entry.name, {
        name: entry.name,
        unit: entry.unit ?? entry.units ?? "",
        description: entry.description ?? "",
        range: pickRange(entry),
      });
    }
    color.domain([...seriesInfo.keys()]);
  }

  /** Stream meta may carry units and domains per series; merge them into what /v1/series said. */
  function absorbMeta(meta) {
    if (!meta || typeof meta !== "object") return;
    state.meta = meta;
    if (Array.isArray(meta.series)) absorbSeriesList(meta.series);
    const units = meta.units;
    if (units && typeof units === "object") {
      for (const [name, unit] of Object.entries(units)) info(name).unit = unit;
    }
    const domains = meta.yDomains ?? meta.domains;
    if (domains && typeof domains === "object") {
      for (const [name, dom] of Object.entries(domains)) {
        const range = pickRange({ range: dom });
        if (range) info(name).range = range;
      }
    }
  }

  function info(name) {
    let i = seriesInfo.get(name);
    if (!i) {
      i = { name, unit: "", description: "", range: null };
      seriesInfo.set(name, i);
    }
    return i;
  }

  // ---------------------------------------------------------------- buffers

  const keyOf = (p) => p.seq ?? p.t;
  const bisectKey = d3.bisector(keyOf).left;
  const bisectT = d3.bisector((p) => p.t).left;

  /** Insert a point in sequence order; a point with a sequence already held replaces it (no duplicates). */
  function merge(p) {
    if (!p || typeof p.series !== "string" || !Number.isFinite(p.t)) return false;
    let buf = buffers.get(p.series);
    if (!buf) buffers.set(p.series, (buf = []));
    const key = keyOf(p);
    const last = buf[buf.length - 1];
    if (!last || key > keyOf(last)) buf.push(p);
    else {
      const i = bisectKey(buf, key);
      if (i < buf.length && keyOf(buf[i]) === key) buf[i] = p;
      else buf.splice(i, 0, p);
    }
    return true;
  }

  function trim(buf, now) {
    const horizon = now - WINDOWS[state.window] - 2 * (servedBucketMs() || 1_000);
    let cut = bisectT(buf, horizon);
    cut = Math.max(cut, buf.length - MAX_POINTS_PER_SERIES);
    if (cut > 0) buf.splice(0, cut);
  }

  /** Width of the buckets being drawn: what the server said it serves (meta.bucketMs), else the resolution's. */
  function servedBucketMs() {
    return state.bucketMs || bucketMs(state.resolution);
  }

  /** One point per pixel of the plot, within what /v1/stream accepts (10 .. 10,000). */
  function plotPixels() {
    const width = el.chartBox.clientWidth || 800;
    return Math.max(10, Math.min(10_000, Math.round(width - margin.left - margin.right)));
  }

  // ---------------------------------------------------------------- status

  const STATUS_TEXT = {
    connecting: "Connecting",
    live: "Live",
    reconnecting: "Reconnecting",
    error: "Error",
    paused: "Paused",
  };

  function setStatus(status, message = "") {
    state.status = status;
    state.message = message;
    el.status.dataset.status = status;
    el.statusLabel.textContent = message ? `${STATUS_TEXT[status]}: ${message}` : STATUS_TEXT[status];
    el.status.title = el.statusLabel.textContent;
    if (status === "error" && message) {
      el.banner.replaceChildren();
      const strong = document.createElement("strong");
      strong.textContent = "Stream error";
      el.banner.append(strong, document.createTextNode(message));
      el.banner.hidden = false;
    } else if (status === "live" || status === "paused") {
      el.banner.hidden = true;
    }
  }

  // ---------------------------------------------------------------- the stream

  let source = null;
  let retryTimer = null;
  let retryAttempt = 0;

  function closeStream() {
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    if (source) source.close();
    source = null;
  }

  /**
   * Open the one EventSource for the current selection. `resume` passes the last event id so the server
   * sends exactly what was missed (a manual reopen after the browser gave up); a new selection starts
   * fresh, because its history differs.
   */
  function openStream({ resume = false } = {}) {
    closeStream();
    if (!resume) {
      buffers.clear();
      state.lastEventId = "";
      state.bucketMs = 0;
      state.maxPoints = plotPixels();
      state.openDrawMs = null;
      openedAt = performance.now();
      dirty = true;
    }
    if (state.selected.length === 0) {
      setStatus("paused", "no series selected");
      return;
    }
    const query = { series: state.selected.join(","), resolution: state.resolution, window: state.window, format: "d3" };
    if (state.maxPoints) query.maxPoints = String(state.maxPoints);
    if (resume && state.lastEventId) query.lastEventId = state.lastEventId;
    const url = apiUrl("/v1/stream", query);
    const es = new EventSource(url);
    source = es;
    state.opens += 1;
    state.streamUrl = url;
    el.streamUrl.textContent = apiKey ? url.replace(/api_key=[^&]*/, "api_key=…") : url;
    setStatus(resume ? "reconnecting" : "connecting");

    es.addEventListener("open", () => {
      if (es !== source) return;
      setStatus("live");
    });
    es.addEventListener("snapshot", (ev) => onData(es, "snapshot", ev));
    es.addEventListener("points", (ev) => onData(es, "points", ev));
    // One listener sees both kinds of "error": an `event: error` the server sent (a MessageEvent with
    // a JSON body: upstream trouble, the stream stays open) and the browser's own connection error.
    es.addEventListener("error", (ev) => {
      if (es !== source) return;
      if (typeof ev.data === "string" && ev.data) onServerError(ev);
      else onConnectionError(es, url);
    });
  }

  function onData(es, kind, ev) {
    if (es !== source) return;
    let body;
    try {
      body = JSON.parse(ev.data);
    } catch {
      setStatus("error", `unreadable ${kind} event`);
      return;
    }
    state.events += 1;
    if (ev.lastEventId) state.lastEventId = ev.lastEventId;
    absorbMeta(body.meta);
    if (kind === "snapshot" && Number.isFinite(body.meta?.bucketMs)) state.bucketMs = body.meta.bucketMs;
    if (kind === "snapshot") {
      state.snapshots += 1;
      // reset: the server could not honour our cursor, so its snapshot replaces what we hold; otherwise
      // (a fresh stream, or resumed: exactly the points missed) merging by sequence is right either way.
      if (body.reset || body.meta?.reset) buffers.clear();
    }
    const points = Array.isArray(body.points) ? body.points : [];
    const receivedAt = Date.now();
    let newest = -Infinity;
    for (const p of points) if (merge(p)) newest = Math.max(newest, p.t);
    state.points += points.length;
    if (Number.isFinite(newest)) {
      const sample = receivedAt - (newest + servedBucketMs());
      state.delayMs = state.delayMs === null ? sample : 0.8 * state.delayMs + 0.2 * sample;
    }
    const now = edgeNow();
    for (const buf of buffers.values()) trim(buf, now);
    retryAttempt = 0;
    if (state.status !== "live") setStatus("live");
    dirty = true;
  }

  function onServerError(ev) {
    state.serverErrors += 1;
    state.events += 1;
    let message = ev.data;
    try {
      const body = JSON.parse(ev.data);
      if (body.code === "degraded") {
        // Not trouble: the server moved this page to coarser buckets to keep up; the stream goes on.
        state.notice = body;
        if (Number.isFinite(body.bucketMs)) state.bucketMs = body.bucketMs;
        setStatus("live", `${body.bucketMs} ms buckets (${body.code})`);
        return;
      }
      message = body.code ? `${body.message ?? ""} (${body.code})` : body.message ?? ev.data;
    } catch {
      /* show the raw text */
    }
    setStatus("error", message);
  }

  function onConnectionError(es, url) {
    state.reconnects += 1;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself (after the server's retry: delay) and sends Last-Event-ID.
      setStatus("reconnecting");
      return;
    }
    // CLOSED: the server answered with an HTTP error (400, 401, 429, 5xx) and the browser gave up.
    // Ask once more with fetch to show the JSON error, then retry only what can heal by itself.
    diagnose(url).then((d) => {
      if (es !== source) return;
      setStatus("error", d.message);
      if (!d.retry) return;
      const backoff = Math.min(30_000, 1_000 * 2 ** retryAttempt) * (0.5 + Math.random() / 2);
      retryAttempt += 1;
      retryTimer = setTimeout(() => openStream({ resume: true }), d.retryAfterMs ?? backoff);
    });
  }

  async function diagnose(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5_000);
    try {
      const res = await fetch(url, { signal: ctl.signal, headers: { Accept: "text/event-stream" } });
      if (res.ok) {
        ctl.abort();
        return { retry: true, message: "stream closed by the server" };
      }
      let message = `HTTP ${res.status}`;
      try {
        message = `${errorText(await res.json())} (HTTP ${res.status})`;
      } catch {
        /* not JSON */
      }
      const retryAfter = Number(res.headers.get("Retry-After"));
      return {
        retry: res.status === 429 || res.status >= 500,
        retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
        message,
      };
    } catch {
      return { retry: true, message: "streamer unreachable" };
    } finally {
      clearTimeout(timer);
    }
  }

  function errorText(body) {
    const pick = (x) => (typeof x === "string" ? x : x && typeof x === "object" ? x.message ?? x.msg : null);
    return (
      pick(body) ??
      pick(body.error) ??
      pick(body.detail) ??
      (Array.isArray(body.detail) ? body.detail.map(pick).join("; ") : null) ??
      JSON.stringify(body)
    );
  }

  // ---------------------------------------------------------------- controls

  function buildSeriesPicker() {
    const names = [...seriesInfo.keys()];
    const wanted = (pageParams.get("series") || "").split(",").filter((s) => seriesInfo.has(s));
    state.selected = wanted.length ? wanted : names;
    el.seriesOptions.replaceChildren();
    for (const name of names) {
      const i = seriesInfo.get(name);
      const label = document.createElement("label");
      label.className = "chip";
      if (i.description) label.title = i.description;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "series";
      box.value = name;
      box.checked = state.selected.includes(name);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color(name);
      swatch.setAttribute("aria-hidden", "true");
      label.append(box, swatch, document.createTextNode(i.unit ? `${name} (${i.unit})` : name));
      el.seriesOptions.append(label);
    }
  }

  /** One radio per served resolution; a resolution asked for in the URL but not served falls back to raw. */
  function buildResolutionPicker() {
    const served = state.resolutions;
    if (!served.includes(state.resolution)) state.resolution = served.includes("raw") ? "raw" : served[0];
    el.resolutionOptions.replaceChildren();
    for (const resolution of served) {
      const label = document.createElement("label");
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "resolution";
      radio.value = resolution;
      radio.checked = resolution === state.resolution;
      const text = document.createElement("span");
      text.textContent = resolution;
      label.append(radio, text);
      el.resolutionOptions.append(label);
    }
  }

  let selectionTimer = null;
  function onControlsChanged({ debounce = false } = {}) {
    const names = [...el.seriesOptions.querySelectorAll("input[name=series]:checked")].map((b) => b.value);
    state.selected = names;
    state.resolution = document.querySelector("input[name=resolution]:checked").value;
    state.window = el.windowSelect.value;
    syncPageUrl();
    if (selectionTimer) clearTimeout(selectionTimer);
    if (debounce) selectionTimer = setTimeout(() => openStream(), SELECTION_DEBOUNCE_MS);
    else openStream();
  }

  function wireControls() {
    el.windowSelect.value = state.window;
    el.seriesOptions.addEventListener("change", () => onControlsChanged({ debounce: true }));
    // Delegated: the radios are rebuilt from /v1/series.
    el.resolutionOptions.addEventListener("change", () => onControlsChanged());
    el.windowSelect.addEventListener("change", () => onControlsChanged());
    document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
  }

  async function loadSeries() {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const res = await fetch(apiUrl("/v1/series"), { headers: { Accept: "application/json" } });
        if (res.ok) {
          absorbSeriesList(await res.json());
          return;
        }
        let message = `HTTP ${res.status}`;
        try {
          message = errorText(await res.json());
        } catch {
          /* not JSON */
        }
        if (res.status === 401) message += " — open the page as /?api_key=YOUR_KEY";
        setStatus("error", `series list: ${message}`);
      } catch {
        setStatus("error", "series list: streamer unreachable");
      }
      await new Promise((r) => setTimeout(r, Math.min(30_000, 1_000 * 2 ** attempt)));
    }
  }

  // ---------------------------------------------------------------- drawing

  /**
   * M4 decimation: with more points than twice the pixel columns, keep per column only the first, last,
   * lowest and highest point. The line looks the same, and drawing costs O(width), not O(points).
   */
  function decimate(data, x) {
    const width = x.range()[1];
    if (data.length <= 2 * width) return data;
    const out = [];
    let col = null;
    let first, last, lo, hi;
    const flush = () => {
      const picked = [first, lo, hi, last].filter((p, i, all) => all.indexOf(p) === i).sort((a, b) => a.t - b.t);
      out.push(...picked);
    };
    for (const p of data) {
      const c = Math.floor(x(p.t));
      if (c !== col) {
        if (col !== null) flush();
        col = c;
        first = last = lo = hi = p;
      } else {
        last = p;
        if (p.v < lo.v) lo = p;
        if (p.v > hi.v) hi = p;
      }
    }
    if (col !== null) flush();
    return out;
  }

  let dirty = true;
  let drawnAt = 0; // the "now" the paths were last built for
  let drawnWidth = 0;
  let slidPx = 0;
  const margin = { top: 6, right: 18, bottom: 24, left: 58 };
  const TITLE_H = 22;
  const LANE_GAP = 16;

  /** The time at the right edge of the chart: now, less the measured delivery delay, so the newest point sits on it. */
  function edgeNow() {
    return Date.now() - Math.max(0, state.delayMs ?? 0);
  }

  const svg = d3.select(el.chart);
  const clipId = "plot-clip";
  svg.append("defs").append("clipPath").attr("id", clipId).attr("clipPathUnits", "userSpaceOnUse").append("rect");
  const root = svg.append("g").attr("class", "root");
  const lanesG = root.append("g").attr("class", "lanes");
  const xAxisG = root.append("g").attr("class", "axis x");

  function geometry(n, width) {
    const w = Math.max(120, width - margin.left - margin.right);
    const laneH = n <= 1 ? 280 : Math.max(96, Math.min(150, Math.floor(560 / n)));
    const laneY = (i) => i * (TITLE_H + laneH + LANE_GAP) + TITLE_H;
    const plotBottom = n ? laneY(n - 1) + laneH : laneH;
    return { w, laneH, laneY, plotBottom, height: margin.top + plotBottom + margin.bottom };
  }

  function rebuild(now) {
    const started = performance.now();
    state.renders += 1;
    const win = WINDOWS[state.window];
    const bucket = servedBucketMs();
    const names = state.selected;
    const width = el.chartBox.clientWidth || 800;
    const g = geometry(names.length, width);
    drawnAt = now;
    drawnWidth = width;
    slidPx = 0;

    svg.attr("width", width).attr("height", g.height).attr("viewBox", `0 0 ${width} ${g.height}`);
    // A few pixels of slack on the right and top so the newest point's marker is not cut in half.
    svg.select(`#${clipId} rect`).attr("x", 0).attr("y", -5).attr("width", g.w + 5).attr("height", g.laneH + 10);
    root.attr("transform", `translate(${margin.left},${margin.top})`);

    const x = d3.scaleTime().domain([now - win, now]).range([0, g.w]);
    const lanes = lanesG
      .selectAll("g.lane")
      .data(names, (d) => d)
      .join((enter) => {
        const lane = enter.append("g").attr("class", "lane");
        lane.append("g").attr("class", "grid x");
        lane.append("g").attr("class", "grid y");
        lane.append("g").attr("class", "axis y");
        const title = lane.append("text").attr("class", "lane-title").attr("y", -8);
        title.append("tspan").attr("class", "lane-name");
        title.append("tspan").attr("class", "lane-unit").attr("dx", 6);
        lane.append("text").attr("class", "lane-value").attr("y", -8).attr("text-anchor", "end");
        const slide = lane.append("g").attr("clip-path", `url(#${clipId})`).append("g").attr("class", "slide");
        slide.append("path").attr("class", "band");
        slide.append("path").attr("class", "line");
        slide.append("circle").attr("class", "head").attr("r", 3.5);
        return lane;
      });

    lanes.each(function (name, i) {
      const lane = d3.select(this);
      const info_ = info(name);
      const c = color(name);
      const buf = buffers.get(name) ?? [];
      const from = Math.max(0, bisectT(buf, now - win - 2 * (bucket || 1_000)) - 1);
      const data = buf.slice(from);
      const hasBand = bucket > 0 && data.some((p) => Number.isFinite(p.min) && Number.isFinite(p.max));

      const values = [];
      for (const p of data) {
        values.push(p.v);
        if (hasBand) values.push(p.min, p.max);
      }
      // The expected range (from /v1/series or meta) keeps the scale steady; data outside it widens it.
      if (info_.range) values.push(...info_.range);
      let [lo, hi] = d3.extent(values.filter(Number.isFinite));
      if (lo === undefined) [lo, hi] = [0, 1];
      if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
      const pad = info_.range ? 0 : (hi - lo) * 0.05;
      const yTicks = Math.max(3, Math.round(g.laneH / 32));
      const y = d3.scaleLinear().domain([lo - pad, hi + pad]).nice(yTicks).range([g.laneH, 0]);

      lane.attr("transform", `translate(0,${g.laneY(i)})`).attr("data-series", name);
      lane.select(".lane-name").text(name);
      lane.select(".lane-unit").text(info_.unit || "");
      const last = data[data.length - 1];
      lane.select(".lane-value").attr("x", g.w).attr("fill", c).text(last ? `${fmtValue(last.v)} ${info_.unit || ""}`.trim() : "");
      lane.select(".grid.y").call(d3.axisLeft(y).ticks(yTicks).tickSize(-g.w).tickFormat(""));
      lane.select(".axis.y").call(d3.axisLeft(y).ticks(yTicks).tickSizeOuter(0).tickFormat(yTickFormat(y, yTicks)));
      lane.select(".grid.x").attr("transform", `translate(0,${g.laneH})`);

      const line = d3.line().x((p) => x(p.t)).y((p) => y(p.v)).defined((p) => Number.isFinite(p.v));
      const drawn = hasBand ? data : decimate(data, x);
      lane
        .select(".line")
        .attr("stroke", c)
        .attr("d", drawn.length ? line(drawn) : null)
        .attr("data-points", drawn.length)
        .attr("data-held", data.length);
      const area = d3.area().x((p) => x(p.t)).y0((p) => y(p.min)).y1((p) => y(p.max));
      lane.select(".band").attr("fill", c).attr("d", hasBand ? area(data) : null);
      lane
        .select(".head")
        .attr("fill", c)
        .attr("display", last ? null : "none")
        .attr("cx", last ? x(last.t) : 0)
        .attr("cy", last ? y(last.v) : 0);
      lane.select(".slide").attr("transform", null);
    });

    xAxisG.attr("transform", `translate(0,${g.plotBottom})`);
    slideAxes(now, g);
    renderLegend();
    renderTable();
    renderCounters();
    el.empty.hidden = names.some((n) => (buffers.get(n) ?? []).length > 0);
    if (state.openDrawMs === null && names.some((n) => (buffers.get(n) ?? []).length > 1)) {
      if (state.firstDrawMs === null) state.firstDrawMs = performance.now();
      state.openDrawMs = performance.now() - openedAt;
    }
    lastGeometry = g;
    const took = performance.now() - started;
    state.renderMs = state.renderMs === null ? took : 0.9 * state.renderMs + 0.1 * took;
  }

  let lastGeometry = null;

  /** Move the time axis, the vertical grid and the drawn paths to `now`, without rebuilding the paths. */
  function slideAxes(now, g) {
    const win = WINDOWS[state.window];
    const x = d3.scaleTime().domain([now - win, now]).range([0, g.w]);
    const ticks = Math.max(2, Math.floor(g.w / 110));
    xAxisG.call(d3.axisBottom(x).ticks(ticks).tickSizeOuter(0).tickFormat(fmtAxisTime));
    lanesG.selectAll("g.lane .grid.x").call(d3.axisBottom(x).ticks(ticks).tickSize(-g.laneH).tickFormat(""));
    const shift = ((now - drawnAt) * g.w) / win;
    if (shift !== 0) lanesG.selectAll("g.lane .slide").attr("transform", `translate(${-shift},0)`);
    slidPx = shift;
  }

  function renderLegend() {
    d3.select(el.legend)
      .selectAll("li")
      .data(state.selected, (d) => d)
      .join((enter) => {
        const li = enter.append("li");
        li.append("span").attr("class", "swatch").attr("aria-hidden", "true");
        li.append("span").attr("class", "name");
        li.append("span").attr("class", "unit");
        return li;
      })
      .each(function (name) {
        const li = d3.select(this);
        li.select(".swatch").style("background", color(name));
        li.select(".name").text(name);
        li.select(".unit").text(info(name).unit ? `(${info(name).unit})` : "");
      });
  }

  function renderTable() {
    const aggregated = servedBucketMs() > 0;
    d3.select(el.tbody)
      .selectAll("tr")
      .data(state.selected, (d) => d)
      .join((enter) => {
        const tr = enter.append("tr");
        const th = tr.append("th").attr("scope", "row").append("span").attr("class", "series-name");
        th.append("span").attr("class", "swatch").attr("aria-hidden", "true");
        th.append("span").attr("class", "name");
        for (const cls of ["value num", "unit", "time", "seq num", "min num", "max num", "mean num", "count num"]) {
          tr.append("td").attr("class", cls);
        }
        return tr;
      })
      .attr("data-series", (d) => d)
      .each(function (name) {
        const tr = d3.select(this);
        const buf = buffers.get(name) ?? [];
        const p = buf[buf.length - 1];
        tr.select(".swatch").style("background", color(name));
        tr.select(".name").text(name);
        tr.select(".value").attr("data-value", p ? p.v : null).text(p ? fmtValue(p.v) : "–");
        tr.select(".unit").text(info(name).unit || "");
        tr.select(".time").text(p ? fmtTime(new Date(p.t)) : "–");
        tr.select(".seq").text(p && p.seq !== undefined ? String(p.seq) : "–");
        for (const k of ["min", "max", "mean"]) {
          tr.select(`.${k}`).attr("data-value", aggregated && p ? p[k] : null).text(aggregated && p ? fmtValue(p[k]) : "–");
        }
        tr.select(".count").text(aggregated && p && p.count !== undefined ? String(p.count) : "–");
      });
  }

  function renderCounters() {
    el.events.textContent = state.events.toLocaleString("en-US");
    el.points.textContent = state.points.toLocaleString("en-US");
    el.reconnects.textContent = String(state.reconnects);
    el.delay.textContent = state.delayMs === null ? "–" : `${Math.round(state.delayMs)} ms`;
    el.lastId.textContent = state.lastEventId || "–";
    el.lastId.title = state.lastEventId;
  }

  function frame() {
    window.requestAnimationFrame(frame);
    const now = edgeNow();
    const width = el.chartBox.clientWidth;
    if (dirty || width !== drawnWidth || now - drawnAt > REBUILD_EVERY_MS || !lastGeometry) {
      dirty = false;
      rebuild(now);
      return;
    }
    // Between rebuilds only slide, and only when it moves by a visible amount.
    const shift = ((now - drawnAt) * lastGeometry.w) / WINDOWS[state.window];
    if (Math.abs(shift - slidPx) >= 0.25) slideAxes(now, lastGeometry);
  }

  // ---------------------------------------------------------------- start

  window.pulsestream = Object.freeze({
    state,
    buffers,
    series: seriesInfo,
    reopen: () => openStream(),
  });

  // Close the stream when the page goes away (or into the back/forward cache); reopen if it comes back.
  window.addEventListener("pagehide", closeStream);
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) openStream({ resume: true });
  });

  async function start() {
    wireControls();
    window.requestAnimationFrame(frame);
    await loadSeries();
    buildSeriesPicker();
    buildResolutionPicker();
    syncPageUrl();
    openStream();
  }

  start();
})();
