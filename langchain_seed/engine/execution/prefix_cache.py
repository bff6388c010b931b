"""Radix tree of reusable KV spans across requests (SGLang's RadixAttention is the model).

Each edge is labelled with a run of token ids and holds, for every model (target and
optionally draft), the per-layer keys/values of those tokens as ``[kv_heads, n,
head_dim]`` tensors. A new request reuses the KV of its longest cached prefix and
prefills only the rest.

Ownership: every node owns exactly its tokens' KV. Tensors handed to :meth:`insert` that
are views of a bigger storage are copied, and a split copies both halves, so no two nodes
share a storage and evicting a node frees its bytes (gathered KV given to a request is
always a fresh copy, never a view of a node).

Budget: the prefix cache has its own token budget (``EngineConfig.prefix_cache_tokens``),
separate from the engine's ``max_cache_tokens`` KV pool of running sequences: its tensors
live on the models' device outside that pool. After every public call ``tokens_stored <=
budget_tokens``, evicting least recently used leaves, except that spans referenced by
running requests (their :class:`PrefixHandle`) are never evicted: a cache full of spans
in use may exceed the budget by those spans until they are released. Its memory is
therefore at most ``budget_tokens * bytes_per_token`` (``bytes_per_token``: one token's
keys and values over every layer of every model stored), plus the referenced excess and,
transiently, the span being inserted (insert evicts right after adding it) or the node
being split (both halves are copied before the original is dropped).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: ([kv_heads, n, head_dim], same)

_clock = itertools.count()


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: dict[str, KV]  # model name -> per layer ([kv_heads, len(tokens), head_dim], same)
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    refs: int = 0
    last_used: int = 0

    def split(self, at: int) -> _Node:
        """Cut this edge after ``at`` tokens; return the new upper node.

        Both halves are contiguous copies (a slice would keep the whole original storage
        alive for as long as either half lives).
        """
        upper = _Node(
            self.tokens[:at],
            {
                name: [(_cut(k, 0, at), _cut(v, 0, at)) for k, v in kv]
                for name, kv in self.kv.items()
            },
            self.parent,
            last_used=self.last_used,
        )
        assert self.parent is not None
        self.parent.children[self.tokens[0]] = upper
        n = len(self.tokens)
        self.tokens = self.tokens[at:]
        self.kv = {
            name: [(_cut(k, at, n), _cut(v, at, n)) for k, v in kv] for name, kv in self.kv.items()
        }
        self.parent = upper
        upper.children[self.tokens[0]] = self
        return upper


@dataclass(slots=True)
class PrefixHandle:
    """The node a running request holds a reference on (released when it finishes)."""

    nodes: list[_Node]


class PrefixCache:
    """Token-budgeted radix tree of KV spans; see the module docstring.

    Attributes:
        bytes_per_token: bytes of one token's keys and values over every layer of every
            model stored (the largest seen by :meth:`insert`; 0 before the first insert).
            With every node owning its storage, ``stats()["memory_bytes"] ==
            tokens_stored * bytes_per_token`` when every span holds the same models.
    """

    def __init__(self, budget_tokens: int) -> None:
        self._budget_tokens = _check_budget(budget_tokens)
        self.root = _Node((), {}, None)
        self.tokens_stored = 0
        self.bytes_per_token = 0
        self.queries = 0
        self.query_tokens = 0
        self.hit_tokens = 0
        self.evictions = 0
        self.evicted_tokens = 0

    @property
    def budget_tokens(self) -> int:
        """Most tokens kept once no running request references them (``0``: caching off)."""
        return self._budget_tokens

    @budget_tokens.setter
    def budget_tokens(self, value: int) -> None:
        self._budget_tokens = _check_budget(value)
        self._evict()

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
        """Per-layer keys/values of the first ``length`` tokens along ``path``.

        Returns fresh ``[kv_heads, length, head_dim]`` tensors (``torch.cat`` copies), so a
        request never keeps a node's storage alive.
        """
        takes, left = [], length
        for node in path:  # tokens taken from each node; the last may be cut short
            takes.append(min(left, len(node.tokens)))
            left -= takes[-1]
        layers = len(path[0].kv[model])
        out: KV = []
        for layer in range(layers):
            ks = [n.kv[model][layer][0][:, :t] for n, t in zip(path, takes)]
            vs = [n.kv[model][layer][1][:, :t] for n, t in zip(path, takes)]
            out.append((torch.cat(ks, dim=1), torch.cat(vs, dim=1)))
        return out

    def insert(
        self, tokens: Seq[int], read_kv: Callable[[int, int], dict[str, KV]]
    ) -> PrefixHandle:
        """Add ``tokens``; ``read_kv(start, end)`` returns every model's KV of that span.

        Tensors that are views of a bigger storage (or repeat one already in the span) are
        copied, so the new node owns its storage whatever the caller returns. Evicts down
        to the budget right after adding. Returns a handle locking the path (release it
        with :meth:`release`).
        """
        if not self.enabled or not tokens:
            return PrefixHandle([])
        node, pos, path = self.root, 0, []
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                kv = _owned_span(read_kv(pos, len(tokens)), len(tokens) - pos)
                leaf = _Node(tuple(tokens[pos:]), kv, node)
                node.children[tokens[pos]] = leaf
                self.tokens_stored += len(leaf.tokens)
                self.bytes_per_token = max(
                    self.bytes_per_token, _span_bytes(kv) // len(leaf.tokens)
                )
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
        """Plain-data counters (hit rate = cached prompt tokens / queried prompt tokens).

        ``memory_bytes`` is the size of the unique storages the tree holds (each counted
        once), i.e. what evicting everything would free once no request holds a copy.
        """
        return {
            "budget_tokens": self.budget_tokens,
            "tokens_stored": self.tokens_stored,
            "queries": self.queries,
            "query_tokens": self.query_tokens,
            "hit_tokens": self.hit_tokens,
            "hit_rate": round(self.hit_tokens / self.query_tokens, 4) if self.query_tokens else 0.0,
            "evictions": self.evictions,
            "evicted_tokens": self.evicted_tokens,
            "bytes_per_token": self.bytes_per_token,
            "memory_bytes": _storage_bytes(self._tensors()),
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

    def _tensors(self) -> Iterator[torch.Tensor]:
        for node in self._nodes():
            for kv in node.kv.values():
                for k, v in kv:
                    yield k
                    yield v

    def _evict(self) -> None:
        """Drop least recently used unreferenced leaves until within the budget."""
        if self.tokens_stored <= self.budget_tokens:
            return
        # Min-heap on last_used; the counter breaks ties (a path shares one timestamp).
        order = itertools.count()
        heap = [
            (n.last_used, next(order), n) for n in self._nodes() if not n.children and n.refs <= 0
        ]
        heapq.heapify(heap)
        while self.tokens_stored > self.budget_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.tokens_stored -= len(leaf.tokens)
            self.evictions += 1
            self.evicted_tokens += len(leaf.tokens)
            if parent is not self.root and not parent.children and parent.refs <= 0:
                heapq.heappush(heap, (parent.last_used, next(order), parent))


def _check_budget(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"budget_tokens must be an integer >= 0 (0 = off), got {value!r}")
    return value


def _cut(t: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Own copy of token slots ``start:end`` of a ``[kv_heads, n, head_dim]`` tensor."""
    # clone, not .contiguous(): with one kv head the slice is already contiguous and
    # .contiguous() would return the view, sharing the original storage.
    return t[:, start:end].clone(memory_format=torch.contiguous_format)


def _owned_span(kv: dict[str, KV], n: int) -> dict[str, KV]:
    """``kv`` with every tensor owning its whole storage (copies where it does not)."""
    seen: set[tuple[str, int]] = set()

    def own(t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 3 or t.shape[1] != n:
            raise ValueError(
                f"read_kv must return [kv_heads, {n}, head_dim] tensors, got {tuple(t.shape)}"
            )
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        exclusive = (
            t.is_contiguous()
            and t.storage_offset() == 0
            and storage.nbytes() == t.numel() * t.element_size()
            and key not in seen
        )
        seen.add(key)
        return t if exclusive else t.clone(memory_format=torch.contiguous_format)

    return {name: [(own(k), own(v)) for k, v in layers] for name, layers in kv.items()}


def _span_bytes(kv: dict[str, KV]) -> int:
    return sum(k.nbytes + v.nbytes for layers in kv.values() for k, v in layers)


def _storage_bytes(tensors: Iterator[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (each counted once)."""
    sizes: dict[tuple[str, int], int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        sizes[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(sizes.values())


def _common_prefix(a: Seq[int], b: Seq[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
