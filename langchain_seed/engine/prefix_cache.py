"""Radix tree of reusable KV spans across requests (SGLang's RadixAttention is the model).

Each edge is labelled with a run of token ids and holds, for every model (target and
optionally draft), the per-layer keys/values of those tokens as ``[kv_heads, n,
head_dim]`` tensors. A new request reuses the KV of its longest cached prefix and
prefills only the rest. Memory is bounded by a token budget; eviction removes least
recently used leaves that no running request references.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: ([kv_heads, n, head_dim], same)

_clock = itertools.count()


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: dict[str, KV]
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    refs: int = 0
    last_used: int = 0

    def split(self, at: int) -> _Node:
        """Cut this edge after ``at`` tokens; return the new upper node."""
        upper = _Node(
            self.tokens[:at],
            {name: [(k[:, :at], v[:, :at]) for k, v in kv] for name, kv in self.kv.items()},
            self.parent,
            last_used=self.last_used,
        )
        assert self.parent is not None
        self.parent.children[self.tokens[0]] = upper
        self.tokens = self.tokens[at:]
        self.kv = {name: [(k[:, at:], v[:, at:]) for k, v in kv] for name, kv in self.kv.items()}
        self.parent = upper
        upper.children[self.tokens[0]] = self
        return upper


@dataclass(slots=True)
class PrefixHandle:
    """The node a running request holds a reference on (released when it finishes)."""

    nodes: list[_Node]


class PrefixCache:
    """Token-budgeted radix tree of KV spans; see the module docstring."""

    def __init__(self, budget_tokens: int) -> None:
        self.budget_tokens = budget_tokens
        self.root = _Node((), {}, None)
        self.tokens_stored = 0
        self.queries = 0
        self.query_tokens = 0
        self.hit_tokens = 0
        self.evictions = 0
        self.evicted_tokens = 0

    @property
    def enabled(self) -> bool:
        """False when the budget is 0 (prefix caching off)."""
        return self.budget_tokens > 0

    def match(self, tokens: Seq[int]) -> tuple[int, list[_Node]]:
        """Length of the longest cached prefix of ``tokens`` and the nodes covering it.

        The last node may be covered only partly (the returned length says how much).
        """
        node, pos, path = self.root, 0, []
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            common = _common_prefix(child.tokens, tokens[pos:])
            path.append(child)
            pos += common
            if common < len(child.tokens):
                break
            node = child
        return pos, path

    def lookup(
        self, tokens: Seq[int], model: str = "target"
    ) -> tuple[int, KV | None, PrefixHandle]:
        """Match, count the query, lock the path and return the concatenated KV of the match."""
        self.queries += 1
        self.query_tokens += len(tokens)
        length, path = self.match(tokens)
        path = [n for n in path if model in n.kv]
        handle = self._lock(path)
        if length == 0 or not path:
            return 0, None, handle
        self.hit_tokens += length
        return length, self.gather(path, length, model), handle

    def gather(self, path: Seq[_Node], length: int, model: str = "target") -> KV:
        """Per-layer keys/values of the first ``length`` tokens along ``path``."""
        layers = len(path[0].kv[model])
        out: KV = []
        for layer in range(layers):
            ks = [n.kv[model][layer][0] for n in path]
            vs = [n.kv[model][layer][1] for n in path]
            out.append((torch.cat(ks, dim=1)[:, :length], torch.cat(vs, dim=1)[:, :length]))
        return out

    def insert(
        self, tokens: Seq[int], read_kv: Callable[[int, int], dict[str, KV]]
    ) -> PrefixHandle:
        """Add ``tokens``; ``read_kv(start, end)`` returns every model's KV of that span.

        Returns a handle locking the path (release it with :meth:`release`).
        """
        if not self.enabled or not tokens:
            return PrefixHandle([])
        node, pos, path = self.root, 0, []
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                leaf = _Node(tuple(tokens[pos:]), read_kv(pos, len(tokens)), node)
                node.children[tokens[pos]] = leaf
                self.tokens_stored += len(leaf.tokens)
                path.append(leaf)
                break
            common = _common_prefix(child.tokens, tokens[pos:])
            if common < len(child.tokens):
                child = child.split(common)
            path.append(child)
            pos += common
            node = child
        handle = self._lock(path)
        self._evict()
        return handle

    def release(self, handle: PrefixHandle | None) -> None:
        """Drop a running request's references (its nodes become evictable)."""
        if handle is None:
            return
        for node in handle.nodes:
            node.refs -= 1
        handle.nodes = []
        self._evict()

    def stats(self) -> dict[str, Any]:
        """Plain-data counters (hit rate = cached prompt tokens / queried prompt tokens)."""
        nbytes = 0
        for node in self._nodes():
            for kv in node.kv.values():
                nbytes += sum(k.numel() * k.element_size() * 2 for k, _ in kv)
        return {
            "budget_tokens": self.budget_tokens,
            "tokens_stored": self.tokens_stored,
            "queries": self.queries,
            "query_tokens": self.query_tokens,
            "hit_tokens": self.hit_tokens,
            "hit_rate": round(self.hit_tokens / self.query_tokens, 4) if self.query_tokens else 0.0,
            "evictions": self.evictions,
            "evicted_tokens": self.evicted_tokens,
            "memory_bytes": nbytes,
        }

    def clear(self) -> None:
        """Drop everything (e.g. after an engine failure)."""
        self.root = _Node((), {}, None)
        self.tokens_stored = 0

    # ----- internals ---------------------------------------------------------------
    def _lock(self, path: list[_Node]) -> PrefixHandle:
        # Only the deepest node is referenced: its ancestors have a child, so they are
        # never leaves and never evicted while it lives (this also survives splits).
        now = next(_clock)
        for node in path:
            node.last_used = now
        if path:
            path[-1].refs += 1
        return PrefixHandle(path[-1:])

    def _nodes(self) -> list[_Node]:
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    def _evict(self) -> None:
        if self.tokens_stored <= self.budget_tokens:
            return
        leaves = [n for n in self._nodes() if not n.children and n.refs <= 0]
        leaves.sort(key=lambda n: n.last_used)
        while self.tokens_stored > self.budget_tokens and leaves:
            leaf = leaves.pop(0)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.tokens_stored -= len(leaf.tokens)
            self.evictions += 1
            self.evicted_tokens += len(leaf.tokens)
            if parent is not self.root and not parent.children and parent.refs <= 0:
                leaves.append(parent)
                leaves.sort(key=lambda n: n.last_used)


def _common_prefix(a: Seq[int], b: Seq[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
