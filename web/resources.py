"""Host resource readings for /metrics and /health (Linux /proc; zeros elsewhere)."""

from __future__ import annotations

import os
import shutil

__all__ = ["ResourceSampler"]


class ResourceSampler:
    """CPU %, memory % and bytes, disk %, load average; every value within 0..100 where a percent."""

    def __init__(self, disk_path: str) -> None:
        self.disk_path = disk_path
        self._cpu_prev = self._cpu_times()

    @staticmethod
    def _cpu_times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def cpu_percent(self) -> float:
        """System CPU use since the previous call (0.0 when unknown)."""
        now = self._cpu_times()
        prev, self._cpu_prev = self._cpu_prev, now
        if now is None or prev is None or now[0] <= prev[0]:
            return 0.0
        busy = (now[0] - prev[0]) - (now[1] - prev[1])
        return round(min(100.0, max(0.0, 100.0 * busy / (now[0] - prev[0]))), 2)

    @staticmethod
    def memory_percent() -> float:
        """Share of host memory in use (MemTotal - MemAvailable)."""
        try:
            info: dict[str, int] = {}
            with open("/proc/meminfo") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    info[key] = int(rest.split()[0])
            total, avail = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
            return round(min(100.0, max(0.0, 100.0 * (total - avail) / total)), 2)
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            return 0.0

    @staticmethod
    def memory_bytes() -> int:
        """Resident set size of this process."""
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def disk_percent(self) -> float:
        """Use of the filesystem holding the data directory."""
        path = self.disk_path
        while path and not os.path.exists(path):
            path = os.path.dirname(path)
        try:
            usage = shutil.disk_usage(path or ".")
        except OSError:
            return 0.0
        return round(100.0 * usage.used / usage.total, 2) if usage.total else 0.0

    @staticmethod
    def load_average() -> float:
        """One-minute load average (0.0 when unknown)."""
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
