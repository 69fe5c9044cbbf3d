"""The benchmark's table: one row per target and scenario, then pulsestream / reference ratios."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_COLUMNS = (
    ("target", "target", "{}"),
    ("conns", "connections", "{:d}"),
    ("events/s", "events_per_s", "{:,.0f}"),
    ("points/s", "points_per_s", "{:,.0f}"),
    ("deliv%", "delivered_pct", "{:.1f}"),
    ("p50ms", "p50", "{:.1f}"),
    ("p90ms", "p90", "{:.1f}"),
    ("p99ms", "p99", "{:.1f}"),
    ("maxms", "max", "{:.0f}"),
    ("cpu/100k", "cpu_per_100k_points", "{:.2f}"),
    ("cores", "server_cores", "{:.2f}"),
    ("KB/conn", "rss_kb_per_connection", "{:.1f}"),
    ("drops", "drops", "{:d}"),
    ("gaps", "gaps", "{:d}"),
    ("dups", "duplicates", "{:d}"),
    ("errors", "error_count", "{:d}"),
)
#: Columns whose pulsestream / reference ratio is printed.
_RATIOS = ("events_per_s", "points_per_s", "p50", "p99", "cpu_per_100k_points", "rss_kb_per_connection")


def _cell(fmt: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def ratios(pulsestream: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """pulsestream / reference for the headline numbers; None where either is missing or zero."""
    result: dict[str, float | None] = {}
    for key in _RATIOS:
        mine, theirs = pulsestream.get(key), reference.get(key)
        result[key] = (
            mine / theirs if isinstance(mine, int | float) and isinstance(theirs, int | float) and theirs else None
        )
    return result


def render(scenarios: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of every scenario's rows, with a ratio line where both targets ran."""
    header = [title for title, _, _ in _COLUMNS]
    lines: list[str] = []
    for scenario in scenarios:
        lines.append(f"\n## {scenario['title']}")
        rows = [header]
        for result in scenario["results"]:
            rows.append([_cell(fmt, result.get(key)) for _, key, fmt in _COLUMNS])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if scenario.get("scenario", {}).get("idle"):
            held = ", ".join(
                f"{r['target']} {r['heartbeats_per_connection']:.1f}"
                for r in scenario["results"]
                if r.get("heartbeats_per_connection") is not None
            )
            lines.append(f"heartbeats received per idle connection: {held}")
        ratio = scenario.get("ratios")
        if ratio:
            shown = ", ".join(f"{key} {value:.3g}" for key, value in ratio.items() if value is not None)
            mine, theirs = scenario.get("ratio_names", ("pulsestream", "reference"))
            lines.append(f"{mine} / {theirs}: {shown}")
        for result in scenario["results"]:
            for problem in result.get("errors", [])[:5]:
                lines.append(f"  {result['target']}: {problem}")
        for result in scenario["results"]:
            profile = result.get("profile")
            if profile:
                lines.append(f"{result['target']} profile ({profile['file']}), busiest functions by self time:")
                lines.extend(f"  {share:5.1f}%  {name}" for name, share in profile["self"][:10])
    return "\n".join(lines).lstrip("\n")


def render_markdown(scenarios: Sequence[dict[str, Any]]) -> str:
    """The same numbers as :func:`render`, as one Markdown table (what the README's Performance section shows)."""
    header = ["scenario", *(title for title, _, _ in _COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario in scenarios:
        for result in scenario["results"]:
            cells = [scenario["label"], *(_cell(fmt, result.get(key)) for _, key, fmt in _COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
        ratio = scenario.get("ratios")
        if ratio:
            shown = {key: f"{value:.3g}" for key, value in ratio.items() if value is not None}
            cells = [scenario["label"], "**ratio**", ""]
            for _, key, _ in _COLUMNS[2:]:
                cells.append(f"**{shown[key]}**" if key in shown else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
