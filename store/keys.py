"""Every Redis key name of stationflow, in one place.

Station keys carry the hash tag `{<station>}` so that, under Redis Cluster, all keys of one
station live in one slot and one Lua script may touch them atomically. A global window's
keys share the tag `{<alias>}` for the same reason. Nothing else in the code base builds a
key string by hand: ask `Keys`.
"""

from __future__ import annotations

import functools
import random
import zlib
from dataclasses import dataclass
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: the counter bucket of this process (store.keys.Keys.counters), drawn once
PROCESS_DRAW = random.SystemRandom().randrange(1 << 30)

#: index buckets on Redis Cluster unless `redis.index_buckets` says otherwise: enough that
#: each master of a cluster of up to ~16 gets several, so none carries much more than the mean
CLUSTER_BUCKETS = 48


@functools.lru_cache(maxsize=64)
def bucket_tags(n: int) -> tuple[str, ...]:
    """Hash tags of `n` index buckets, bucket i's tag hashing into the i-th of n equal slot
    ranges: `redis-cli --cluster create` gives masters equal contiguous ranges, so the buckets
    of a global index spread evenly over the masters instead of landing where CRC16 falls."""
    tags = []
    for i in range(n):
        lo, hi = i * REDIS_CLUSTER_HASH_SLOTS // n, (i + 1) * REDIS_CLUSTER_HASH_SLOTS // n
        j = 0
        while not lo <= key_slot(f"b{i}.{j}".encode()) < hi:
            j += 1
        tags.append(f"b{i}.{j}")
    return tuple(tags)


def index_buckets(r: Any) -> int:
    """How many buckets the global indexes of client `r` have: `redis.index_buckets` (set on
    the client by `RedisSettings.connect`), else CLUSTER_BUCKETS on Redis Cluster and 1 (the
    plain key names) on one Redis."""
    n = getattr(r, "stationflow_index_buckets", None)
    if n:
        return int(n)
    from redis.cluster import RedisCluster

    return CLUSTER_BUCKETS if isinstance(r, RedisCluster) else 1


def keys_for(r: Any, prefix: str = "sf") -> Keys:
    """The key names of deployment `prefix` on client `r` (its index buckets included)."""
    return Keys(prefix, index_buckets(r))


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names; `buckets` > 1 splits each global index (station registry, order and batch
    deadlines, deferred runs) into that many keys in different slots (readers merge them). With 1 the
    names are the plain ones below."""

    prefix: str = "sf"
    buckets: int = 1

    # ---- index buckets ----------------------------------------------------------------
    def bucket(self, member: str) -> int:
        """The bucket of an index member (a station id, a batch id)."""
        return 0 if self.buckets == 1 else zlib.crc32(member.encode()) % self.buckets

    def _bucketed(self, base: str, i: int) -> str:
        return base if self.buckets == 1 else f"{base}:{{{bucket_tags(self.buckets)[i]}}}"

    def stations_of(self, station: str) -> str:
        """The registry bucket holding `station`."""
        return self._bucketed(f"{self.prefix}:stations", self.bucket(station))

    def stations_all(self) -> list[str]:
        return [self._bucketed(f"{self.prefix}:stations", i) for i in range(self.buckets)]

    def orders_due_of(self, alias: str, station: str) -> str:
        """The due-index bucket of `station`'s open seconds of `alias`."""
        return self._bucketed(f"{self.prefix}:due:{alias}", self.bucket(station))

    def orders_due_all(self, alias: str) -> list[str]:
        return [self._bucketed(f"{self.prefix}:due:{alias}", i) for i in range(self.buckets)]

    def batches_due_of(self, batch_id: str) -> str:
        return self._bucketed(f"{self.prefix}:batches:due", self.bucket(batch_id))

    def batches_due_all(self) -> list[str]:
        return [self._bucketed(f"{self.prefix}:batches:due", i) for i in range(self.buckets)]

    def deferred_of(self, station: str) -> str:
        """The deferred-index bucket of `station` (rate control, store.pending)."""
        return self._bucketed(f"{self.prefix}:deferred", self.bucket(station))

    def deferred_all(self) -> list[str]:
        return [self._bucketed(f"{self.prefix}:deferred", i) for i in range(self.buckets)]

    def running_of(self, station: str) -> str:
        """The running-index bucket of `station`'s job markers (store.pending)."""
        return self._bucketed(f"{self.prefix}:running", self.bucket(station))

    def running_all(self) -> list[str]:
        """Every running-index key a sweeper reads: the buckets, and with several buckets also
        the single key of a version before them (its markers are still reclaimed)."""
        single = f"{self.prefix}:running"
        buckets = [self._bucketed(single, i) for i in range(self.buckets)]
        return buckets if self.buckets == 1 else [single, *buckets]

    def dlq_bucket(self, topic: str, partition: int, offset: int) -> int:
        """The dead-letter bucket of a message: a hash of its origin, so a replayed message
        finds its seen-index again and a burst of bad messages spreads over every bucket."""
        return self.bucket(f"{topic}:{partition}:{offset}")

    def dlq_bucket_keys(self, i: int) -> tuple[str, str, str]:
        """Stream, seen-index and counter hash of dead-letter bucket `i` (one slot). One
        bucket: `<prefix>:{dlq}`, `<prefix>:{dlq}:seen`, `<prefix>:counters:{dlq}`."""
        if self.buckets == 1:
            return self.dlq, self.dlq_seen, self.counters("dlq")
        stream = self._bucketed(f"{self.prefix}:dlq", i)
        return stream, f"{stream}:seen", self._bucketed(f"{self.prefix}:counters:dlq", i)

    def dlq_streams(self) -> list[tuple[str, str]]:
        """(id suffix, stream) of every dead-letter stream readers merge. An entry's id is its
        stream id plus the suffix: none for `<prefix>:{dlq}` (the one stream of one bucket, and
        what a version before the buckets wrote), `.<i>` for bucket i."""
        if self.buckets == 1:
            return [("", self.dlq)]
        return [("", self.dlq)] + [(f".{i}", self.dlq_bucket_keys(i)[0]) for i in range(self.buckets)]

    def dlq_counter_keys(self) -> list[str]:
        """Every dead-letter counter hash readers sum (the single one first, see dlq_streams)."""
        if self.buckets == 1:
            return [self.counters("dlq")]
        return [self.counters("dlq")] + [self.dlq_bucket_keys(i)[2] for i in range(self.buckets)]

    # ---- per station ------------------------------------------------------------------
    def station_base(self, station: str) -> str:
        """Prefix of every key of `station`; the Lua scripts append the suffixes below."""
        return f"{self.prefix}:{{{station}}}:"

    def meta(self, station: str) -> str:
        return f"{self.station_base(station)}meta"

    def latest(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}w:{alias}"

    def append(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}w:{alias}"

    def hourly(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}h:{alias}"

    def hourly_ts(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}h:{alias}:ts"

    def devices(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}d:{alias}"

    def devices_ts(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}d:{alias}:ts"

    def orders_closed(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}o:{alias}"

    def orders_state(self, station: str, alias: str) -> str:
        return f"{self.station_base(station)}o:{alias}:st"

    def orders_closers(self, station: str, alias: str) -> str:
        """Closing message coords -> first sequence number it closed; close_orders.lua gets it
        in KEYS (every key a script touches is declared: Redis Cluster)."""
        return f"{self.station_base(station)}o:{alias}:cb"

    def output(self, station: str, module: str) -> str:
        return f"{self.station_base(station)}out:{module}"

    def pending(self, station: str) -> str:
        return f"{self.station_base(station)}pending"

    def rate(self, station: str) -> str:
        """Rate control: `_l:<module>` last release ms, and the deferred runs (store.pending)."""
        return f"{self.station_base(station)}rate"

    # ---- global windows ---------------------------------------------------------------
    def global_window(self, alias: str) -> str:
        return f"{self.prefix}:g:{{{alias}}}"

    def global_meta(self, alias: str) -> str:
        return f"{self.global_window(alias)}:meta"

    def global_ts(self, alias: str) -> str:
        return f"{self.global_window(alias)}:ts"

    def window_keys(self, kind: str, alias: str, station: str | None) -> tuple[str, ...]:
        """Every key apply.lua touches for `alias` in one unit (a station, or None: the global
        alias), in the order the script takes them from KEYS: the window, then the hourly,
        devices and global windows' `:ts` index, or an order alias's state and closers. The
        script builds no key name itself (Redis Cluster: every key of a call is declared)."""
        if kind == "global":
            return self.global_window(alias), self.global_ts(alias)
        s = str(station)
        if kind == "hourly":
            return self.hourly(s, alias), self.hourly_ts(s, alias)
        if kind == "devices":
            return self.devices(s, alias), self.devices_ts(s, alias)
        if kind == "orders":
            return self.orders_closed(s, alias), self.orders_state(s, alias), self.orders_closers(s, alias)
        if kind == "output":
            return (self.output(s, alias),)
        return (self.latest(s, alias),)  # latest, append

    # ---- registries, indexes, dead letters, counters -----------------------------------
    @property
    def stations(self) -> str:
        """The station registry when it is one key (buckets == 1); else `stations_of`/`stations_all`."""
        return self._single(f"{self.prefix}:stations")

    def orders_due(self, alias: str) -> str:
        """Stations with an open order second, scored by its close deadline (ms); one key
        (buckets == 1), else `orders_due_of`/`orders_due_all`."""
        return self._single(f"{self.prefix}:due:{alias}")

    def _single(self, name: str) -> str:
        if self.buckets != 1:
            raise ValueError(f"{name} is split into {self.buckets} buckets: name the bucket")
        return name

    @property
    def deferred_index(self) -> str:
        """Stations with deferred runs (rate control), scored by the earliest not-before ms; one
        key (buckets == 1), else `deferred_of`/`deferred_all`."""
        return self._single(f"{self.prefix}:deferred")

    @property
    def dlq(self) -> str:
        """The dead-letter stream of one bucket (its seen-index and counter hash share its
        slot, {dlq}); with several buckets only read, see `dlq_bucket_keys`."""
        return f"{self.prefix}:{{dlq}}"

    @property
    def dlq_seen(self) -> str:
        return f"{self.prefix}:{{dlq}}:seen"

    def dlq_renamed(self) -> list[tuple[str, str]]:
        """(old name, current name) of the dead-letter keys named before the {dlq} hash tag:
        an upgraded deployment renames them (docs/operations.md "Upgrading")."""
        p = self.prefix
        return [(f"{p}:dlq", self.dlq), (f"{p}:dlq:seen", self.dlq_seen), (f"{p}:counters:dlq", self.counters("dlq"))]

    def counters(self, group: str) -> str:
        """The counter hash this process writes for `group`. The dead-letter group carries the
        {dlq} tag, so the script that adds dead letters counts them in its slot; with several
        buckets every other group is split, each process writing the bucket it drew at start
        (so no hash takes every job's or poll's write) and readers summing them all."""
        if group == "dlq":
            return f"{self.prefix}:counters:{{dlq}}"
        if self.buckets == 1 or group.startswith("dlq"):
            return f"{self.prefix}:counters:{group}"
        return self._bucketed(f"{self.prefix}:counters:{group}", PROCESS_DRAW % self.buckets)

    def counter_group(self, key: str) -> str:
        """The group of counter hash `key` (the inverse of `counters`, any bucket)."""
        g = key[len(self.prefix) + len(":counters:"):].replace("{dlq}", "dlq")
        return g.rsplit(":{b", 1)[0] if g.endswith("}") else g

    def topic_counters(self, topic: str) -> str:
        return self.counters(f"topic:{topic}")

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    @property
    def batches_due(self) -> str:
        """Batch ids by deadline, one key (buckets == 1); else `batches_due_of`/`batches_due_all`."""
        return self._single(f"{self.prefix}:batches:due")

    def replica_sync(self, n: int) -> str:
        """The n-th candidate marker key of the ingester's wait for replicas (Redis Cluster:
        store.connection.wait_replicas uses the first one each master serves)."""
        return f"{self.prefix}:sync:{{s{n}}}"

    def heartbeat_tick(self, module: str, tick: int) -> str:
        """Set once per (module, tick) by the process that schedules that heartbeat tick."""
        return f"{self.prefix}:heartbeat:{module}:{tick}"

    # ---- documentation ----------------------------------------------------------------
    def describe_keys(self) -> list[tuple[str, str, str, str]]:
        """(pattern, type, meaning, redis-cli example) for `stationflow inspect --keys`."""
        p = self.prefix
        s = "{S}"
        return [
            (f"{p}:{s}:meta", "hash",
             "per station: hwm:<topic>:<partition> applied-offset high-water marks, ts:<alias> newest "
             "record ms, hn:/hc:<alias> newest stored hour and window cutoff, x:<alias> last TTL refresh "
             "of the alias's keys, xm of the meta hash itself, about: these meanings (a text long enough "
             "that Redis keeps the hash as a hash table); sm:<topic>:<partition> how far triggers were "
             "scheduled (replay marks, store/marks.py)",
             f"HGETALL '{p}:{{1053405539402387456}}:meta'"),
            (f"{p}:{s}:w:<alias>", "string (latest) / list (append)",
             "latest: one msgpack item {ts, src, payload}; append: items oldest first, capped",
             f"GET '{p}:{{1053405539402387456}}:w:station_param'"),
            (f"{p}:{s}:h:<alias>", "hash", "hourly: 'YYYY-MM-DD HH:00:00' -> msgpack item, newest window_size hours",
             f"HKEYS '{p}:{{1053405539402387456}}:h:station_realtime_data'"),
            (f"{p}:{s}:h:<alias>:ts", "hash", "hourly: hour -> record ms of the stored item (newest wins)",
             f"HGETALL '{p}:{{1053405539402387456}}:h:station_realtime_data:ts'"),
            (f"{p}:{s}:d:<alias>", "hash", "devices: device key -> msgpack item",
             f"HKEYS '{p}:{{1053405539402387456}}:d:device_host_dcdc'"),
            (f"{p}:{s}:d:<alias>:ts", "zset", "devices: device key scored by record ms (cap and TTL eviction)",
             f"ZRANGE '{p}:{{1053405539402387456}}:d:device_host_dcdc:ts' 0 -1 WITHSCORES"),
            (f"{p}:{s}:o:<alias>", "zset",
             "orders: closed seconds scored by sequence number; member = 'seq|second|late|src|ts|cause|' "
             "+ msgpack items",
             f"ZRANGE '{p}:{{1053405539402387456}}:o:car_order' -3 -1 WITHSCORES"),
            (f"{p}:{s}:o:<alias>:cb", "zset", "orders: closing message topic:partition:offset scored by the "
             "first sequence number it closed", f"ZRANGE '{p}:{{1053405539402387456}}:o:car_order:cb' -5 -1 WITHSCORES"),
            (f"{p}:{s}:o:<alias>:st", "hash",
             "orders: open second, deadline, open_items (msgpack items), open_src/open_ts (last order of "
             "it), last_closed, seq, cur:<module> delivery cursors",
             f"HGETALL '{p}:{{1053405539402387456}}:o:car_order:st'"),
            (f"{p}:{s}:out:<module>", "list", "module outputs (local or external), newest first, msgpack items",
             f"LINDEX '{p}:{{1053405539402387456}}:out:load_prediction' 0"),
            (f"{p}:{s}:pending", "hash", "pending runs of the station (coalescing): module -> batch id "
             "(\"?<batch id>\" while its batch is being created), _d:<module> that batch's deadline, "
             "_job the job that takes them",
             f"HGETALL '{p}:{{1053405539402387456}}:pending'"),
            (f"{p}:{s}:rate", "hash", "rate control: _l:<module> last release ms; deferred runs: <module> "
             "batch id, _d:<module> batch deadline, _n:<module> not-before ms",
             f"HGETALL '{p}:{{1053405539402387456}}:rate'"),
            (f"{p}:g:{{<alias>}}", "hash", "global window: key (calendar date) -> msgpack item, newest window_size",
             f"HKEYS '{p}:g:{{environment_calendar}}'"),
            (f"{p}:g:{{<alias>}}:ts", "hash", "global window: key -> record ms (newest wins)",
             f"HGETALL '{p}:g:{{environment_calendar}}:ts'"),
            (f"{p}:g:{{<alias>}}:meta", "hash",
             "global window: hwm:<topic>:<partition>, ts:<alias>, sm:<topic>:<partition> (replay marks)",
             f"HGETALL '{p}:g:{{environment_calendar}}:meta'"),
            (self._pattern("stations"), "zset", "station registry: station id scored by last-seen ingest ms"
             + self._split_note(), f"ZREVRANGE '{self.stations_all()[0]}' 0 9 WITHSCORES"),
            (self._pattern("due:<alias>"), "zset", "stations with an open order second, scored by close deadline ms"
             + self._split_note(), f"ZRANGE '{self.orders_due_all('car_order')[0]}' 0 -1 WITHSCORES"),
            (self._pattern("deferred"), "zset", "stations with deferred runs (rate control), scored by the "
             "earliest not-before ms" + self._split_note(),
             f"ZRANGE '{self.deferred_all()[0]}' 0 -1 WITHSCORES"),
            (self._dlq_pattern(""), "stream", "dead letters (capped): topic, partition, offset, ts, reason, detail, "
             "element_index, raw, raw_len, dead_at" + self._dlq_note(),
             f"XREVRANGE '{self.dlq_bucket_keys(0)[0]}' + - COUNT 5"),
            (self._dlq_pattern(":seen"), "zset", "dead-letter idents topic:partition:offset:element scored by the "
             "ms of their stream id", f"ZCARD '{self.dlq_bucket_keys(0)[1]}'"),
            (f"{p}:counters:<group>" + ("" if self.buckets == 1 else ":{<bucket>}"), "hash",
             "plain-text counters (topic:<topic>, ingest, runs, ...; the dlq group is "
             + ("counters:{dlq})" if self.buckets == 1 else "counters:dlq:{<bucket>}, one per dead-letter bucket)")
             + ("" if self.buckets == 1 else "; one bucket per writing process, status sums them"),
             f"HGETALL {p}:counters:ingest"),
            (self._pattern("running"), "zset", "station jobs that took runs, '<station> <job id>' scored by start "
             "ms (the sweeper reclaims lost ones)" + self._split_note(),
             f"ZRANGE '{self.running_all()[-1]}' 0 9 WITHSCORES"),
            (f"{p}:batch:<id>", "hash", "batch tracker state (workers)", f"HGETALL '{p}:batch:<id>'"),
            (self._pattern("batches:due"), "zset", "batch id scored by deadline (workers)" + self._split_note(),
             f"ZRANGE '{self.batches_due_all()[0]}' 0 -1 WITHSCORES"),
            (f"{p}:sync:{{s<n>}}", "string", "Redis Cluster only: the marker each master's replicas must "
             "acknowledge before an ingester commits (expires after a minute)", f"GET '{p}:sync:{{s0}}'"),
            (f"{p}:heartbeat:<module>:<tick>", "string", "heartbeat tick claimed by one sweeper (expires)",
             f"KEYS '{p}:heartbeat:*'"),
        ]


    def _pattern(self, name: str) -> str:
        return f"{self.prefix}:{name}" + ("" if self.buckets == 1 else ":{<bucket>}")

    def _dlq_pattern(self, suffix: str) -> str:
        return f"{self.prefix}:{{dlq}}{suffix}" if self.buckets == 1 else f"{self.prefix}:dlq:{{<bucket>}}{suffix}"

    def _dlq_note(self) -> str:
        return "" if self.buckets == 1 else (f"; split into {self.buckets} buckets by origin, readers merge them "
                                             "(entry ids end in .<bucket>)")

    def _split_note(self) -> str:
        return "" if self.buckets == 1 else f"; split into {self.buckets} bucket keys (readers merge them)"


def describe_keys(prefix: str = "sf", buckets: int = 1) -> list[tuple[str, str, str, str]]:
    """`Keys.describe_keys` of a deployment whose global indexes have `buckets` keys each."""
    return Keys(prefix, buckets).describe_keys()
