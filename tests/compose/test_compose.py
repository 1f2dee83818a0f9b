"""docker-compose.yml for real, with podman: the seed's checks and a drill against the containerised HA topology.

``make test-compose`` builds the images (deploy/docker/build.sh) and runs this module with ``-m compose``. The
module brings the compose file up under its own project name on host ports 19100-19199, waits until every
container is healthy, and takes everything down again (containers, network, volumes), also on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deploy.ops.drill.audit import audit, write_gaps
from deploy.ops.drill.load import Load

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("TICKETFLOW_COMPOSE_PROJECT", "tfcompose-test")
PORTS = {"reservation": 19183, "billing": 19184, "bridge": 19185, "portal": 19186, "stats": 19104}
UP_TIMEOUT = 600  # podman-compose up hangs instead of failing without a working runtime: bounded
HEALTHY_TIMEOUT = 420
SERVICES = ["etcd1", "etcd2", "etcd3", "pg1", "pg2", "pg3", "galera1", "galera2", "galera3", "rabbit1", "rabbit2",
            "rabbit3", "haproxy", "reservation-1", "reservation-2", "billing-1", "billing-2", "bridge", "portal"]


def compose_cmd() -> list[str]:
    found = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    return [found, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]


def podman(*args: str, timeout: float = 60, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def containers() -> dict[str, str]:
    """service -> container name, for this project's containers."""
    out = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json")
    return {c["Labels"]["com.docker.compose.service"]: c["Names"][0] for c in json.loads(out or "[]")}


def state(name: str) -> dict:
    return json.loads(podman("inspect", name))[0]["State"]


def healthy(name: str) -> bool:
    """Runs the image's HEALTHCHECK now (podman schedules it with systemd timers, which this machine lacks)."""
    return subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, timeout=30).returncode == 0


def wait_for(what: str, condition, timeout: float, pause: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def get_json(url: str, timeout: float = 3.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def patroni_cluster(names: dict[str, str]) -> dict:
    for service in ("pg1", "pg2", "pg3"):
        out = podman("exec", names[service], "curl", "-fsS", "--max-time", "2", "http://127.0.0.1:8008/cluster",
                     check=False)
        if out:
            return json.loads(out)
    return {"members": []}


def leader(names: dict[str, str]) -> str | None:
    members = patroni_cluster(names)["members"]
    return next((m["name"] for m in members if m["role"] == "leader" and m["state"] == "running"), None)


def down() -> None:
    subprocess.run([*compose_cmd(), "down", "-v", "-t", "5"], capture_output=True, timeout=300)
    leftovers = containers()
    if leftovers:
        podman("rm", "-f", "-v", *leftovers.values(), check=False, timeout=120)
    for volume in podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}",
                         check=False).split():
        podman("volume", "rm", "-f", volume, check=False)


def dump_logs(names: dict[str, str]) -> None:
    for service, name in sorted(names.items()):
        log = subprocess.run(["podman", "logs", "--tail", "15", name], capture_output=True, text=True, timeout=30)
        print(f"--- {service} ({state(name).get('Status')})\n{log.stdout[-3000:]}{log.stderr[-3000:]}")


@pytest.fixture(scope="module")
def stack():
    env = dict(os.environ, TICKETFLOW_DB_PASSWORD=secrets.token_hex(12),
               TICKETFLOW_ERLANG_COOKIE=secrets.token_hex(16).upper(), TICKETFLOW_COMPOSE_BIND="127.0.0.1",
               **{f"TICKETFLOW_COMPOSE_{name.upper()}_PORT": str(port) for name, port in PORTS.items()})
    down()  # a previous run killed before its teardown
    started = time.monotonic()
    try:
        # --no-deps: podman 4.3 cannot start a container whose --requires chain is longer than one ("not found
        # in input list"), and ignores health conditions anyway; the containers wait for what they need themselves.
        up = subprocess.run([*compose_cmd(), "up", "-d", "--no-build", "--no-deps"], env=env, capture_output=True, text=True,
                            timeout=UP_TIMEOUT)
        assert up.returncode == 0, f"podman-compose up failed: {up.stdout[-3000:]}{up.stderr[-3000:]}"
        names = containers()
        assert set(SERVICES) | {"init"} <= set(names), f"containers missing: {set(SERVICES) - set(names)}"
        try:
            pending = list(SERVICES)

            def all_healthy() -> bool:
                pending[:] = [s for s in pending if not (state(names[s]).get("Running") and healthy(names[s]))]
                return not pending

            wait_for(f"every container healthy (still waiting: {pending})", all_healthy, HEALTHY_TIMEOUT, 2)
            init = state(names["init"])
            assert init.get("Status") == "exited" and init.get("ExitCode") == 0, f"init: {init}"
        except AssertionError:
            dump_logs(names)
            raise
        print(f"compose stack healthy after {time.monotonic() - started:.0f}s")
        yield names
    finally:
        down()


def operator_token(names: dict[str, str]) -> str:
    return podman("exec", names["reservation-1"], "cat", "/var/lib/ticketflow/keys/services/operator.token").strip()


def test_instance_alternates_between_the_replicas(stack):
    for daemon in ("reservation", "billing"):
        seen = [get_json(f"{url(daemon)}/api/instance")["instance"] for _ in range(6)]
        assert set(seen) == {f"{daemon}-1", f"{daemon}-2"}, f"{daemon} answered from {seen}"


def test_a_purchase_end_to_end(stack):
    async def buy() -> tuple[dict, dict]:
        load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                    buyers=1, probers=0, timeout=10, purchase_deadline=60)
        async with load.open():
            event_id, seats = await load.create_event(100)
            await load.purchase(seats[0], f"compose-{load.run_id}")
            final = await load.final_state(event_id)
        return load.history.as_dicts()[1][0], final

    purchase, final = asyncio.run(buy())
    assert purchase["hold"] == "ok" and purchase["pay"] == "ok", purchase
    assert purchase["finalized"], "the portal never finalized the sale (reservation not confirmed)"
    assert final["seats"][purchase["seat_id"]] == "sold"
    # The portal consumed the sale from the RabbitMQ cluster's quorum queue.
    ready = get_json(f"{url('portal')}/ready")
    assert ready, ready


def test_primary_stopped_writes_continue(stack):
    """The seed's check: stop the PostgreSQL primary's container; holds succeed again on a new primary."""
    old = wait_for("a Patroni leader", lambda: leader(stack), 60)
    podman("stop", "-t", "10", stack[old], timeout=60)
    try:
        new = wait_for("a new Patroni leader", lambda: (lambda n: n if n and n != old else None)(leader(stack)), 60)

        async def hold() -> dict:
            load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                        buyers=1, probers=0, timeout=5, purchase_deadline=60)
            async with load.open():
                # The first write after the stop may meet a pool still on the old primary (503): retry it, bounded.
                deadline = time.monotonic() + 30
                while True:
                    try:
                        _, seats = await load.create_event(100)
                        break
                    except RuntimeError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)
                await load.purchase(seats[0], f"compose-stop-{load.run_id}")
            return load.history.as_dicts()[1][0]

        purchase = asyncio.run(hold())
        assert purchase["hold"] == "ok" and purchase["pay"] == "ok" and purchase["finalized"], (new, purchase)
    finally:
        podman("start", stack[old], timeout=60)
    wait_for(f"{old} streaming again", lambda: any(m["name"] == old and m["state"] in ("running", "streaming")
                                                   for m in patroni_cluster(stack)["members"]), 120)


def test_drill_primary_killed_under_purchase_load(stack):
    """SIGKILL the Patroni leader's container under purchase load: nothing lost, duplicated or double-sold."""
    old = wait_for("a Patroni leader", lambda: leader(stack), 60)

    async def drill() -> tuple[dict, dict, float]:
        load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                    buyers=4, probers=1, timeout=3)
        async with load.open():
            event_id, seats = await load.create_event(1000)
            buying = asyncio.create_task(load.run(seats))
            await asyncio.sleep(3)  # load under way before the fault (a duration, not a synchronisation)
            fault_at = load.history.now()
            await asyncio.to_thread(podman, "kill", "-s", "KILL", stack[old])
            await asyncio.to_thread(wait_for, "a new Patroni leader",
                                    lambda: (lambda n: n if n and n != old else None)(leader(stack)), 60)
            await asyncio.sleep(5)  # writes keep flowing on the new primary for a while
            load.stop()
            await asyncio.wait_for(buying, 180)
            assert await load.settle(90), "paid sales not finalized after the failover"
            final = await load.final_state(event_id)
        ops, purchases = load.history.as_dicts()
        return audit(purchases, final), write_gaps(ops, since=fault_at), fault_at

    result, gaps, fault_at = asyncio.run(drill())
    print(json.dumps({"drill": "compose pg primary kill", "audit": result, **gaps}, indent=1))
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["double_sold"] == 0, result["details"]
    assert result["acknowledged_purchases"] > 0, result
    podman("start", stack[old], timeout=60)
    wait_for(f"{old} back in the cluster", lambda: any(m["name"] == old and m["state"] in ("running", "streaming")
                                                       for m in patroni_cluster(stack)["members"]), 180)
