"""Formats of the link-health report: a table for people, JSON for tools, markdown for list maintainers.

Titles, URLs, reasons, list names and sections come from lists and servers anyone can edit: every one
is shown as literal text (`cli.common.plain`/`shown`), never read as Rich markup.
"""

from __future__ import annotations

import json

from rich.table import Table

from cli.common import out, plain, shown
from ingest.models import section_label

# States a maintainer should act on, in the order they matter.
BROKEN_STATES = ("dead", "archived", "failed", "blocked")


def render_links(rows: list[dict[str, object]], fmt: str, of_list: dict[str, object] | None = None) -> None:
    """`of_list` (a store list row) when the report is one list's: its name and URL head the markdown."""
    if fmt == "json":
        out.print_json(json.dumps(rows))
    elif fmt == "markdown":
        out.print(plain(links_markdown(rows, of_list)))
    else:
        out.print(links_table(rows))


def links_table(rows: list[dict[str, object]]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for name in ("state", "title", "url", "lists", "section", "reason"):
        table.add_column(name, overflow="fold")
    for r in rows:
        sections: list[list[str]] = r["sections"] or [[]]  # type: ignore[assignment]
        table.add_row(plain(r["state"]), plain(r["title"]), plain(r["url"]), plain(", ".join(r["lists"])),  # type: ignore[arg-type]
                      plain(section_label(tuple(sections[0]))), plain(r["reason"] or ""))
    return table


def render_lists(rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(header_style="bold")
    for name in ("list", "url", "links", "states", "crawled"):
        table.add_column(name, overflow="fold")
    for r in rows:
        states = ", ".join(f"{k} {v}" for k, v in r["states"].items())  # type: ignore[attr-defined]
        name = str(r["name"]) + (" (dropped)" if r["dropped_at"] else "")
        table.add_row(plain(name), plain(r["url"]), plain(r["links"]), plain(states), plain(r["crawled_at"] or "never"))
    out.print(table)


def links_markdown(rows: list[dict[str, object]], of_list: dict[str, object] | None = None) -> str:
    """What a maintainer pastes into an issue or PR: broken links, each with its archived replacement.

    For one list's report (`of_list`), sections are that list's; other lists citing a link are not named.
    """
    lines = ["# Link health", ""]
    if of_list is not None:
        lines = [f"# Link health of {of_list['name']}", "", f"List: {of_list['source']}", ""]
    head = len(lines)
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
            sections = ", ".join(section_label(path) for path in r["sections"]) or "—"  # type: ignore[attr-defined]
            line = f"- [{r['title']}]({r['url']}) ({sections}): {r['reason']}"
            if r.get("archived_url"):
                line += f" — replace with the archived copy: {r['archived_url']}"
            lines.append(line)
    if len(lines) == head + 1:
        lines += ["", "Every link is healthy."]
    return shown("\n".join(lines) + "\n")
