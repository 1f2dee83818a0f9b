"""RabbitMQ x3 for the HA topology: three plain broker processes on loopback, clustered, one private epmd.

Each node is the local topology's :class:`RabbitMQ` with its own directory, ports and
node name (``ticketflow-N@localhost``); all three share one epmd and one Erlang
cookie. The cluster forms by classic-config peer discovery: on a first boot node 1
starts alone, then nodes 2 and 3 (in parallel) find node 1 and join it. A node
with data rejoins its cluster by itself, so a restart starts all three at once
(each waits for the others' tables). ``pause_minority``: a node cut off from the
other two stops serving instead of diverging.

Queues that must survive a node (the portal's, the bridge's position records)
are quorum queues (``deploy/runtime/amqp.py``): declared while the three nodes
run, each has three members and a leader elected by Raft.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.ops.stack import process
from deploy.ops.stack.rabbitmq import RABBIT_BIN, RabbitMQ
from deploy.ops.stack.server import StackError
from deploy.ops.stack.settings import HASettings, StackSettings

CTL_TIMEOUT = 30.0


def node_name(index: int) -> str:
    return f"ticketflow-{index}@localhost"


class RabbitNode(RabbitMQ):
    """Node ``index`` (1-based) of the cluster."""

    def __init__(self, settings: StackSettings, ha: HASettings, index: int) -> None:
        self.name = f"rabbit{index}"
        self.index = index
        self.ha = ha
        super().__init__(dataclasses.replace(
            settings, amqp_port=ha.rabbit_amqp_port + index - 1, amqp_dist_port=ha.rabbit_dist_port + index - 1,
            epmd_port=ha.rabbit_epmd_port, ctl_port_min=ha.rabbit_ctl_port_min))
        self.cluster_dir = settings.root / "rabbitmq"

    @property
    def node(self) -> str:
        return node_name(self.index)

    @property
    def epmd_pidfile(self) -> Path:  # one epmd for the three nodes
        return self.cluster_dir / "epmd.pid"

    def initialize(self) -> None:
        super().initialize()
        # Node 1 forms the cluster; the others join it (listing only node 1 keeps two joining
        # nodes from trying each other while both are still booting).
        peers = [] if self.index == 1 else [node_name(1)]
        with open(self.dir / "rabbitmq.conf", "a") as conf:
            conf.write("cluster_partition_handling = pause_minority\n")
            if peers:
                conf.write("cluster_formation.peer_discovery_backend = classic_config\n")
                conf.writelines(f"cluster_formation.classic_config.nodes.{i} = {p}\n" for i, p in enumerate(peers, 1))
        cookie = self.dir / "home" / ".erlang.cookie"
        cookie.write_text(shared_cookie(self.cluster_dir))
        cookie.chmod(0o400)

    def has_data(self) -> bool:
        return any((self.dir / "mnesia").glob("*"))

    def base_env(self) -> dict[str, str]:
        env = super().base_env()
        env["RABBITMQ_NODENAME"] = self.node
        return env

    def stop(self) -> bool:
        return process.stop(self.pidfile)  # epmd is the cluster's, stopped after the last node

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """``rabbitmqctl -n <this node> ARGS`` (raises StackError with its output on failure)."""
        result = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.base_env(),
                                capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise StackError(f"rabbitmqctl {' '.join(args)} on {self.node} failed: {result.stdout}{result.stderr}")
        return result.stdout


def shared_cookie(directory: Path) -> str:
    """The cluster's Erlang cookie, made once (every node and rabbitmqctl must present the same one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "erlang.cookie"
    if not path.exists():
        path.write_text(secrets.token_hex(20).upper())
        path.chmod(0o600)
    return path.read_text().strip()


class RabbitCluster:
    def __init__(self, settings: StackSettings, ha: HASettings) -> None:
        self.settings = settings
        self.nodes = [RabbitNode(settings, ha, i) for i in range(1, ha.nodes + 1)]

    def up(self) -> dict[str, str]:
        first, rest = self.nodes[0], self.nodes[1:]
        first._start_epmd()
        states: dict[str, str] = {}
        if not all(n.has_data() for n in self.nodes):
            states[first.name] = first.up()  # a first boot: node 1 forms the cluster before the others join
            nodes = rest
        else:
            nodes = self.nodes
        states.update(_each(nodes, "up"))
        states["rabbitmq cluster"] = self.wait_formed()
        return states

    def wait_formed(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        running: list[str] = []
        while time.monotonic() < deadline:
            running = self.running_nodes()
            if len(running) == len(self.nodes):
                return f"{len(running)} nodes running"
            time.sleep(0.3)
        raise StackError(f"the RabbitMQ cluster did not form within {timeout:.0f}s (running: {running})")

    def cluster_status(self) -> dict:
        """``cluster_status`` as seen by the first node that answers ({} if none does)."""
        for node in self.nodes:
            if not node.running():
                continue
            try:
                return json.loads(node.ctl("cluster_status", "--formatter", "json"))
            except (StackError, subprocess.TimeoutExpired, ValueError):
                continue
        return {}

    def running_nodes(self) -> list[str]:
        return sorted(self.cluster_status().get("running_nodes", []))

    def quorum_queues(self, vhost: str = "/") -> list[dict]:
        """Each quorum queue of ``vhost``: name, leader, members, online members."""
        for node in self.nodes:
            if not node.running():
                continue
            try:
                rows = json.loads(node.ctl("list_queues", "-p", vhost, "--formatter", "json",
                                           "name", "type", "leader", "members", "online"))
            except (StackError, subprocess.TimeoutExpired, ValueError):
                continue
            return [{"name": r["name"], "leader": r.get("leader"), "members": sorted(r.get("members") or []),
                     "online": sorted(r.get("online") or [])} for r in rows if r.get("type") == "quorum"]
        return []

    def leader_of(self, queue: str, vhost: str = "/") -> RabbitNode:
        for q in self.quorum_queues(vhost):
            if q["name"] == queue and q["leader"]:
                return next(n for n in self.nodes if n.node == q["leader"])
        raise StackError(f"no quorum queue {queue!r} with a leader")

    def down(self) -> dict[str, bool]:
        states = _each(self.nodes, "stop")
        process.stop(self.nodes[0].epmd_pidfile)
        return states

    def urls(self, vhost: str = "/") -> list[str]:
        return [n.url(vhost) for n in self.nodes]

    def env(self) -> dict[str, str]:
        # TICKETFLOW_AMQP_URL (one node) keeps single-URL tools working; the daemons use the list.
        return {"TICKETFLOW_AMQP_URL": self.nodes[0].url(), "TICKETFLOW_AMQP_URLS": ",".join(self.urls())}

    def report(self) -> dict:
        status = self.cluster_status()
        running = set(status.get("running_nodes", []))
        return {
            "nodes": [{"name": n.name, "node": n.node, "port": n.settings.amqp_port,
                       "running": n.node in running, "pid": n.pid()} for n in self.nodes],
            "quorum_queues": self.quorum_queues() if running else [],
        }


def _each(nodes: list[RabbitNode], action: str) -> dict:
    with ThreadPoolExecutor(len(nodes)) as pool:
        futures = {n.name: pool.submit(getattr(n, action)) for n in nodes}
        return {name: future.result() for name, future in futures.items()}
