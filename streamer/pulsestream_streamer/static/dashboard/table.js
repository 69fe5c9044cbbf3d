// The table of the latest value per series, and the chart's legend.
const d3 = globalThis.d3;
import { fmtTime, fmtValue } from "./format.js";

const CELLS = ["value num", "unit", "time", "seq num", "min num", "max num", "mean num", "count num"];

/**
 * One row per series: value, unit, time, sequence; min, max, mean and count for buckets.
 * @param {HTMLElement} tbody
 * @param {{names: string[], latestOf: (name: string) => any, infoOf: (name: string) => any,
 *          color: (name: string) => string, aggregated: boolean}} view
 */
export function renderTable(tbody, { names, latestOf, infoOf, color, aggregated }) {
  d3.select(tbody)
    .selectAll("tr")
    .data(names, (d) => d)
    .join((enter) => {
      const tr = enter.append("tr");
      const th = tr.append("th").attr("scope", "row").append("span").attr("class", "series-name");
      th.append("span").attr("class", "swatch").attr("aria-hidden", "true");
      th.append("span").attr("class", "name");
      for (const cls of CELLS) tr.append("td").attr("class", cls);
      return tr;
    })
    .attr("data-series", (d) => d)
    .each(function (name) {
      const tr = d3.select(this);
      const p = latestOf(name);
      const unit = infoOf(name).unit || "";
      const bucket = aggregated || (p && Number.isFinite(p.count));
      tr.select(".swatch").style("background", color(name));
      tr.select(".name").text(name);
      tr.select(".value").attr("data-value", p ? p.v : null).text(p ? fmtValue(p.v) : "–");
      tr.select(".unit").text(unit);
      tr.select(".time").text(p ? fmtTime(new Date(p.t)) : "–");
      tr.select(".seq").text(p && p.seq !== undefined ? String(p.seq) : "–");
      for (const k of ["min", "max", "mean"]) {
        tr.select(`.${k}`).attr("data-value", bucket && p ? p[k] : null).text(bucket && p ? fmtValue(p[k]) : "–");
      }
      tr.select(".count").text(bucket && p && p.count !== undefined ? String(p.count) : "–");
    });
}

/** The legend: a swatch, the name and the unit of each series drawn. */
export function renderLegend(list, { names, infoOf, color }) {
  d3.select(list)
    .selectAll("li")
    .data(names, (d) => d)
    .join((enter) => {
      const li = enter.append("li");
      li.append("span").attr("class", "swatch").attr("aria-hidden", "true");
      li.append("span").attr("class", "name");
      li.append("span").attr("class", "unit");
      return li;
    })
    .each(function (name) {
      const li = d3.select(this);
      const unit = infoOf(name).unit;
      li.select(".swatch").style("background", color(name));
      li.select(".name").text(name);
      li.select(".unit").text(unit ? `(${unit})` : "");
    });
}
