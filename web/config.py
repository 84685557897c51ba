"""Effective session configuration: process defaults plus the session's overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine import EngineConfig, validate_overrides
from engine.config import PARAMETER_ORDER

__all__ = ["ConfigResolver"]

# api.md §3.2.1: no process default in the reference, so shown only when overridden.
_SHOWN_ONLY_WHEN_SET = ("fuzzy_token_threshold", "affinity_emotive")


class ConfigResolver:
    """Turns override maps into EngineConfig values (cached) and reports them."""

    def __init__(self, defaults: EngineConfig) -> None:
        self.defaults = defaults
        self._default_report = defaults.as_dict()
        self._cache: dict[bytes, EngineConfig] = {}

    def effective(self, overrides: Mapping[str, Any]) -> EngineConfig:
        """The engine configuration of a session with ``overrides`` (already validated)."""
        if not overrides:
            return self.defaults
        key = msgspec.json.encode(overrides)
        config = self._cache.get(key)
        if config is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            config = self._cache[key] = self.defaults.merged(overrides)
        return config

    def report(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The effective configuration in api.md §3.2.1 order, values as stored."""
        out: dict[str, Any] = {}
        for key in PARAMETER_ORDER:
            if key in overrides:
                out[key] = overrides[key]
            elif key not in _SHOWN_ONLY_WHEN_SET:
                out[key] = self._default_report[key]
        return out

    @staticmethod
    def apply(current: Mapping[str, Any], update: Mapping[str, Any], follow_token_matching: bool) -> dict[str, Any]:
        """New override map: ``update`` validated as a whole and merged into ``current``.

        ``None`` removes an override. With ``follow_token_matching`` (config update,
        not creation), ``sort_symbols`` follows ``use_token_matching`` when only the
        latter is sent (api.md §3.2.2). Raises InvalidConfiguration.
        """
        accepted = validate_overrides(update)
        if follow_token_matching and "use_token_matching" in accepted and "sort_symbols" not in update:
            accepted["sort_symbols"] = accepted["use_token_matching"]
        merged = dict(current)
        for key, value in accepted.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged
