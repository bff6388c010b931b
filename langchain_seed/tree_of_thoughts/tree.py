"""The search tree: plain nodes with ids, parents, values and a kept / pruned status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NodeStatus = Literal["root", "kept", "pruned", "open"]
"""``root``; ``kept`` (selected into the beam / explored by DFS); ``pruned`` (not selected,
below the DFS threshold, or never reached); ``open`` only while the search runs."""


@dataclass
class Node:
    """One state of the search."""

    id: int
    parent: int | None
    depth: int
    thought: str
    """The step that led here from the parent (the state's new suffix)."""
    state: str
    """The whole partial solution: the parent's state plus ``thought``."""
    value: float | None = None
    status: NodeStatus = "open"
    final: bool = False
    """The task says the state is a complete solution."""
    note: str = ""
    """Why the node was pruned or how it was valued (``duplicate``, ``cached``, ...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable copy."""
        return asdict(self)


@dataclass
class Tree:
    """All nodes created by one search, indexed by id (the root is node 0)."""

    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def with_root(cls) -> Tree:
        """A tree holding only the root (empty state)."""
        return cls([Node(id=0, parent=None, depth=0, thought="", state="", status="root")])

    @property
    def root(self) -> Node:
        """Node 0."""
        return self.nodes[0]

    def add(self, parent: Node, state: str) -> Node:
        """Create a child of ``parent`` whose state is ``state``."""
        thought = state[len(parent.state) :] if state.startswith(parent.state) else state
        node = Node(
            id=len(self.nodes),
            parent=parent.id,
            depth=parent.depth + 1,
            thought=thought,
            state=state,
        )
        self.nodes.append(node)
        return node

    def path(self, node: Node) -> list[Node]:
        """The nodes from the root to ``node`` (both included)."""
        out = [node]
        while out[-1].parent is not None:
            out.append(self.nodes[out[-1].parent])  # type: ignore[index]
        return out[::-1]

    def close(self) -> None:
        """Mark every node still ``open`` as ``pruned`` (the search is over)."""
        for node in self.nodes:
            if node.status == "open":
                node.status = "pruned"
                node.note = node.note or "not expanded"

    def to_list(self) -> list[dict[str, Any]]:
        """Every node as a JSON-serializable dict."""
        return [n.to_dict() for n in self.nodes]
