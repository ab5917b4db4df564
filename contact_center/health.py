"""Health aggregated from the components: each registers a probe, /healthz collects them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]


class StatusAggregator:
    """Named probes. ``database`` decides whether the instance serves (200, else 503); the
    overall ``status`` is ``ok``, ``degraded`` (serving while another part is down or falling
    back) or ``fail``."""

    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}
        self._groups: dict[str, dict[str, Probe]] = {}

    def add(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe

    def add_to_group(self, group: str, name: str, probe: Probe) -> None:
        """A probe listed under ``group`` (e.g. each PBX under ``pbx``)."""
        self._groups.setdefault(group, {})[name] = probe

    def remove(self, name: str) -> None:
        self._probes.pop(name, None)

    async def collect(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, document). Healthy when the database probe says ``ok``."""
        doc: dict[str, Any] = {}
        for name, probe in self._probes.items():
            doc[name] = await _run(name, probe)
        for group, probes in self._groups.items():
            doc[group] = {name: await _run(f"{group}.{name}", p) for name, p in probes.items()}
        healthy = doc.get("database", {}).get("status") == "ok"
        # Serving (200) but not whole: Redis, a PBX link or another part is down or falling back.
        parts = [v for k, v in doc.items() if k in self._probes] + [
            member for group in self._groups for member in doc[group].values()
        ]
        whole = all(part.get("status") in ("ok", "disabled", "standby") for part in parts)
        doc["status"] = ("ok" if whole else "degraded") if healthy else "fail"
        return healthy, doc


async def _run(name: str, probe: Probe) -> dict[str, Any]:
    try:
        result = probe()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        return dict(result)
    except Exception as exc:  # a broken probe must not break /healthz
        log.warning("health probe %s raised: %s", name, exc)
        return {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
