"""The ingester's wait for replicas before a commit (store.connection.wait_replicas) on the
local Redis Cluster: it returns once every master's replica acknowledged, and it waits on
all masters at once - with the replicas frozen (SIGSTOP), every master holds a blocked WAIT
at the same moment, and the failure names every master that went unconfirmed."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from store.connection import StoreUnavailable, wait_replicas


def _blocked_waits(masters) -> int:
    """How many masters have a client blocked in WAIT right now."""
    n = 0
    for m in masters:
        c = m.client(socket_timeout=2)
        try:
            n += any(x.get("cmd") == "wait" for x in c.client_list())
        finally:
            c.close()
    return n


def test_returns_the_masters_once_the_replicas_acknowledged(cluster_client):
    cluster_client.set("sf:{x}", "1")
    assert wait_replicas(cluster_client, "sf", timeout_ms=5000) == 3


def test_every_master_is_waited_on_at_once(cluster_client, redis_cluster):
    masters = redis_cluster.masters()
    replicas = [n for n in redis_cluster.nodes if n.running and n not in masters]
    assert len(masters) == 3 and len(replicas) == 3
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(wait_replicas(cluster_client, "sf", timeout_ms=2500))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    most = 0
    for n in replicas:
        os.kill(n.pid, signal.SIGSTOP)  # no acknowledgement can come: every WAIT runs to its timeout
    try:
        waiter = threading.Thread(target=call)
        waiter.start()
        while waiter.is_alive() and most < 3:
            most = max(most, _blocked_waits(masters))
            time.sleep(0.02)
        waiter.join(30)
    finally:
        for n in replicas:
            os.kill(n.pid, signal.SIGCONT)
    assert most == 3  # shard after shard would never show more than one
    assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    assert all(f"{m.host}:{m.port}" in str(outcome[0]) for m in masters)
    redis_cluster.wait_healthy()
    with pytest.raises(StoreUnavailable):  # a master that cannot be reached is no success either
        wait_replicas(_closed_cluster(redis_cluster), "sf", timeout_ms=100)


def _closed_cluster(redis_cluster):
    """A cluster client whose connections to the masters point at a closed port."""
    from stationflow.local import free_port

    c = redis_cluster.client()
    port = free_port()
    for node in c.get_primaries():
        node.redis_connection.connection_pool.connection_kwargs["port"] = port
    return c
