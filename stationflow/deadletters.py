"""Dead letters for operators: previews, replay values, replay counts and sending a replay;
used by `stationflow dlq` and the console.

Replay sends an entry's raw bytes back to its original topic, where the ingesters parse it
again. An element of a multi-station message was stored alone, so it is re-wrapped in its
topic's envelope first. Each sent message carries the headers `stationflow-replay-of` (the
entry id) and `stationflow-replay-source` (topic:partition:offset[:element]), and the entry's
replay count is kept in the plain-text hash `<prefix>:counters:dlq_replayed` (entry id ->
times replayed).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any

from parsers.catalogue import TopicSpec

REPLAYED_GROUP = "dlq_replayed"
HEADER_OF = "stationflow-replay-of"
HEADER_SOURCE = "stationflow-replay-source"


class NotReplayable(ValueError):
    """An entry whose original value cannot be rebuilt; the message says why."""


# ---- pure helpers ---------------------------------------------------------------------------

def replay_value(spec: TopicSpec | None, entry: Mapping[str, Any]) -> bytes:
    """The value to send for `entry`: its raw bytes, or the rejected element re-wrapped in the
    topic's envelope (spec §3), without re-encoding the element itself."""
    topic = entry["topic"]
    where = f"{topic}:{entry['partition']}:{entry['offset']}"
    raw: bytes = entry["raw"]
    if spec is None:
        raise NotReplayable(f"{where}: topic {topic} is not in the catalogue")
    if entry["raw_len"] > len(raw):
        raise NotReplayable(f"{where}: only {len(raw)} of {entry['raw_len']} bytes were kept "
                            "(dlq_raw_max_bytes); replay it from the source instead")
    if entry["element_index"] is None:
        return raw
    if spec.envelope == "station_array":
        return b"[" + raw + b"]"
    if spec.envelope in ("wrapper", "global_wrapper") and spec.wrapper_key:
        return b'{"' + spec.wrapper_key.encode() + b'":[' + raw + b"]}"
    raise NotReplayable(f"{where}: element {entry['element_index']} of a {spec.envelope} message cannot be "
                        "sent alone")


def source_of(entry: Mapping[str, Any]) -> str:
    ei = entry["element_index"]
    return f"{entry['topic']}:{entry['partition']}:{entry['offset']}" + ("" if ei is None else f":{ei}")


def matches(entry: Mapping[str, Any], reason: str | None, topic: str | None) -> bool:
    return (reason is None or entry["reason"] == reason) and (topic is None or entry["topic"] == topic)


def preview(raw: bytes, limit: int = 300) -> str:
    """The raw value as text, control bytes escaped, cut at `limit` characters."""
    text = raw.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def hexdump(raw: bytes, limit: int = 256) -> str:
    lines = []
    for off in range(0, min(len(raw), limit), 16):
        chunk = raw[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hx:<47}  {asc}")
    if len(raw) > limit:
        lines.append(f"... {len(raw) - limit} more bytes")
    return "\n".join(lines)


def entry_json(entry: Mapping[str, Any], replayed: int = 0, full: bool = False) -> dict[str, Any]:
    d = {k: v for k, v in entry.items() if k != "raw"}
    d["replayed"] = replayed
    d["raw_kept"] = len(entry["raw"])
    d["raw_preview"] = preview(entry["raw"], 120 if not full else 2000)
    if full:
        d["raw_base64"] = base64.b64encode(entry["raw"]).decode()
    return d


# ---- store access -------------------------------------------------------------------------------

def iter_entries(dl: Any, newest_first: bool = True, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every entry of every dead-letter stream (store.dlq.DeadLetters.iter: merged in id order)."""
    return dl.iter(newest_first=newest_first, page=page)


def replay_counts(r: Any, prefix: str, ids: list[str]) -> dict[str, int]:
    from store.keys import Keys

    if not ids:
        return {}
    vals = r.hmget(Keys(prefix).counters(REPLAYED_GROUP), ids)
    return {i: int(v) if v else 0 for i, v in zip(ids, vals, strict=True)}


def send(settings: Any, plan: list[tuple[dict[str, Any], bytes]], bootstrap: str | None
         ) -> list[tuple[dict[str, Any], int, int]]:
    """Send every planned value (acknowledged); returns (entry, partition, offset) of those sent."""
    import logging

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    if not plan:
        return []
    cfg = settings.kafka.producer_config()
    if bootstrap:
        cfg["bootstrap_servers"] = bootstrap
    cfg["max_request_size"] = max(int(cfg.get("max_request_size", 1 << 20)), max(len(v) for _, v in plan) + 1024)
    producer = KafkaProducer(**cfg)
    out = []
    try:
        futures = [(e, producer.send(e["topic"], value=v, headers=[(HEADER_OF, e["id"].encode()),
                                                                      (HEADER_SOURCE, source_of(e).encode())]))
                   for e, v in plan]
        producer.flush(30)
        for e, f in futures:
            try:
                md = f.get(timeout=30)
            except KafkaError as exc:
                logging.getLogger("stationflow.dlq").error("replay of %s to %s failed: %s", e["id"], e["topic"], exc)
                continue
            out.append((e, md.partition, md.offset))
    finally:
        producer.close(timeout=10)
    return out
