"""Node -> knowledge-base id (api.md §1.6) and node resolution for processor-level routes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["kb_id_for", "resolve_node"]

_UNSAFE = str.maketrans({c: "_" for c in '/\\."$*<>:|?- '})


def kb_id_for(node_id: str, service_name: str = "kato") -> str:
    """The exact ``kb_id`` of api.md §1.6 (bit-identical with the reference).

    Unsafe characters become ``_``; ids longer than 60 code points keep a prefix of
    the node plus the first 8 hex digits of its md5.
    """
    safe_node = node_id.translate(_UNSAFE)
    safe_base = service_name.replace("-", "_")
    kb_id = f"{safe_node}_{safe_base}"
    if len(kb_id) > 60:
        digest = hashlib.md5(safe_node.encode("utf-8")).hexdigest()[:8]
        keep = 60 - len(safe_base) - 10
        kb_id = f"{safe_node[:keep]}_{digest}_{safe_base}"
    return kb_id


def resolve_node(query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """Node of a processor-level request: ``?node_id``, ``x-test-id`` (prefixed
    ``test_`` unless it already is), ``x-node-id``, else ``default_node``."""
    node = query.get("node_id")
    if node:
        return node
    test_id = headers.get("x-test-id")
    if test_id:
        return test_id if test_id.startswith("test_") else f"test_{test_id}"
    return headers.get("x-node-id") or "default_node"
