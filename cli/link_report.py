"""Formats of the link-health report: a table for people, JSON for tools, markdown for list maintainers."""

from __future__ import annotations

import json

from rich.table import Table

from cli.common import out

# States a maintainer should act on, in the order they matter.
BROKEN_STATES = ("dead", "archived", "failed", "blocked")


def render_links(rows: list[dict[str, object]], fmt: str, of_list: dict[str, object] | None = None) -> None:
    """`of_list` (a store list row) when the report is one list's: its name and URL head the markdown."""
    if fmt == "json":
        out.print_json(json.dumps(rows))
    elif fmt == "markdown":
        out.print(links_markdown(rows, of_list), markup=False)
    else:
        out.print(links_table(rows))


def links_table(rows: list[dict[str, object]]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for name in ("state", "title", "url", "lists", "section", "reason"):
        table.add_column(name, overflow="fold")
    for r in rows:
        sections = r["sections"] or [""]
        table.add_row(str(r["state"]), str(r["title"]), str(r["url"]), ", ".join(r["lists"]),  # type: ignore[arg-type]
                      str(sections[0]), str(r["reason"] or ""))  # type: ignore[index]
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
        table.add_row(name, str(r["url"]), str(r["links"]), states, str(r["crawled_at"] or "never"))
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
            sections = ", ".join(r["sections"]) or "—"  # type: ignore[arg-type]
            line = f"- [{r['title']}]({r['url']}) ({sections}): {r['reason']}"
            if r.get("archived_url"):
                line += f" — replace with the archived copy: {r['archived_url']}"
            lines.append(line)
    if len(lines) == head + 1:
        lines += ["", "Every link is healthy."]
    return "\n".join(lines) + "\n"
