"""How stored values look: msgpack items for window data, plain text for what operators read.

An item is the msgpack map {"ts": record ms, "src": "topic:partition:offset", "payload": ...};
the Lua scripts never decode it (they keep timestamps beside it), so the format is free to
change here alone.
"""

from __future__ import annotations

from typing import Any

import msgpack

from parsers.records import Source


def encode_item(ts: int, src: str, payload: Any) -> bytes:
    return msgpack.packb({"ts": int(ts), "src": src, "payload": payload}, use_bin_type=True)


def decode_item(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def decode_items(raw: bytes) -> list[dict[str, Any]]:
    """A concatenation of items (as kept in a closed order second)."""
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(raw)
    return list(up)


def source_from(src: str, ts: int) -> Source:
    """Inverse of `Source.coords()`; topic names cannot contain ':' (Kafka's alphabet)."""
    topic, partition, offset = src.rsplit(":", 2)
    return Source(topic, int(partition), int(offset), int(ts))


def text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def decode_closed_second(member: bytes) -> dict[str, Any]:
    """A closed order second: header 'seq|second|late|src|ts|cause|' then the concatenated items.

    `src`/`ts` are the last order message included (the trigger source); `cause` is the
    message whose arrival closed it (empty when the timer did)."""
    seq, second, late, src, ts, _cause, body = member.split(b"|", 6)
    return {
        "seq": int(seq),
        "second": int(second),
        "late": late == b"1",
        "orders": decode_items(body),
        "src": src.decode(),
        "src_ts": int(ts),
    }
