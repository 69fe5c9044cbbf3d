// The controls: series chips, the resolution picker (from /v1/series, never a list of its own) and the
// window, which must hold a few buckets of the resolution.
import { fmtWidth, widthMs } from "./format.js";

/**
 * A window shorter than this many buckets shows one or two points, or none for up to a bucket (a 1m
 * window at 1m resolution: the last closed minute starts before the window does).
 */
export const MIN_BUCKETS_PER_WINDOW = 5;

/**
 * Offer only the windows that hold MIN_BUCKETS_PER_WINDOW buckets of `resolution`; say why in `hint`.
 * Returns the window to use: `wanted` when offered, else the shortest one that is.
 * @param {HTMLSelectElement} select @param {HTMLElement} hint @param {string} resolution @param {string} wanted
 */
export function fitWindow(select, hint, resolution, wanted) {
  const least = widthMs(resolution) * MIN_BUCKETS_PER_WINDOW;
  const why = `${resolution} buckets need a window of ${fmtWidth(least)} at least`;
  const usable = [];
  for (const option of select.options) {
    option.disabled = widthMs(option.value) < least;
    option.title = option.disabled ? why : "";
    if (!option.disabled) usable.push(option.value);
  }
  const value = usable.includes(wanted) ? wanted : usable[0] ?? wanted;
  select.value = value;
  hint.hidden = usable.length === select.options.length;
  hint.textContent = value === wanted ? why : `${why}: showing ${fmtWidth(widthMs(value))}`;
  return value;
}

/**
 * One chip per series, checked if selected; `describe(name)` gives its unit and description.
 * @param {HTMLElement} box @param {string[]} names @param {string[]} selected
 * @param {(name: string) => {unit: string, description: string}} describe @param {(name: string) => string} color
 */
export function buildSeriesPicker(box, names, selected, describe, color) {
  box.replaceChildren();
  for (const name of names) {
    const info = describe(name);
    const label = document.createElement("label");
    label.className = "chip";
    if (info.description) label.title = info.description;
    const checkbox = document.createElement("input");
    checkbox.type = "checkbox";
    checkbox.name = "series";
    checkbox.value = name;
    checkbox.checked = selected.includes(name);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color(name);
    swatch.setAttribute("aria-hidden", "true");
    label.append(checkbox, swatch, document.createTextNode(info.unit ? `${name} (${info.unit})` : name));
    box.append(label);
  }
}

/**
 * Instead of the chips: why there are none (no key, streamer unreachable), and what to do.
 * @param {HTMLElement} box @param {string} text @param {string} [hint]
 */
export function showSeriesProblem(box, text, hint = "") {
  const p = document.createElement("span");
  p.className = "series-problem";
  p.setAttribute("role", "alert");
  const strong = document.createElement("strong");
  strong.textContent = text;
  p.append(strong);
  if (hint) {
    const more = document.createElement("span");
    more.textContent = ` ${hint}`;
    p.append(more);
  }
  box.replaceChildren(p);
}

/** One radio per served resolution; returns the one to use (`wanted` if served, else raw). */
export function buildResolutionPicker(box, served, wanted) {
  const resolution = served.includes(wanted) ? wanted : served.includes("raw") ? "raw" : served[0];
  box.replaceChildren();
  for (const name of served) {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "resolution";
    radio.value = name;
    radio.checked = name === resolution;
    const text = document.createElement("span");
    text.textContent = name;
    label.append(radio, text);
    box.append(label);
  }
  return resolution;
}

/** What the controls say now: the series ticked, the resolution and the window. */
export function readControls(form) {
  return {
    selected: [...form.querySelectorAll("input[name=series]:checked")].map((b) => b.value),
    resolution: form.querySelector("input[name=resolution]:checked")?.value ?? "raw",
    window: form.querySelector("select[name=window]").value,
  };
}
