// The D3 chart: one lane per series (own y axis and unit) on a shared time axis that slides.
//
// - The series have different units (%, MB, req/s, ms), so each gets its own lane and y axis, all
//   sharing one time axis, instead of one y axis that would flatten all but the largest series.
// - Paths are rebuilt when data changes (or once a second); between rebuilds the time axis slides by a
//   transform, which keeps the motion smooth without re-generating path strings every frame.
// - Buckets (aggregates, or maxPoints reductions) are drawn with their min-max band; raw points beyond
//   two per pixel column are decimated (M4: first, last, lowest, highest per column).
import { fmtAxisTime, fmtValue, yTickFormat } from "./format.js";

const d3 = globalThis.d3;
const bisectT = d3.bisector((p) => p.t).left;
export const MARGIN = { top: 6, right: 18, bottom: 24, left: 58 };
const TITLE_H = 22;
const LANE_GAP = 16;
const CLIP_ID = "plot-clip";

/** Pixels of the plot's width: the page asks the server for about one point per pixel. */
export function plotPixels(box) {
  const width = box.clientWidth || 800;
  return Math.max(10, Math.min(10_000, Math.round(width - MARGIN.left - MARGIN.right)));
}

/** With more points than twice the pixel columns keep, per column, the first, last, lowest and highest. */
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

function geometry(n, width) {
  const w = Math.max(120, width - MARGIN.left - MARGIN.right);
  const laneH = n <= 1 ? 280 : Math.max(96, Math.min(150, Math.floor(560 / n)));
  const laneY = (i) => i * (TITLE_H + laneH + LANE_GAP) + TITLE_H;
  const plotBottom = n ? laneY(n - 1) + laneH : laneH;
  return { w, laneH, laneY, plotBottom, height: MARGIN.top + plotBottom + MARGIN.bottom };
}

export class Chart {
  /** @param {SVGSVGElement} svgEl @param {HTMLElement} box */
  constructor(svgEl, box) {
    this.box = box;
    this.svg = d3.select(svgEl);
    this.svg.append("defs").append("clipPath").attr("id", CLIP_ID).attr("clipPathUnits", "userSpaceOnUse").append("rect");
    const root = (this.root = this.svg.append("g").attr("class", "root"));
    this.lanesG = root.append("g").attr("class", "lanes");
    this.xAxisG = root.append("g").attr("class", "axis x");
    this.drawnAt = 0;
    this.drawnWidth = 0;
    this.slidPx = 0;
    this.geometry = null;
    this.windowMs = 60_000;
  }

  /**
   * Rebuild every lane for `now` (the time at the right edge).
   * @param {{names: string[], now: number, windowMs: number, bucketMs: number,
   *          pointsOf: (name: string) => any[], infoOf: (name: string) => any, color: (name: string) => string}} view
   */
  draw({ names, now, windowMs, bucketMs, pointsOf, infoOf, color }) {
    const width = this.box.clientWidth || 800;
    const g = geometry(names.length, width);
    this.drawnAt = now;
    this.drawnWidth = width;
    this.slidPx = 0;
    this.windowMs = windowMs;
    this.svg.attr("width", width).attr("height", g.height).attr("viewBox", `0 0 ${width} ${g.height}`);
    // A few pixels of slack on the right and top so the newest point's marker is not cut in half.
    this.svg.select(`#${CLIP_ID} rect`).attr("x", 0).attr("y", -5).attr("width", g.w + 5).attr("height", g.laneH + 10);
    this.root.attr("transform", `translate(${MARGIN.left},${MARGIN.top})`);

    const x = d3.scaleTime().domain([now - windowMs, now]).range([0, g.w]);
    const lanes = this.lanesG
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
        const slide = lane.append("g").attr("clip-path", `url(#${CLIP_ID})`).append("g").attr("class", "slide");
        slide.append("path").attr("class", "band");
        slide.append("path").attr("class", "line");
        slide.append("circle").attr("class", "head").attr("r", 3.5);
        return lane;
      });

    let drawnAny = false;
    lanes.each(function (name, i) {
      const lane = d3.select(this);
      const info = infoOf(name);
      const c = color(name);
      const held = pointsOf(name);
      const from = Math.max(0, bisectT(held, now - windowMs - 2 * (bucketMs || 1_000)) - 1);
      const data = held.slice(from);
      const hasBand = data.some((p) => Number.isFinite(p.min) && Number.isFinite(p.max));
      if (data.length > 1) drawnAny = true;

      const values = [];
      for (const p of data) {
        values.push(p.v);
        if (hasBand) values.push(p.min, p.max);
      }
      // The expected range (from /v1/series or meta) keeps the scale steady; data outside it widens it.
      if (info.range) values.push(...info.range);
      let [lo, hi] = d3.extent(values.filter(Number.isFinite));
      if (lo === undefined) [lo, hi] = [0, 1];
      if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
      const pad = info.range ? 0 : (hi - lo) * 0.05;
      const yTicks = Math.max(3, Math.round(g.laneH / 32));
      const y = d3.scaleLinear().domain([lo - pad, hi + pad]).nice(yTicks).range([g.laneH, 0]);

      lane.attr("transform", `translate(0,${g.laneY(i)})`).attr("data-series", name);
      lane.select(".lane-name").text(name);
      lane.select(".lane-unit").text(info.unit || "");
      const last = data[data.length - 1];
      lane.select(".lane-value").attr("x", g.w).attr("fill", c).text(last ? `${fmtValue(last.v)} ${info.unit || ""}`.trim() : "");
      lane.select(".grid.y").call(d3.axisLeft(y).ticks(yTicks).tickSize(-g.w).tickFormat(""));
      lane.select(".axis.y").call(d3.axisLeft(y).ticks(yTicks).tickSizeOuter(0).tickFormat(yTickFormat(y, yTicks)));
      lane.select(".grid.x").attr("transform", `translate(0,${g.laneH})`);

      // A point after a hole the server reported (data_gap) starts a new line.
      const line = d3.line().x((p) => x(p.t)).y((p) => y(p.v)).defined((p) => Number.isFinite(p.v));
      const drawn = hasBand ? data : decimate(data, x);
      const broken = drawn.flatMap((p) => (p.gap ? [{ t: p.t, v: NaN }, p] : [p]));
      lane
        .select(".line")
        .attr("stroke", c)
        .attr("d", drawn.length ? line(broken) : null)
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

    this.xAxisG.attr("transform", `translate(0,${g.plotBottom})`);
    this.geometry = g;
    this.slide(now);
    return drawnAny;
  }

  /** Whether the chart must be rebuilt for `now` (data aside): first draw, resize, or a second since. */
  stale(now, maxAgeMs) {
    return !this.geometry || (this.box.clientWidth || 800) !== this.drawnWidth || now - this.drawnAt > maxAgeMs;
  }

  /** Move the time axis, the vertical grid and the drawn paths to `now`, without rebuilding the paths. */
  slide(now) {
    const g = this.geometry;
    if (!g) return;
    const shift = ((now - this.drawnAt) * g.w) / this.windowMs;
    if (this.slidPx && Math.abs(shift - this.slidPx) < 0.25) return; // not a visible move
    const x = d3.scaleTime().domain([now - this.windowMs, now]).range([0, g.w]);
    const ticks = Math.max(2, Math.floor(g.w / 110));
    this.xAxisG.call(d3.axisBottom(x).ticks(ticks).tickSizeOuter(0).tickFormat(fmtAxisTime));
    this.lanesG.selectAll("g.lane .grid.x").call(d3.axisBottom(x).ticks(ticks).tickSize(-g.laneH).tickFormat(""));
    if (shift !== 0) this.lanesG.selectAll("g.lane .slide").attr("transform", `translate(${-shift},0)`);
    this.slidPx = shift || 0.0001;
  }
}
