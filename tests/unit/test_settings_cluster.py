"""Configuration of a Redis Cluster deployment: redis+cluster:// state, queue.redis_url."""

from __future__ import annotations

import pytest

from stationflow.settings import ConfigError, Settings
from store.connection import is_cluster_url

CLUSTER = "redis+cluster://:pw@n1:7000,n2:7000/"


def test_a_cluster_needs_a_plain_queue_redis():
    with pytest.raises(ConfigError, match=r"queue\.redis_url: required because redis\.url .* is a Redis Cluster"):
        Settings.from_dict({"redis": {"url": CLUSTER}})
    with pytest.raises(ConfigError, match=r"queue\.redis_url: .* is a Redis Cluster; RQ needs a plain Redis"):
        Settings.from_dict({"redis": {"url": CLUSTER}, "queue": {"redis_url": "redis+cluster://q:7000/"}})
    with pytest.raises(ConfigError, match=r"queue\.redis_url: 'http://q' must start with one of"):
        Settings.from_dict({"redis": {"url": CLUSTER}, "queue": {"redis_url": "http://q"}})
    s = Settings.from_dict({"redis": {"url": CLUSTER}, "queue": {"redis_url": "redis://:secret@q:6379/0"}})
    assert s.redis.is_cluster and s.queue.redis_url == "redis://:secret@q:6379/0"
    assert "secret" not in s.to_toml() and "pw" not in s.to_toml()
    assert Settings.from_dict(s.to_dict(masked=False)) == s


def test_plain_redis_may_keep_the_queues_or_give_them_their_own():
    assert Settings.from_dict({}).queue.redis_url is None
    s = Settings.from_dict({"queue": {"redis_url": "redis+sentinel://s1:26379/q/0"}})
    assert not s.redis.is_cluster and s.queue.redis_url.startswith("redis+sentinel://")


def test_environment_and_tls_scheme():
    s = Settings.load(env={"STATIONFLOW_REDIS_URL": "rediss+cluster://n1:7000/",
                           "STATIONFLOW_QUEUE_REDIS_URL": "rediss://q:6380/0"})
    assert s.redis.is_cluster and s.queue.redis_url == "rediss://q:6380/0"
    assert "STATIONFLOW_QUEUE_REDIS_URL" in s.env_applied
    assert is_cluster_url("rediss+cluster://n1:7000/") and not is_cluster_url("rediss://q:6380/0")


def test_sentinels_do_not_mix_with_a_cluster():
    with pytest.raises(ConfigError, match="redis.sentinels: not used with a redis\\+cluster"):
        Settings.from_dict({"redis": {"url": CLUSTER, "sentinels": ["s:26379"], "sentinel_service": "m"},
                            "queue": {"redis_url": "redis://q:6379/0"}})


def test_index_buckets_reach_the_client(monkeypatch):
    import fakeredis

    import store.connection
    from store.keys import keys_for

    monkeypatch.setattr(store.connection, "connect", lambda url, **kw: fakeredis.FakeRedis())
    s = Settings.from_dict({"redis": {"index_buckets": 12}})
    assert keys_for(s.redis.connect()).buckets == 12
    assert keys_for(Settings.from_dict({}).redis.connect()).buckets == 1  # 0: the default of the client kind
    with pytest.raises(ConfigError):
        Settings.from_dict({"redis": {"index_buckets": -1}})
