"""Formats of the link-health report: a table for people, JSON for tools, markdown for list maintainers."""

from __future__ import annotations

import json

from rich.table import Table

from cli.common import out

# States a maintainer should act on, in the order they matter.
BROKEN_STATES = ("dead", "archived", "failed", "blocked")


def render_links(rows: list[dict[str, object]], fmt: str) -> None:
    if fmt == "json":
        out.print_json(json.dumps(rows))
    elif fmt == "markdown":
        out.print(links_markdown(rows), markup=False)
    else:
        out.print(links_table(rows))


def links_table(rows: list[dict[str, object]]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for name in ("state", "title", "url", "section", "reason"):
        table.add_column(name, overflow="fold")
    for r in rows:
        sections = r["sections"] or [""]
        table.add_row(str(r["state"]), str(r["title"]), str(r["url"]), str(sections[0]),  # type: ignore[index]
                      str(r["reason"] or ""))
    return table


def links_markdown(rows: list[dict[str, object]]) -> str:
    """What a maintainer pastes into an issue or PR: broken links, each with its archived replacement."""
    lines = ["# Link health", ""]
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["state"])] = counts.get(str(r["state"]), 0) + 1
    lines.append(" · ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for state in BROKEN_STATES:
        group = [r for r in rows if r["state"] == state]
        if not group:
            continue
        lines += ["", f"## {state.capitalize()} ({len(group)})", ""]
        for r in group:
            sections = ", ".join(r["sections"]) or "—"  # type: ignore[arg-type]
            line = f"- [{r['title']}]({r['url']}) ({sections}): {r['reason']}"
            if r.get("archived_url"):
                line += f" — replace with the archived copy: {r['archived_url']}"
            lines.append(line)
    if len(lines) == 3:
        lines += ["", "Every link is healthy."]
    return "\n".join(lines) + "\n"
