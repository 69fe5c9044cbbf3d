// What the page says about its stream: the status pill (short words, never cut), a banner with the whole
// message (amber for trouble that heals by itself, red for what needs the user), the counters, and the
// stream's URL in the footer, broken only between its parameters.

const LABELS = {
  connecting: "Connecting",
  live: "Live",
  stalled: "Live · upstream down",
  reconnecting: "Reconnecting",
  paused: "Paused",
  error: "Error",
};

/**
 * The page's status from the stream's: `stalled` while live but an upstream is down (recoverable: the
 * stream stays open and the points resume without a gap), `error` only for what will not heal by itself.
 * @param {import("/client/pulsestream.js").PulseStream | null} stream
 * @param {{paused?: string, failure?: {message: string, hint?: string}}} page
 */
export function describe(stream, page = {}) {
  if (page.failure) return { status: "error", title: "Stream error", message: page.failure.message, hint: page.failure.hint };
  if (page.paused || !stream) return { status: "paused", title: "", message: page.paused ?? "" };
  if (stream.status === "closed") {
    const error = stream.error;
    const hint = error && error.status === 401 ? "Open the page as /?api_key=YOUR_KEY." : "";
    return { status: "error", title: "Stream error", message: error ? `${error.message} (HTTP ${error.status || "–"})` : "closed", hint };
  }
  if (stream.status === "reconnecting") {
    const error = stream.error;
    return { status: "reconnecting", title: "Reconnecting", message: error ? `${error.message}; retrying` : "" };
  }
  if (stream.status === "live" && stream.trouble) {
    const t = stream.trouble;
    const series = t.series && t.series.length ? ` (${t.series.join(", ")})` : "";
    return { status: "stalled", title: "Upstream unavailable", message: `${t.message}${series}` };
  }
  if (stream.status === "live" && stream.notice && stream.notice.code === "degraded" && stream.bucketMs) {
    return { status: "live", title: "", message: "", label: `Live · ${stream.bucketMs} ms buckets` };
  }
  return { status: stream.status, title: "", message: "" };
}

/** Show `view` (from describe) in the pill and the banner. */
export function renderStatus(el, view) {
  el.status.dataset.status = view.status;
  el.statusLabel.textContent = view.label ?? LABELS[view.status] ?? view.status;
  el.status.title = view.message || el.statusLabel.textContent;
  if (view.message && view.status !== "live") {
    const strong = document.createElement("strong");
    strong.textContent = view.title;
    const parts = [strong, document.createTextNode(view.message)];
    if (view.hint) {
      const hint = document.createElement("span");
      hint.className = "banner-hint";
      hint.textContent = ` ${view.hint}`;
      parts.push(hint);
    }
    el.banner.replaceChildren(...parts);
    el.banner.dataset.kind = view.status === "error" ? "error" : "warn";
    el.banner.setAttribute("role", view.status === "error" ? "alert" : "status");
    el.banner.hidden = false;
  } else {
    el.banner.hidden = true;
  }
}

export function renderCounters(el, state) {
  el.events.textContent = state.events.toLocaleString("en-US");
  el.points.textContent = state.points.toLocaleString("en-US");
  el.reconnects.textContent = String(state.reconnects);
  el.delay.textContent = state.delayMs === null ? "–" : `${Math.round(state.delayMs)} ms`;
  el.lastId.textContent = state.lastEventId || "–";
  el.lastId.title = state.lastEventId;
}

/** The URL in pieces that never break inside: the path, then one piece per `?name=value` / `&name=value`. */
export function renderUrl(box, url) {
  const [path, query = ""] = url.split("?");
  const pieces = [path, ...query.split("&").filter(Boolean).map((part, i) => `${i ? "&" : "?"}${part}`)];
  box.replaceChildren(
    ...pieces.map((text) => {
      const span = document.createElement("span");
      span.className = "url-part";
      span.textContent = text;
      return span;
    }),
  );
}
