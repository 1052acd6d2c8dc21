"""Module outputs and order cursors: the one place that writes them (job_writes.lua).

A station job queues all of its writes as one script call plus one ZADD on the pipeline that
also carries its batch reports and the clearing of its running marker: one round trip for
everything a job writes. `WindowStore.store_output` and `WindowStore.advance_cursor` (one
write each, for tools and tests) go through the same call.

Outputs newest first, `outputs_keep` kept, the module's output retention as TTL,
`ts:<module>` in the station's meta hash, the station's last-seen score raised (never
lowered) in the registry; cursors never move back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parsers.catalogue import Catalogue
from store.codec import encode_item
from store.keys import Keys
from store.scripts import LuaScript, ScriptPipeline

_SCRIPT: LuaScript | None = None


def _script() -> LuaScript:
    global _SCRIPT
    if _SCRIPT is None:
        _SCRIPT = LuaScript.from_file("job_writes.lua")
    return _SCRIPT


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else str(int(seconds * 1000))


class JobWrites:
    """Queues a job's outputs and cursor moves; the per-module and per-alias constants (output
    retention, order retention) are worked out once per process, not once per job."""

    def __init__(self, catalogue: Catalogue, prefix: str | Keys = "sf", outputs_keep: int = 1) -> None:
        self.keys = prefix if isinstance(prefix, Keys) else Keys(prefix)
        self.keep = max(1, int(outputs_keep))
        self.script = _script()
        self._output_ttl = {t.alias: _ms(t.retention_s) for t in catalogue.topics if t.is_module_output}
        self._orders_ttl = {t.alias: _ms(t.retention_s) for t in catalogue.topics if t.kind == "orders"}

    def queue(self, pipe: ScriptPipeline, station: str, outputs: Sequence[tuple[str, Any]],
              cursors: Sequence[tuple[str, str, int]], ts_ms: int, *, keep: int | None = None,
              src: str = "local") -> int | None:
        """Queue the writes: `outputs` (module, normalised result) stored as items stamped
        `ts_ms` from source `src`, the newest `keep` kept (default: outputs_keep); `cursors`
        (module, orders alias, newest sequence number the module received). Returns the index
        of the script's reply (the cursors after the call), None when there was nothing to
        write."""
        if not outputs and not cursors:
            return None
        k = self.keys
        keys: list[str] = [k.meta(station)]
        args: list[Any] = [len(outputs), int(ts_ms), self.keep if keep is None else max(1, int(keep))]
        for module, value in outputs:
            ttl = self._output_ttl.get(module)
            if ttl is None:
                raise KeyError(f"unknown module {module!r}")
            keys.append(k.output(station, module))
            args += [module, encode_item(ts_ms, src, value), ttl]
        for module, alias, seq in cursors:
            keys.append(k.orders_state(station, alias))
            args += [module, int(seq), self._orders_ttl[alias]]
        at = pipe.call(self.script, keys, args)
        if outputs:
            pipe.pipe.zadd(k.stations_of(station), {station: int(ts_ms)}, gt=True)
        return at
