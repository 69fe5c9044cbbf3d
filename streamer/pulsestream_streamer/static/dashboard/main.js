/*
 * pulsestream dashboard: the client module's stream (one EventSource for every series), a D3 chart per
 * series on a shared sliding time axis, and a table of the latest values.
 *
 * Built on /client/pulsestream.js, which holds the rolling window per series and handles resume, reset,
 * refusals and backoff; this file only wires it to the page:
 * - Events only set a dirty flag; drawing happens in requestAnimationFrame, so a burst of events costs
 *   one render, and a hidden tab costs none.
 * - An API key given as `/?api_key=...` is taken out of the address bar at once (history.replaceState) and
 *   kept in memory only: it is traded for a short-lived token (POST /v1/tokens, the key in a header), and
 *   only tokens go into request URLs (an EventSource cannot send headers), minted again before they expire.
 *   A token given as `/?access_token=...` is used as it is (and leaves the address bar too).
 * - The resolutions come from /v1/series (the generator's ListSeries), never from a list in this file.
 * - The stream asks for `maxPoints` = the plot's width in pixels: about one bucket per pixel, drawn with
 *   its min-max band; the width served is `meta.bucketMs`.
 * - State is exposed read-only on `window.pulsestream` for tests and for debugging in the console.
 */
import { connect, listSeries, tokenFromKey } from "/client/pulsestream.js";
import { Chart, plotPixels } from "./chart.js";
import { buildResolutionPicker, buildSeriesPicker, fitWindow, readControls, showSeriesProblem } from "./controls.js";
import { widthMs } from "./format.js";
import { describe, renderCounters, renderStatus, renderUrl } from "./status.js";
import { renderLegend, renderTable } from "./table.js";

const d3 = globalThis.d3;
const REBUILD_EVERY_MS = 1_000; // rebuild paths at least this often while idle (trim, rescale)
const SELECTION_DEBOUNCE_MS = 200; // ticking several boxes in a row reopens the stream once
const SERIES_RETRY_CAP_MS = 30_000;
// Shown when the URL names none: the first ones /v1/series lists (synthetic, then published). Not all:
// producers may publish many series, and one stream carries at most STREAMER_MAX_SERIES (16).
const DEFAULT_SERIES_SHOWN = 8;

const pageParams = new URLSearchParams(window.location.search);
// A key never holds a space, but may hold "+", which URLSearchParams decodes as a space.
const apiKey = (pageParams.get("api_key") || "").replace(/ /g, "+");
const givenToken = pageParams.get("access_token") || "";
// Credentials leave the address bar before anything else happens: browser history, bookmarks and shared
// links never keep them. The key stays in this page's memory, for minting tokens only.
if (apiKey || givenToken) {
  const clean = new URL(window.location.href);
  clean.searchParams.delete("api_key");
  clean.searchParams.delete("access_token");
  window.history.replaceState(null, "", clean);
}
/** The credential of every request: tokens minted from the key (or the token given); none in open mode. */
const token = apiKey ? tokenFromKey({ apiKey }) : givenToken || undefined;

const $ = (sel) => document.querySelector(sel);
const el = {
  form: $("#controls"),
  status: $("#status"),
  statusLabel: $("#status .status-label"),
  banner: $("#error-banner"),
  seriesOptions: $("#series-options"),
  resolutionOptions: $("#resolution-options"),
  windowSelect: $("#window"),
  windowHint: $("#window-hint"),
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

const state = {
  status: "connecting", // connecting | live | stalled | reconnecting | paused | error
  message: "",
  events: 0,
  points: 0,
  snapshots: 0,
  notices: 0,
  opens: 0,
  reconnects: 0,
  renders: 0,
  lastEventId: "",
  streamUrl: "",
  resolution: pageParams.get("resolution") || "raw", // checked against the served list once it is known
  resolutions: ["raw"], // until /v1/series says what the generator aggregates to
  window: pageParams.get("window") || "5m",
  selected: [],
  delayMs: null,
  renderMs: null, // smoothed cost of one full redraw (chart and table), for profiling
  meta: {},
  bucketMs: 0, // width of the points served (meta.bucketMs): 0 = raw ticks
  maxPoints: null, // what the stream asked for (the plot's width in pixels)
  notice: null, // the last server notice
  trouble: null, // upstream trouble in force (the stream stays open)
  firstDrawMs: null, // performance.now() when the chart first drew data (time to first draw)
  openDrawMs: null, // from opening the current stream to drawing its data (a window or resolution switch)
};
const seriesInfo = new Map(); // name -> {name, unit, description, range: [lo, hi] | null}
const color = d3.scaleOrdinal(d3.schemeTableau10);
const chart = new Chart(el.chart, el.chartBox);
let stream = null;
let failure = null; // what stops the page before any stream (no key for /v1/series)
let openedAt = 0;
let dirty = true;
let earlier = 0; // reconnects of the streams closed before this one

// ---------------------------------------------------------------- series metadata

/** An expected range as [lo, hi], from the shapes /v1/series and meta use; null when unknown (lo >= hi). */
function pickRange(e) {
  const valid = (lo, hi) => (Number.isFinite(lo) && Number.isFinite(hi) && lo < hi ? [lo, hi] : null);
  const r = e.expectedRange ?? e.range ?? null;
  if (Array.isArray(r) && r.length === 2) return valid(Number(r[0]), Number(r[1]));
  return null;
}

function info(name) {
  let i = seriesInfo.get(name);
  if (!i) seriesInfo.set(name, (i = { name, unit: "", description: "", range: null }));
  return i;
}

function absorbSeriesList(list) {
  const served = list.find((e) => e && Array.isArray(e.resolutions) && e.resolutions.length)?.resolutions;
  if (served) state.resolutions = served.map(String);
  for (const entry of list) {
    if (!entry || !entry.name) continue;
    Object.assign(info(entry.name), { unit: entry.unit ?? "", description: entry.description ?? "", range: pickRange(entry) });
  }
  color.domain([...seriesInfo.keys()]);
}

/** The snapshot's meta may carry units and domains per series; merge them into what /v1/series said. */
function absorbMeta(meta) {
  if (!meta || typeof meta !== "object") return;
  state.meta = meta;
  for (const [name, unit] of Object.entries(meta.units ?? {})) info(name).unit = unit;
  for (const [name, dom] of Object.entries(meta.yDomains ?? {})) {
    const range = pickRange({ range: dom });
    if (range) info(name).range = range;
  }
}

// ---------------------------------------------------------------- the stream

function showStatus() {
  const view = describe(stream, { paused: state.selected.length ? "" : "no series selected", failure });
  state.status = view.status;
  state.message = view.message;
  renderStatus(el, view);
}

function closeStream() {
  if (stream) {
    earlier += stream.reconnects;
    stream.close();
  }
  stream = null;
}

/** Open the one stream for the current selection (a new selection starts fresh: its history differs). */
function openStream() {
  closeStream();
  state.lastEventId = "";
  state.bucketMs = 0;
  state.delayMs = null;
  state.trouble = null;
  state.maxPoints = plotPixels(el.chartBox);
  state.openDrawMs = null;
  openedAt = performance.now();
  dirty = true;
  if (state.selected.length === 0) {
    showStatus();
    return;
  }
  const s = connect({
    series: state.selected,
    resolution: state.resolution,
    window: state.window,
    maxPoints: state.maxPoints,
    format: "d3",
    token,
  });
  stream = s;
  state.opens += 1;
  const mine = (handler) => (event) => {
    if (s === stream) handler(event);
  };
  s.addEventListener("update", mine((e) => {
    state.events += 1;
    state.points += e.detail.points;
    if (e.detail.kind === "snapshot") {
      state.snapshots += 1;
      absorbMeta(s.meta);
    }
    state.bucketMs = s.bucketMs;
    state.lastEventId = s.lastEventId;
    state.delayMs = s.delayMs;
    state.trouble = s.trouble;
    state.streamUrl = s.url;
    dirty = true;
    if (state.status !== "live" || s.trouble !== null) showStatus();
  }));
  s.addEventListener("notice", mine(() => {
    state.events += 1;
    state.notices += 1;
    state.notice = s.notice;
    state.trouble = s.trouble;
    state.bucketMs = s.bucketMs;
    showStatus();
  }));
  s.addEventListener("status", mine(() => {
    state.reconnects = earlier + s.reconnects;
    state.streamUrl = s.url;
    renderUrl(el.streamUrl, s.url);
    showStatus();
  }));
  s.addEventListener("error", mine(() => showStatus()));
  showStatus();
}

// ---------------------------------------------------------------- controls

let selectionTimer = null;
function onControlsChanged({ debounce = false } = {}) {
  const chosen = readControls(el.form);
  state.selected = chosen.selected;
  state.resolution = chosen.resolution;
  state.window = fitWindow(el.windowSelect, el.windowHint, state.resolution, chosen.window);
  syncPageUrl();
  if (selectionTimer) clearTimeout(selectionTimer);
  if (debounce) selectionTimer = setTimeout(openStream, SELECTION_DEBOUNCE_MS);
  else openStream();
}

/** Keep the page URL shareable: it reflects the current selection (never a credential). */
function syncPageUrl() {
  const url = new URL(window.location.href);
  url.searchParams.set("series", state.selected.join(","));
  url.searchParams.set("resolution", state.resolution);
  url.searchParams.set("window", state.window);
  window.history.replaceState(null, "", url);
}

function wireControls() {
  el.seriesOptions.addEventListener("change", () => onControlsChanged({ debounce: true }));
  el.resolutionOptions.addEventListener("change", () => onControlsChanged()); // delegated: rebuilt from /v1/series
  el.windowSelect.addEventListener("change", () => onControlsChanged());
  el.form.addEventListener("submit", (e) => e.preventDefault());
}

/** /v1/series, until it answers. A missing or wrong key will not heal by itself: say so, and stop. */
async function loadSeries() {
  for (let attempt = 0; ; attempt += 1) {
    try {
      absorbSeriesList(await listSeries({ token }));
      return true;
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        const hint = apiKey || givenToken ? "Check the key you opened the page with (?api_key=...)." : "Open the page as /?api_key=YOUR_KEY.";
        const text = error.status === 401 ? "This streamer needs an API key." : "This key may not read these series.";
        showSeriesProblem(el.seriesOptions, text, hint);
        failure = { message: `series list: ${error.message} (HTTP ${error.status})`, hint };
        showStatus();
        return false;
      }
      const wait = Math.min(SERIES_RETRY_CAP_MS, 1_000 * 2 ** attempt);
      showSeriesProblem(el.seriesOptions, `Series list unavailable: ${error.message}.`, `Retrying in ${Math.round(wait / 1000)} s.`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

// ---------------------------------------------------------------- drawing

/** The time at the right edge of the chart: now, less the live delivery delay, so the newest point sits on it. */
function edgeNow() {
  return Date.now() - Math.max(0, state.delayMs ?? 0);
}

function frame() {
  window.requestAnimationFrame(frame);
  const now = edgeNow();
  if (!dirty && !chart.stale(now, REBUILD_EVERY_MS)) {
    chart.slide(now); // between rebuilds only slide
    return;
  }
  dirty = false;
  const started = performance.now();
  state.renders += 1;
  const names = state.selected;
  const pointsOf = (name) => (stream ? stream.points(name) : []);
  const view = { names, infoOf: info, color };
  const drew = chart.draw({ ...view, now, windowMs: widthMs(state.window), bucketMs: state.bucketMs, pointsOf });
  renderLegend(el.legend, view);
  renderTable(el.tbody, { ...view, latestOf: (n) => stream?.latest(n), aggregated: state.bucketMs > 0 });
  renderCounters(el, state);
  el.empty.hidden = names.some((n) => stream?.latest(n));
  if (state.openDrawMs === null && drew) {
    if (state.firstDrawMs === null) state.firstDrawMs = performance.now();
    state.openDrawMs = performance.now() - openedAt;
  }
  const took = performance.now() - started;
  state.renderMs = state.renderMs === null ? took : 0.9 * state.renderMs + 0.1 * took;
}

// ---------------------------------------------------------------- start

window.pulsestream = Object.freeze({
  state,
  /** The rolling window per series, as the client module holds it. */
  buffers: Object.freeze({ get: (name) => (stream ? stream.points(name) : []) }),
  series: seriesInfo,
  get stream() {
    return stream;
  },
  reopen: () => openStream(),
});

// Close the stream when the page goes away (or into the back/forward cache); reopen if it comes back.
window.addEventListener("pagehide", closeStream);
window.addEventListener("pageshow", (e) => {
  if (e.persisted) openStream();
});

async function start() {
  wireControls();
  window.requestAnimationFrame(frame);
  if (!(await loadSeries())) return;
  const names = [...seriesInfo.keys()];
  const wanted = (pageParams.get("series") || "").split(",").filter((s) => seriesInfo.has(s));
  state.selected = wanted.length ? wanted : names.slice(0, DEFAULT_SERIES_SHOWN);
  buildSeriesPicker(el.seriesOptions, names, state.selected, info, color);
  state.resolution = buildResolutionPicker(el.resolutionOptions, state.resolutions, state.resolution);
  state.window = fitWindow(el.windowSelect, el.windowHint, state.resolution, state.window);
  syncPageUrl();
  openStream();
}

start();
