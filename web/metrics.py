"""Request and store counters, sampled time series, and the Prometheus exposition.

Counted in the edge middleware (every HTTP request, /health included) and by the
service (sessions, store operations). ``/metrics`` reports the reference's JSON
shape; its ``databases`` keys are the reference's backend *roles* — ``redis``
(sessions), ``clickhouse`` (patterns), ``qdrant`` (vectors) — whichever
implementation serves the role. Time series are sampled every ``SAMPLE_SECONDS``
and kept for an hour.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from web.resources import ResourceSampler

__all__ = ["Metrics", "SERIES", "SAMPLE_SECONDS", "ROLES"]

SAMPLE_SECONDS = 10.0
_KEEP = 360
ROLES = ("clickhouse", "qdrant", "redis")
SERIES = (
    "kato_cpu_usage_percent", "kato_memory_usage_percent", "kato_memory_usage_bytes",
    "kato_disk_usage_percent", "load_average_1m", "kato_requests_total",
    "kato_request_duration_seconds", "kato_errors_total", "sessions_created", "sessions_deleted",
    "session_operations", "clickhouse_operations", "clickhouse_response_time", "clickhouse_errors",
    "qdrant_operations", "qdrant_response_time", "qdrant_errors", "redis_operations",
    "redis_response_time", "redis_errors", "kato_sessions_active",
)


class _Store:
    __slots__ = ("operations", "errors", "seconds")

    def __init__(self) -> None:
        self.operations = 0
        self.errors = 0
        self.seconds = 0.0


class Metrics:
    """Counters of one process."""

    def __init__(self, resources: ResourceSampler) -> None:
        self.resources = resources
        self.started = time.time()
        self.requests_total = 0
        self.errors_total = 0
        self.duration_sum = 0.0
        self.recent: deque[tuple[float, float, bool]] = deque()
        self.sessions_created = 0
        self.sessions_deleted = 0
        self.session_operations = 0
        self.observations = 0
        self.patterns_learned = 0
        self.stores = {role: _Store() for role in ROLES}
        self.series: dict[str, deque[tuple[float, float]]] = {name: deque(maxlen=_KEEP) for name in SERIES}
        self.last_sample = 0.0

    def request(self, status: int, seconds: float) -> None:
        """Count one served request."""
        now = time.time()
        self.requests_total += 1
        self.duration_sum += seconds
        if status >= 500:
            self.errors_total += 1
        recent = self.recent
        recent.append((now, seconds, status >= 500))
        while recent and recent[0][0] < now - 60.0:
            recent.popleft()

    def store(self, role: str, seconds: float, ok: bool) -> None:
        """Count one operation against the store serving ``role``."""
        entry = self.stores[role]
        entry.operations += 1
        entry.seconds += seconds
        if not ok:
            entry.errors += 1

    def uptime(self) -> float:
        """Seconds since start (always > 0)."""
        return max(time.time() - self.started, 1e-6)

    def average_response_time(self) -> float:
        """Mean request duration over the last 60 s (seconds)."""
        cutoff = time.time() - 60.0
        window = [d for t, d, _ in self.recent if t >= cutoff]
        return sum(window) / len(window) if window else 0.0

    def recent_counts(self) -> tuple[int, int]:
        """(requests, errors) served in the last 60 s."""
        cutoff = time.time() - 60.0
        window = [err for t, _, err in self.recent if t >= cutoff]
        return len(window), sum(window)

    def databases(self) -> dict[str, dict[str, float]]:
        """Per role: operations, errors, average response time (s)."""
        return {role: {"operations": s.operations, "errors": s.errors,
                       "avg_response_time": s.seconds / s.operations if s.operations else 0.0}
                for role, s in self.stores.items()}

    def sample(self, active_sessions: int) -> None:
        """Record one point of every time series (called every SAMPLE_SECONDS)."""
        now = time.time()
        self.last_sample = now
        r = self.resources
        values: dict[str, float] = {
            "kato_cpu_usage_percent": r.cpu_percent(),
            "kato_memory_usage_percent": r.memory_percent(),
            "kato_memory_usage_bytes": float(r.memory_bytes()),
            "kato_disk_usage_percent": r.disk_percent(),
            "load_average_1m": r.load_average(),
            "kato_requests_total": float(self.requests_total),
            "kato_request_duration_seconds": self.average_response_time(),
            "kato_errors_total": float(self.errors_total),
            "sessions_created": float(self.sessions_created),
            "sessions_deleted": float(self.sessions_deleted),
            "session_operations": float(self.session_operations),
            "kato_sessions_active": float(active_sessions),
        }
        for role, s in self.stores.items():
            values[f"{role}_operations"] = float(s.operations)
            values[f"{role}_response_time"] = s.seconds / s.operations if s.operations else 0.0
            values[f"{role}_errors"] = float(s.errors)
        for name, value in values.items():
            self.series[name].append((now, value))

    def points(self, name: str, minutes: int) -> list[dict[str, Any]]:
        """Points of series ``name`` within the last ``minutes`` minutes."""
        cutoff = time.time() - minutes * 60.0
        return [{"timestamp": t, "value": v, "labels": {}} for t, v in self.series.get(name, ()) if t >= cutoff]

    def prometheus(self, active_sessions: int, backends: dict[str, bool], unindexed: int) -> str:
        """Prometheus text exposition (format 0.0.4)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {_num(value)}")

        metric("kato_requests_total", "counter", "HTTP requests served.", [("", self.requests_total)])
        metric("kato_request_errors_total", "counter", "HTTP responses with status >= 500.",
               [("", self.errors_total)])
        metric("kato_request_duration_seconds_sum", "counter", "Total time spent serving requests.",
               [("", self.duration_sum)])
        metric("kato_sessions_active", "gauge", "Live sessions.", [("", active_sessions)])
        metric("kato_sessions_created_total", "counter", "Sessions created.", [("", self.sessions_created)])
        metric("kato_sessions_deleted_total", "counter", "Sessions deleted.", [("", self.sessions_deleted)])
        metric("kato_observations_total", "counter", "Observations processed.", [("", self.observations)])
        metric("kato_patterns_learned_total", "counter", "Learns applied (re-learns included).",
               [("", self.patterns_learned)])
        metric("kato_vectors_unindexed_total", "counter", "Vectors not indexed (dimension mismatch).",
               [("", unindexed)])
        metric("kato_store_operations_total", "counter", "Store operations by backend role.",
               [(f'{{role="{role}"}}', s.operations) for role, s in self.stores.items()])
        metric("kato_store_errors_total", "counter", "Failed store operations by backend role.",
               [(f'{{role="{role}"}}', s.errors) for role, s in self.stores.items()])
        metric("kato_backend_up", "gauge", "1 when the backend answered its last ping.",
               [(f'{{backend="{name}"}}', 1 if ok else 0) for name, ok in backends.items()])
        metric("kato_uptime_seconds", "gauge", "Seconds since the process started.", [("", self.uptime())])
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
