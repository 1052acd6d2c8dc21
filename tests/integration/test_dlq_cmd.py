"""`stationflow dlq list/show/replay` on dead letters made by the real parser from the bad
samples, replayed to private topics of the real broker; on one Redis (one stream) and on the
Redis Cluster (the entries spread over the dead-letter buckets, ids `<stream id>.<bucket>`)."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafkautil import consume_all, create_topics, unique_catalogue
from samplefiles import BAD_SAMPLES

from parsers.envelopes import parse_message
from parsers.records import ParseError
from stationflow.cli import main
from stationflow.deadletters import HEADER_OF, HEADER_SOURCE, REPLAYED_GROUP
from store.dlq import DeadLetter, DeadLetters
from store.keys import Keys

PREFIX = "sfdlq"
BAD = BAD_SAMPLES
#: sample file -> (topic alias, offset) as the ingester would have seen them
SAMPLES = {
    "02_truncated_json.json": ("car_order", 0),
    "05_missing_station_id.json": ("device_meter", 1),
    "oversize": ("device_meter", 2),  # built below: over the topic's 1 MiB limit
    "14_numbers_as_strings.json": ("device_meter", 3),
    "16_realtime_one_bad_element.json": ("station_realtime_data", 4),
}
RAW_MAX = 65_536


@pytest.fixture(params=["single", "cluster"])
def dead(request, redis_client, redis_url, kafka_bootstrap, tmp_path):
    """Dead letters of the bad samples (parser verdicts), topics renamed per test, each added
    in a millisecond of its own (so the merged order of the buckets is the order written)."""
    if request.param == "cluster":
        r, url = request.getfixturevalue("cluster_client"), request.getfixturevalue("redis_cluster").url
    else:
        r, url = redis_client, redis_url
    cat = unique_catalogue()
    entries = []
    for name, (alias, offset) in SAMPLES.items():
        spec = cat.topic(alias)
        value = b"[" + b"1," * (spec.max_bytes // 2) + b"1]" if name == "oversize" else (BAD / name).read_bytes()
        try:
            res = parse_message(spec, value)
        except ParseError as e:
            entries.append(DeadLetter(spec.topic, 0, offset, 1_700_000_000_000 + offset, e.reason, e.detail, value,
                                      e.element_index))
            continue
        entries += [DeadLetter(spec.topic, 0, offset, 1_700_000_000_000 + offset, rej.reason, rej.detail, rej.raw,
                               rej.element_index) for rej in res.rejections]
    dl = DeadLetters(r, PREFIX, raw_max_bytes=RAW_MAX)
    ids = []
    for e in entries:
        ids += dl.add([e])
        time.sleep(0.002)
    assert all(ids)
    if request.param == "cluster":  # in buckets on more than one master
        assert all(re.fullmatch(r"\d+-\d+\.\d+", i) for i in ids) and len({i.split(".")[1] for i in ids}) > 1
    lines = [f'prefix = "{PREFIX}"', f"dlq_raw_max_bytes = {RAW_MAX}", f'[redis]\nurl = "{url}"',
             f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"']
    if request.param == "cluster":
        lines.append(f'[queue]\nredis_url = "{redis_url}"')
    lines += [f'[topics.{t.alias}]\ntopic = "{t.topic}"' for t in cat.topics]
    cfg = tmp_path / "stationflow.toml"
    cfg.write_text("\n".join(lines) + "\n")
    create_topics(kafka_bootstrap, [cat.topic(a).topic for a, _ in SAMPLES.values()], partitions=1)
    by_offset = {e.offset: (i, e) for i, e in zip(ids, entries, strict=True)}
    return {"r": r, "cfg": cfg, "cat": cat, "ids": ids, "by_offset": by_offset,
            "bootstrap": kafka_bootstrap}


def _cli(cfg: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(cfg), "dlq", *args], catch_exceptions=False)


def _end(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return admin.list_partition_offsets({TopicPartition(topic, 0): OffsetSpec.LATEST})[
            TopicPartition(topic, 0)].offset
    finally:
        admin.close()


def test_list_newest_first_with_filters(dead):
    out = _cli(dead["cfg"], "list", "--json")
    rows = [json.loads(x) for x in out.output.splitlines()]
    assert [r["id"] for r in rows] == list(reversed(dead["ids"]))
    assert [r["reason"] for r in rows] == ["missing_station_id", "bad_field_type", "too_large",
                                           "missing_station_id", "bad_json"]
    assert rows[0]["element_index"] == 1 and rows[0]["offset"] == 4

    meter = [json.loads(x) for x in _cli(dead["cfg"], "list", "--json", "--topic", "device_meter").output.splitlines()]
    assert [r["offset"] for r in meter] == [3, 2, 1]  # the alias resolves to the renamed topic
    one = [json.loads(x) for x in _cli(dead["cfg"], "list", "--json", "--reason", "missing_station_id",
                                      "--count", "1").output.splitlines()]
    assert [(r["offset"], r["reason"]) for r in one] == [(4, "missing_station_id")]

    text = _cli(dead["cfg"], "list").output
    assert text.splitlines()[0].startswith(("redis redis://127.0.0.1:", "redis redis+cluster://127.0.0.1:"))
    assert "(prefix sfdlq)" in text.splitlines()[0]
    assert all(r["source"]["prefix"] == PREFIX for r in rows)
    text = "\n".join(text.splitlines()[1:])
    assert text.splitlines()[0] == ("5 entries in the stream; ever added by reason: bad_field_type 1, bad_json 1, "
                                    "missing_station_id 2, too_large 1")
    assert f"{dead['cat'].topic('station_realtime_data').topic}:0:4:1" in text
    assert "no matching entries" in _cli(dead["cfg"], "list", "--reason", "bad_utf8").output


def test_show_decodes_detail_and_raw_bytes(dead):
    sid, entry = dead["by_offset"][0]  # truncated JSON
    text = _cli(dead["cfg"], "show", sid).output
    assert "reason: bad_json" in text and "offset: 0" in text and "element: whole message" in text
    raw = entry.raw
    first_hex = " ".join(f"{b:02x}" for b in raw[:16])
    assert f"00000000  {first_hex}" in text
    assert raw[:30].decode() in text
    d = json.loads(_cli(dead["cfg"], "show", sid, "--json").output)
    assert base64.b64decode(d["raw_base64"]) == raw and d["raw_len"] == len(raw) and d["replayed"] == 0

    big_id, big = dead["by_offset"][2]
    big_text = _cli(dead["cfg"], "show", big_id).output
    assert f"{len(big.raw)} bytes, {RAW_MAX} kept" in big_text and "more bytes" in big_text

    missing = CliRunner().invoke(main, ["--config", str(dead["cfg"]), "dlq", "show", "1-1"])
    assert missing.exit_code == 1 and "no dead letter 1-1" in missing.output


def test_replay_sends_raw_value_with_headers_and_records_it(dead):
    sid, entry = dead["by_offset"][3]  # numbers as strings, a whole message
    out = _cli(dead["cfg"], "replay", sid)
    assert out.exit_code == 0, out.output
    assert "1 replayed, 0 skipped" in out.output
    recs = consume_all(dead["bootstrap"], entry.topic, 1, timeout_s=20)
    assert [r.value for r in recs] == [entry.raw]
    headers = dict(recs[0].headers)
    assert headers[HEADER_OF] == sid.encode() and headers[HEADER_SOURCE] == f"{entry.topic}:0:3".encode()
    assert dead["r"].hget(Keys(PREFIX).counters(REPLAYED_GROUP), sid) == b"1"
    listed = json.loads(_cli(dead["cfg"], "list", "--json", "--count", "2").output.splitlines()[1])
    assert listed["id"] == sid and listed["replayed"] == 1
    # the replayed value is still bad: the ingester would dead-letter it again, for the same reason
    with pytest.raises(ParseError) as e:
        parse_message(dead["cat"].by_topic[entry.topic], recs[0].value)
    assert e.value.reason == entry.reason


def test_replay_of_an_element_rewraps_it_in_the_envelope(dead):
    sid, entry = dead["by_offset"][4]  # element 1 of a realtime wrapper
    assert _cli(dead["cfg"], "replay", sid).exit_code == 0
    recs = consume_all(dead["bootstrap"], entry.topic, 1, timeout_s=20)
    assert len(recs) == 1
    assert json.loads(recs[0].value) == {"realTimeData": [json.loads(entry.raw)]}
    res = parse_message(dead["cat"].by_topic[entry.topic], recs[0].value)
    assert res.records == [] and [(r.reason, r.element_index) for r in res.rejections] == [("missing_station_id", 0)]


def test_replay_by_reason_dry_run_and_truncated_entries(dead):
    meter = dead["cat"].topic("device_meter").topic
    before = _end(dead["bootstrap"], meter)
    dry = _cli(dead["cfg"], "replay", "--topic", "device_meter", "--dry-run")
    assert "dry run: 2 to send, 1 skipped" in dry.output
    assert f"only {RAW_MAX} of" in dry.output  # the 5 MiB entry was truncated: cannot be rebuilt
    assert _end(dead["bootstrap"], meter) == before
    assert dead["r"].hlen(Keys(PREFIX).counters(REPLAYED_GROUP)) == 0

    out = _cli(dead["cfg"], "replay", "--reason", "missing_station_id")
    assert "2 replayed, 0 skipped" in out.output
    assert _end(dead["bootstrap"], meter) == before + 1  # one of the two is a realtime element
    usage = CliRunner().invoke(main, ["--config", str(dead["cfg"]), "dlq", "replay"])
    assert usage.exit_code == 2 and "nothing selected" in usage.output


def test_replay_json_dry_run_and_send(dead):
    meter = dead["cat"].topic("device_meter").topic
    before = _end(dead["bootstrap"], meter)
    dry = json.loads(_cli(dead["cfg"], "replay", "--topic", "device_meter", "--dry-run", "--json").output)
    assert dry["dry_run"] is True and dry["source"]["prefix"] == PREFIX
    assert len(dry["would_send"]) == 2 and len(dry["skipped"]) == 1 and f"only {RAW_MAX} of" in dry["skipped"][0]["why"]
    assert _end(dead["bootstrap"], meter) == before
    sid, entry = dead["by_offset"][3]
    sent = json.loads(_cli(dead["cfg"], "replay", sid, "--json").output)
    assert sent["failed"] == 0 and sent["skipped"] == []
    assert sent["sent"] == [{"id": sid, "topic": entry.topic, "partition": 0, "offset": before}]
    assert dead["r"].hget(Keys(PREFIX).counters(REPLAYED_GROUP), sid) == b"1"


# ---- pure helpers (no servers) ----------------------------------------------------------------

def test_replay_value_per_envelope():
    from parsers.catalogue import default_catalogue
    from stationflow.deadletters import NotReplayable, hexdump, preview, replay_value

    cat = default_catalogue()

    def entry(topic, raw, element=None, raw_len=None):
        return {"topic": topic, "partition": 1, "offset": 9, "raw": raw, "element_index": element,
                "raw_len": len(raw) if raw_len is None else raw_len}

    elem = b'{"stationId":"S1","gunNum":"2"}'
    assert replay_value(cat.topic("station_param"), entry("SCHEDULE-STATION-PARAM", elem, 3)) == b"[" + elem + b"]"
    assert json.loads(replay_value(cat.topic("car_price"), entry("SCHEDULE-CAR-PRICE", elem, 0))) == {
        "fee": [json.loads(elem)]}
    assert json.loads(replay_value(cat.topic("environment_calendar"), entry("X", b'{"date":1}', 0))) == {
        "calendar": [{"date": 1}]}
    assert replay_value(cat.topic("car_order"), entry("SCHEDULE-CAR-ORDER", b"\xff\x00")) == b"\xff\x00"
    with pytest.raises(NotReplayable, match="cannot be sent alone"):
        replay_value(cat.topic("load_prediction"), entry("MODULE-OUTPUT-LOAD_PREDICTION", b"{}", 0))
    with pytest.raises(NotReplayable, match="only 2 of 10 bytes"):
        replay_value(cat.topic("car_order"), entry("SCHEDULE-CAR-ORDER", b"{}", raw_len=10))
    with pytest.raises(NotReplayable, match="not in the catalogue"):
        replay_value(None, entry("OTHER", b"{}"))

    assert preview(b'{"a":"\xff\x01"}') == '{"a":"\\xff\\x01"}'
    assert preview(b"x" * 10, limit=4) == "xxxx... (6 more characters)"
    dump = hexdump(bytes(range(20)), limit=16).splitlines()
    assert dump[0].startswith("00000000  00 01 02") and dump[-1] == "... 4 more bytes"
