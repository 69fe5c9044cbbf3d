// Numbers, times and widths as the dashboard shows them (D3 is the vendored global from /static/vendor).
const d3 = globalThis.d3;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** A value with a precision that suits its size; "–" when there is none. */
export function fmtValue(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A point's time in the table: 14:05:30.250. */
export const fmtTime = d3.timeFormat("%H:%M:%S.%L");

/** y tick labels: plain numbers (0.2, 1,500) up to 10k, SI prefixes (25k, 1.2M) beyond; never "200m" for 0.2. */
export function yTickFormat(y, ticks) {
  const [lo, hi] = y.domain();
  return Math.max(Math.abs(lo), Math.abs(hi)) >= 10_000 ? d3.format("~s") : y.tickFormat(ticks);
}

/** 24-hour time ticks: "14:05" on whole minutes, ":30" between them, ".250" below a second. */
export function fmtAxisTime(date) {
  if (date.getMilliseconds()) return d3.timeFormat(".%L")(date);
  if (date.getSeconds()) return d3.timeFormat(":%S")(date);
  return d3.timeFormat("%H:%M")(date);
}

/** Milliseconds of a resolution or window name ("1s", "5m"); 0 for raw or anything else. */
export function widthMs(name) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(name);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : 0;
}

/** A width for people: 500 ms, 1 s, 5 min. */
export function fmtWidth(ms) {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1_000 && ms % 1_000 === 0) return `${ms / 1_000} s`;
  return `${ms} ms`;
}
