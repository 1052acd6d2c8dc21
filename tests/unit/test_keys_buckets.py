"""Index buckets (store.keys): one Redis keeps the plain key names; on Redis Cluster each
global index is split into buckets whose hash tags are chosen so the buckets spread evenly
over the slot ranges `redis-cli --cluster create` gives the masters, and no master carries
much more than the mean at fleet scale."""

from __future__ import annotations

import random
from collections import Counter

import fakeredis
import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from store.keys import CLUSTER_BUCKETS, Keys, bucket_tags, index_buckets, keys_for


def _master_of(slot: int, masters: int) -> int:
    """The master owning `slot` when the slots are split in equal contiguous ranges."""
    return min(masters - 1, slot * masters // REDIS_CLUSTER_HASH_SLOTS)


def _stations(n: int) -> list[str]:
    rnd = random.Random(19)
    return [str(rnd.randrange(10**18, 10**19)) for _ in range(n)]


def test_one_bucket_keeps_the_plain_names():
    k = Keys("sf")
    assert (k.stations, k.orders_due("car_order"), k.batches_due) == ("sf:stations", "sf:due:car_order",
                                                                       "sf:batches:due")
    assert k.stations_all() == ["sf:stations"] and k.stations_of("123") == "sf:stations"
    assert k.batches_due_of("m:t:0:1") == "sf:batches:due"
    assert k.deferred_index == "sf:deferred" and k.deferred_all() == ["sf:deferred"] == [k.deferred_of("1")]
    assert keys_for(fakeredis.FakeRedis()).buckets == 1


def test_many_buckets_refuse_the_single_name_and_tag_each_bucket():
    k = Keys("sf", 8)
    with pytest.raises(ValueError, match="buckets"):
        _ = k.stations
    names = k.stations_all()
    assert len(set(names)) == 8 and all(n.startswith("sf:stations:{b") for n in names)
    assert k.stations_of("1053405539402387456") in names
    assert k.orders_due_of("car_order", "x") == k.orders_due_all("car_order")[k.bucket("x")]
    with pytest.raises(ValueError, match="buckets"):
        _ = k.deferred_index
    assert k.deferred_of("x") == k.deferred_all()[k.bucket("x")] and len(set(k.deferred_all())) == 8


def test_bucket_tags_fall_in_their_own_slot_range():
    for n in (1, 3, 8, CLUSTER_BUCKETS, 100):
        tags = bucket_tags(n)
        assert len(set(tags)) == n
        for i, t in enumerate(tags):
            slot = key_slot(f"sf:stations:{{{t}}}".encode())
            assert i * REDIS_CLUSTER_HASH_SLOTS // n <= slot < (i + 1) * REDIS_CLUSTER_HASH_SLOTS // n


def test_client_setting_wins_over_the_default():
    r = fakeredis.FakeRedis()
    r.stationflow_index_buckets = 6
    assert index_buckets(r) == 6 and keys_for(r, "p").buckets == 6


def _load(masters: int, buckets: int, stations: list[str]) -> list[int]:
    """Writes per master when every station sends one record: its own window keys (its slot)
    plus one member of each bucketed index (registry, order and batch deadlines, deferred runs,
    running jobs) and one dead letter (its bucket by origin: a partition of 16, an offset)."""
    k = Keys("sf", buckets)
    load = Counter()
    for n, s in enumerate(stations):
        load[_master_of(key_slot(k.meta(s).encode()), masters)] += 1
        for key in (k.stations_of(s), k.orders_due_of("car_order", s), k.batches_due_of(f"m:t:0:{s}"),
                    k.deferred_of(s), k.running_of(s),
                    k.dlq_bucket_keys(k.dlq_bucket("SCHEDULE-DEVICE-METER", n % 16, n))[0]):
            load[_master_of(key_slot(key.encode()), masters)] += 1
    return [load[m] for m in range(masters)]


@pytest.mark.parametrize("masters", [3, 4, 6])
def test_busiest_master_at_ten_thousand_stations_is_within_115_percent_of_the_mean(masters):
    load = _load(masters, CLUSTER_BUCKETS, _stations(10_000))
    assert max(load) <= 1.15 * (sum(load) / masters), load


def test_dead_letter_and_running_buckets_keep_their_keys_in_one_slot_each_and_the_single_names():
    k = Keys("sf", 8)
    for i in range(8):
        stream, seen, counters = k.dlq_bucket_keys(i)
        assert len({key_slot(x.encode()) for x in (stream, seen, counters)}) == 1
        assert stream.startswith("sf:dlq:{b") and k.counter_group(counters) == "dlq"
    assert len({key_slot(k.dlq_bucket_keys(i)[0].encode()) for i in range(8)}) == 8
    assert [s for s, _ in k.dlq_streams()] == ["", *(f".{i}" for i in range(8))]  # the single stream read too
    assert k.running_all()[0] == "sf:running" and k.running_of("x") == k.running_all()[1 + k.bucket("x")]
    one = Keys("sf")
    assert one.dlq_bucket_keys(one.dlq_bucket("T", 0, 1)) == ("sf:{dlq}", "sf:{dlq}:seen", "sf:counters:{dlq}")
    assert one.dlq_streams() == [("", "sf:{dlq}")] and one.running_all() == ["sf:running"] == [one.running_of("x")]


def test_too_few_buckets_would_make_a_hot_master():
    """Why the default is not small: 4 buckets over 3 masters put two on one of them."""
    load = _load(3, 4, _stations(10_000))
    assert max(load) > 1.15 * (sum(load) / 3), load


def test_counter_groups_are_split_per_process_and_read_back_summed():
    """Each process writes its own bucket of a counter group (none takes every job's write);
    readers sum the buckets. The dead-letter groups stay single keys ({dlq} slot, replays)."""
    from store.counters import Counters, read_groups

    r = fakeredis.FakeRedis()
    r.stationflow_index_buckets = 8
    k = keys_for(r)
    mine = k.counters("runs")
    assert mine.startswith("sf:counters:runs:{b") and k.counter_group(mine) == "runs"
    assert k.counters("dlq") == "sf:counters:{dlq}" and k.counters("dlq_replayed") == "sf:counters:dlq_replayed"
    other = next(n for n in (k._bucketed("sf:counters:runs", i) for i in range(8)) if n != mine)
    r.hincrby(mine, "m:ok", 2)
    r.hincrby(other, "m:ok", 3)  # another process's bucket
    r.hincrby(k.counters("topic:T-1"), "records", 5)
    r.hincrby(k.counters("dlq"), "T:bad_json", 1)
    assert Counters(r).get("runs") == {"m:ok": 5}
    assert read_groups(r, k) == {"runs": {"m:ok": 5}, "topic:T-1": {"records": 5}, "dlq": {"T:bad_json": 1}}
    assert Counters(r).groups() == ["dlq", "runs", "topic:T-1"]
