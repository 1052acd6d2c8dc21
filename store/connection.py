"""One way to get a Redis client from a URL, with retries, TLS, ACL and Sentinel.

Callers catch `StoreUnavailable` (Redis down or unreachable after the retries: not bad input,
retry later, commit nothing) and `StoreAuthError` (configuration: stop and say so).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel", "sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SLOTS = 16384  # hash slots of a Redis Cluster


def is_cluster_url(url: str) -> bool:
    """True for a redis+cluster:// or rediss+cluster:// URL (state on Redis Cluster)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_cluster(r: Any) -> bool:
    """True when `r` is a Redis Cluster client (one slot per script call, no plain pipeline)."""
    return isinstance(r, RedisCluster)


class StoreUnavailable(Exception):
    """Redis could not be reached (connection refused, timeout, failover in progress)."""


class StoreAuthError(StoreUnavailable):
    """Redis refused the credentials; retrying will not help."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class _OutageRetry(Retry):
    """redis-py's Retry, except that refused credentials fail at once: AuthenticationError is
    a ConnectionError subclass, and retrying a wrong password only delays the real message."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(e: Exception) -> bool:
            if isinstance(e, redis.AuthenticationError | redis.exceptions.AuthorizationError):
                return False
            return is_retryable(e) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def _retry(retries: int) -> Retry:
    return _OutageRetry(ExponentialBackoff(cap=2.0, base=0.05), retries,
                        supported_errors=(redis.ConnectionError, redis.TimeoutError, TimeoutError))


def connect(
    url: str,
    *,
    password: str | None = None,
    username: str | None = None,
    socket_timeout: float = 5,
    connect_timeout: float = 5,
    health_check_interval: int = 30,
    sentinels: Sequence[tuple[str, int]] | None = None,
    sentinel_service: str | None = None,
    decode_responses: bool = False,
    retries: int = 5,
    check: bool = True,
    **extra: Any,
) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://, redis+sentinel://h1:p1,h2:p2/service/db,
    redis+cluster://h1:p1,h2:p2/ - a `RedisCluster`; rediss+cluster:// for TLS).

    `password`/`username` override the URL's credentials (so secrets can come from the
    environment). With `check` a PING is sent now so a wrong password or host fails at
    start-up with a clear message instead of at the first write.
    """
    opts: dict[str, Any] = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=health_check_interval,
        decode_responses=decode_responses,
        retry=_retry(retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **extra,
    )
    if password is not None:
        opts["password"] = password
    if username is not None:
        opts["username"] = username
    scheme = urlsplit(url).scheme
    client: Any  # a RedisCluster answers the same commands (keys of one call in one slot)
    if sentinels or scheme in SENTINEL_SCHEMES:
        client = _sentinel_client(url, sentinels, sentinel_service, opts)
    elif scheme in CLUSTER_SCHEMES:
        client = _cluster_client(url, opts, retries)
    elif scheme in ("redis", "rediss", "unix"):
        client = redis.Redis.from_url(url, **opts)
    else:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {redact(url)} "
                         "(use redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://)")
    if check:
        ping(client, url)
    return client


def ping(client: Any, url: str = "") -> None:
    """PING, turning redis-py errors into the two exceptions callers handle."""
    where = redact(url) if url else repr(client)
    try:
        client.ping()
    except redis.AuthenticationError as e:
        raise StoreAuthError(f"Redis authentication failed for {where}: {e}") from e
    except redis.ResponseError as e:
        msg = str(e)
        if "NOAUTH" in msg or "WRONGPASS" in msg or "invalid password" in msg or "NOPERM" in msg:
            raise StoreAuthError(f"Redis authentication failed for {where}: {msg}") from e
        raise
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise StoreUnavailable(f"Redis unavailable at {where}: {e}") from e


def _sentinel_client(url: str, sentinels: Sequence[tuple[str, int]] | None, service: str | None,
                     opts: dict[str, Any]) -> redis.Redis:
    """`redis+sentinel://[user:pass@]h1:p1,h2:p2/service/db`; `rediss+sentinel` uses TLS to the master."""
    parts = urlsplit(url) if "://" in url else None
    db = 0
    if parts is not None and parts.scheme in SENTINEL_SCHEMES:
        sentinels, service, db = _from_sentinel_url(parts, sentinels, service, opts)
    if not sentinels or not service:
        raise ValueError(f"Sentinel needs hosts and a service name: {redact(url)}")
    retry = opts.pop("retry")
    decode = opts.get("decode_responses", False)
    sentinel_kwargs: dict[str, Any] = {k: opts[k] for k in ("socket_timeout", "socket_connect_timeout", "password",
                                            "username", "ssl") if k in opts}
    s = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs, **{**opts, "db": db})
    client = s.master_for(service, decode_responses=decode)
    client.retry = retry
    return client


def _from_sentinel_url(parts: SplitResult, sentinels: Sequence[tuple[str, int]] | None, service: str | None,
                       opts: dict[str, Any]) -> tuple[Sequence[tuple[str, int]] | None, str | None, int]:
    """(sentinels, service, db) from a sentinel URL, explicit arguments winning; credentials
    (unless given) and TLS go into `opts`."""
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2 and "password" not in opts:
        user, _, pw = netloc[0].partition(":")
        if user and "username" not in opts:
            opts["username"] = unquote(user)
        if pw:
            opts["password"] = unquote(pw)
    if not sentinels:
        sentinels = [_hostport(h) for h in netloc[-1].split(",") if h]
    path = [p for p in parts.path.split("/") if p]
    if path and not service:
        service = path[0]
    if parts.scheme.startswith("rediss"):
        opts["ssl"] = True
    return sentinels, service, int(path[1]) if len(path) > 1 else 0


def _cluster_client(url: str, opts: dict[str, Any], retries: int) -> RedisCluster:
    """`redis+cluster://[user:pass@]h1:p1,h2:p2/`: any reachable node serves as a start, the
    client learns the slot map from it and follows MOVED/ASK; a connection error or a
    failover in progress (CLUSTERDOWN) is retried with backoff, the map refreshed."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2:
        user, _, pw = netloc[0].partition(":")
        if user and "username" not in opts:
            opts["username"] = unquote(user)
        if pw and "password" not in opts:
            opts["password"] = unquote(pw)
    nodes = [ClusterNode(*_hostport(h, 6379)) for h in netloc[-1].split(",") if h]
    if not nodes:
        raise ValueError(f"Redis Cluster needs at least one host:port: {redact(url)}")
    if [p for p in parts.path.split("/") if p not in ("", "0")]:
        raise ValueError(f"Redis Cluster has only database 0: {redact(url)}")
    if parts.scheme.startswith("rediss"):
        opts["ssl"] = True
    opts.pop("retry", None)
    opts.pop("retry_on_error", None)
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries,
                  supported_errors=(redis.ConnectionError, redis.TimeoutError, TimeoutError,
                                    redis.exceptions.ClusterDownError, redis.exceptions.SlotNotCoveredError))
    return RedisCluster(startup_nodes=nodes, retry=retry, require_full_coverage=True, **opts)


def cluster_report(r: RedisCluster) -> tuple[dict[str, int], int]:
    """The cluster's masters (host:port -> slots it serves, sorted by name) and how many of
    the 16384 slots they cover, from CLUSTER SLOTS of one node (for `config check`)."""
    raw = r.execute_command("CLUSTER SLOTS", target_nodes=RedisCluster.RANDOM)
    if isinstance(raw, dict):  # redis-py parses CLUSTER SLOTS into {(first, last): {...}}
        spans = [(a, b, v["primary"]) for (a, b), v in raw.items()]
    else:
        spans = [(int(x[0]), int(x[1]), (x[2][0], x[2][1])) for x in raw]
    per: dict[str, int] = {}
    for first, last, (host, port) in spans:
        host = host.decode() if isinstance(host, bytes) else host
        name = f"{host}:{port}"
        per[name] = per.get(name, 0) + int(last) - int(first) + 1
    return dict(sorted(per.items())), sum(per.values())


def wait_replicas(r: Any, prefix: str = "sf", timeout_ms: int = 2000) -> int:
    """On Redis Cluster, block until every master's writes so far reached a replica, so a
    failover after this returns cannot lose them (replication is asynchronous: what a master
    acknowledged but had not yet sent dies with it). Per master one marker SET and a WAIT on
    the same connection: the marker follows every earlier write in the replication stream,
    so its acknowledgement covers them. The masters are waited on at once, one thread each
    (the wait costs the slowest master, not their sum). Returns how many masters were waited
    on (0 on one Redis: nothing to do). Raises StoreUnavailable when a master with replicas
    got no acknowledgement in time or cannot be reached (a failover in progress): do not commit."""
    if not isinstance(r, RedisCluster):
        return 0
    try:
        nodes = r.get_primaries()
        keys = [_sync_key(r, node.name, prefix) for node in nodes]
        with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="wait-replicas") as pool:
            waits = [pool.submit(_wait_one, r.get_redis_connection(node), key, timeout_ms)
                     for node, key in zip(nodes, keys, strict=True)]
            unconfirmed = [node.name for node, w in zip(nodes, waits, strict=True) if not w.result()]
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ResponseError,
            redis.exceptions.ClusterError) as e:
        r.nodes_manager.initialize()  # a master changed: learn the new map before the retry
        raise StoreUnavailable(f"Redis Cluster: waiting for replicas failed: {e}") from e
    if unconfirmed:
        raise StoreUnavailable(f"Redis Cluster master(s) {', '.join(unconfirmed)}: no replica acknowledged "
                               f"the writes within {timeout_ms} ms")
    return len(nodes)


def _wait_one(client: redis.Redis, key: str, timeout_ms: int) -> bool:
    """SET the marker and WAIT for one replica on one master's connection; False when the
    master has replicas and none acknowledged in time (True: acknowledged, or none to wait for)."""
    pipe = client.pipeline(transaction=False)
    pipe.set(key, "1", px=60_000)
    pipe.execute_command("WAIT", 1, int(timeout_ms))
    if int(pipe.execute()[1]) >= 1:
        return True
    return not client.execute_command("ROLE")[2]


def _sync_key(r: RedisCluster, node: str, prefix: str) -> str:
    """A key of `prefix` in a slot that `node` serves (the replica-wait marker)."""
    from store.keys import Keys

    keys = Keys(prefix)
    slots = r.nodes_manager.slots_cache
    for j in range(100_000):
        key = keys.replica_sync(j)
        owners = slots.get(key_slot(key.encode()))
        if owners and owners[0].name == node:
            return key
    raise StoreUnavailable(f"Redis Cluster master {node} serves no slot")


def _hostport(h: str, default_port: int = 26379) -> tuple[str, int]:
    host, _, port = h.rpartition(":")
    if not host:
        return h, default_port
    return host.strip("[]"), int(port)
