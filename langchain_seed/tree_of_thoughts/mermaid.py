"""A Mermaid flowchart of a search tree (paste into any Markdown viewer that renders it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_LABEL = 60


def _label(node: Mapping[str, Any]) -> str:
    text = " / ".join(line.strip() for line in str(node["thought"]).splitlines() if line.strip())
    if node["parent"] is None:
        text = "input"
    if len(text) > MAX_LABEL:
        text = text[: MAX_LABEL - 1] + "…"
    # Mermaid labels in double quotes: escape quotes and the characters that break parsing.
    for char, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    value = node.get("value")
    if value is not None:
        text += f"<br/>v={value:g}"
    return text


def tree_to_mermaid(
    result: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, title: str | None = None
) -> str:
    """Render a ``TreeOfThoughts`` result (or its ``tree`` list) as a Mermaid flowchart.

    Kept nodes are green, pruned nodes grey, the best path is drawn with thick edges and
    a bold border.

    Args:
        result: the dict returned by ``TreeOfThoughts.invoke``, or its ``tree`` list.
        title: optional chart title (defaults to the input).

    Returns:
        The Mermaid source, starting with ``flowchart TD``.
    """
    info: Mapping[str, Any] = result if isinstance(result, Mapping) else {"tree": list(result)}
    nodes = info["tree"]
    best = {step["id"] for step in info.get("best_path", [])}
    title = title if title is not None else info.get("input")
    lines = []
    if title:
        lines += ["---", f"title: {str(title).splitlines()[0][:80]}", "---"]
    lines.append("flowchart TD")
    for node in nodes:
        lines.append(f'    n{node["id"]}["{_label(node)}"]')
    for node in nodes:
        if node["parent"] is not None:
            arrow = "==>" if node["id"] in best and node["parent"] in best else "-->"
            lines.append(f"    n{node['parent']} {arrow} n{node['id']}")
    lines += [
        "    classDef kept fill:#d4f7d4,stroke:#2e7d32",
        "    classDef pruned fill:#eeeeee,stroke:#9e9e9e,color:#757575",
        "    classDef best stroke:#1565c0,stroke-width:3px",
    ]
    for status in ("kept", "pruned"):
        ids = [f"n{n['id']}" for n in nodes if n.get("status") == status]
        if ids:
            lines.append(f"    class {','.join(ids)} {status}")
    if best:
        lines.append(f"    class {','.join(f'n{i}' for i in sorted(best))} best")
    return "\n".join(lines) + "\n"
