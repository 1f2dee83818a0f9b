"""One member of the HA topology's three-node etcd cluster (Debian ``etcd-server``, etcd3 API).

Patroni keeps its leader lock and the synchronous-standby record here. The
member's config is rendered from ``deploy/conf/etcd.yml``; its data directory
holds the cluster membership after the first start.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

from deploy.ops.stack import conf
from deploy.ops.stack.server import Server
from deploy.ops.stack.settings import HASettings, StackSettings

ETCD = "/usr/bin/etcd"
CLUSTER_TOKEN = "ticketflow-ha"


def _post(url: str, body: dict, timeout: float = 2.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _get(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class EtcdMember(Server):
    packages = {"etcd-server": [ETCD]}

    def __init__(self, settings: StackSettings, ha: HASettings, index: int) -> None:
        self.name = f"etcd{index}"
        super().__init__(settings)
        self.ha = ha
        self.index = index
        self.client_port = ha.etcd_client_port + index - 1
        self.peer_port = ha.etcd_peer_port + index - 1
        self.config = self.dir / "etcd.yml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def initialized(self) -> bool:
        return self.config.exists()

    def initialize(self) -> None:
        peers = ",".join(f"etcd{i}=http://127.0.0.1:{self.ha.etcd_peer_port + i - 1}"
                         for i in range(1, self.ha.nodes + 1))
        conf.write(self.config, conf.render(
            "etcd.yml", NAME=self.name, DATA_DIR=self.dir / "data", CLIENT_PORT=self.client_port,
            PEER_PORT=self.peer_port, INITIAL_CLUSTER=peers, HOST="127.0.0.1", LISTEN_HOST="127.0.0.1", CLUSTER_TOKEN=CLUSTER_TOKEN))

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        return [ETCD, "--config-file", str(self.config)], None

    async def probe(self) -> None:
        # /health is true only while the member sees a quorum with a leader.
        health = await asyncio.to_thread(_get, f"{self.url}/health")
        if health.get("health") != "true":
            raise RuntimeError(f"{self.name} unhealthy: {health}")

    def env(self) -> dict[str, str]:
        return {}

    def report(self) -> dict:
        """This member's view: healthy, its id, the leader's id, raft index; ``error`` if unreachable."""
        try:
            status = _post(f"{self.url}/v3/maintenance/status", {})
            health = _get(f"{self.url}/health")
        except Exception as exc:  # noqa: BLE001 - an unreachable member is a finding, not a failure
            return {"name": self.name, "client_url": self.url, "healthy": False, "error": str(exc) or type(exc).__name__}
        member_id = status.get("header", {}).get("member_id")
        return {"name": self.name, "client_url": self.url, "healthy": health.get("health") == "true",
                "leader": member_id is not None and member_id == status.get("leader"),
                "raft_index": int(status.get("raftIndex", 0)), "db_size": int(status.get("dbSize", 0))}


def cluster_members(members: list[EtcdMember]) -> list[dict]:
    """Each member's report, plus the membership as the first reachable member lists it."""
    listed: set[str] = set()
    for member in members:
        try:
            listed = {m.get("name", "") for m in _post(f"{member.url}/v3/cluster/member/list", {}).get("members", [])}
            break
        except Exception:  # noqa: BLE001 - try the next member
            continue
    return [{**member.report(), "in_member_list": member.name in listed} for member in members]
