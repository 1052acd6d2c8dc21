"""A private Redis Cluster on loopback ports, for tests, the demo and the bench.

`start_cluster(masters, replicas)` starts `masters * (1 + replicas)` redis-servers with
`cluster-enabled yes`, joins them with `redis-cli --cluster create` and waits until every
node reports `cluster_state:ok`. Each node is a `stationflow.local.RedisServer` (own port,
own scratch directory, stopped at exit), so a fault test can SIGKILL one master and watch
its replica take over (`cluster-node-timeout` is short: about a second).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Any

import redis

from stationflow.local import LocalServerError, RedisServer, free_port, wait_for

BUS_OFFSET = 10000  # Redis Cluster's node-to-node bus listens on port + 10000
NODE_TIMEOUT_MS = 1000


def _bus_free(port: int) -> bool:
    if port + BUS_OFFSET > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    for _ in range(200):
        p = free_port()
        if _bus_free(p):
            return p
    raise LocalServerError("no free port whose cluster bus port (+10000) is also free")


class RedisCluster:
    """Handle on the nodes of a local cluster; `url` is the redis+cluster:// URL for settings."""

    def __init__(self, nodes: list[RedisServer], masters: int) -> None:
        self.nodes = nodes
        self.n_masters = masters

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes) + "/"

    def client(self, **kwargs: Any) -> Any:
        """A redis.cluster.RedisCluster on these nodes (bytes replies unless asked)."""
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as Client

        return Client(startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes if n.running], **kwargs)

    def roles(self) -> dict[int, str]:
        """port -> 'master' or 'slave', as the live nodes see themselves."""
        out = {}
        for n in self.nodes:
            if not n.running:
                continue
            c = n.client(socket_timeout=2)
            try:
                out[n.port] = c.execute_command("ROLE")[0].decode()
            finally:
                c.close()
        return out

    def masters(self) -> list[RedisServer]:
        roles = self.roles()
        return [n for n in self.nodes if roles.get(n.port) == "master"]

    def healthy(self) -> bool:
        """Every live node sees cluster_state:ok and `n_masters` masters cover the slots."""
        for n in self.nodes:
            if not n.running:
                continue
            c = n.client(socket_timeout=2)
            try:
                if c.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    return False
                role = c.execute_command("ROLE")
                if role[0] == b"slave" and role[3] != b"connected":  # still in its first sync
                    return False
            except redis.RedisError:  # a node still starting or failing over: not yet healthy
                return False
            finally:
                c.close()
        return len(self.masters()) == self.n_masters

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_for(self.healthy, timeout, "Redis Cluster state ok", interval=0.1)

    def flushall(self) -> None:
        """Empty every master (replicas follow); scripts stay loaded."""
        for n in self.masters():
            c = n.client(socket_timeout=5)
            try:
                c.flushall()
            finally:
                c.close()

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def start_cluster(masters: int = 3, replicas: int = 1, timeout: float = 60.0) -> RedisCluster:
    """Start and join a local cluster; LocalServerError (with redis-cli's output) if it fails."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise LocalServerError("redis-cli not found on PATH (it comes with redis-server / redis-tools)")
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters * (1 + replicas)):
            node = RedisServer(_cluster_port(), extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
                "--appendonly", "no"))
            nodes.append(node)
            node.start()
        argv = [cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in nodes),
                "--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise LocalServerError(f"redis-cli --cluster create failed ({done.returncode}): "
                                   f"{(done.stdout + done.stderr)[-2000:]}")
        cluster = RedisCluster(nodes, masters)
        deadline = time.monotonic() + timeout
        cluster.wait_healthy(max(1.0, deadline - time.monotonic()))
        return cluster
    except BaseException:
        for n in nodes:
            n.close()
        raise
