"""``ticketflow run all``: every daemon as a child process, kept running; a demo event, a walkthrough.

Daemon logs go to ``.stack/logs/<replica>.log`` so the terminal stays readable;
pid files under ``.stack/daemons/`` let ``ticketflow stop`` (``make stop``) stop
them from another terminal, by the pids recorded, as the stack does its servers.
Under ``--topology ha`` reservation and billing run two replicas each (``daemons.replicas``)
behind the HA stack's HAProxy on their public ports; each replica is kept running on its own.
A daemon that exits or is killed is restarted (``deploy/ops/restarts.py`` says
when); the others keep serving. ``ticketflow stop`` stops the supervisor first
(its own pid file), so nothing is restarted behind the operator's back.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from deploy.ops.daemons import (
    BY_NAME,
    DAEMONS,
    TOPOLOGY_ENV,
    Replica,
    every_replica,
    frontends,
    replicas,
)
from deploy.ops.restarts import RestartLog, RestartPolicy, exit_reason
from deploy.ops.stack import process
from deploy.ops.stack.keys import Keys
from deploy.ops.stack.settings import StackSettings, stack_settings
from deploy.ops.stack.topology import local


def daemon_dirs(settings: StackSettings) -> tuple[Path, Path]:
    """Where `run all` keeps pid files and logs."""
    return settings.root / "daemons", settings.root / "logs"


def supervisor_pidfile(settings: StackSettings) -> Path:
    return daemon_dirs(settings)[0] / "supervisor.pid"


def restarts_file(settings: StackSettings) -> Path:
    return daemon_dirs(settings)[0] / "restarts.json"


def _http(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_ok(url: str, timeout: float, failing: Callable[[], str | None] = lambda: None) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` passes (False); ``failing`` says why to give up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = failing()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            if _http("GET", url)[0] == 200:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _wait_ready(url: str, pidfile: Path, log: Path, timeout: float = 30) -> None:
    def exited() -> str | None:
        if process.running_pid(pidfile) is not None:
            return None
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        return f"exited during start-up; last lines of {log}:\n{tail}"

    if not _wait_ok(url, timeout, exited):
        raise RuntimeError(f"not ready after {timeout:.0f}s; see {log}")


def daemon_env(settings: StackSettings) -> dict[str, str]:
    """The stack's URLs, then the operator's own settings, then what follows from them."""
    env = {**local(settings).env(), **os.environ}
    ports = {spec.name: spec.port(env) for spec in DAEMONS}
    env.setdefault("TICKETFLOW_PORTAL_PG_DSN", env["TICKETFLOW_PG_DSN"])
    # The mock gateway remembers its charges across billing restarts, so the resolver can ask it.
    env.setdefault("TICKETFLOW_MOCK_GATEWAY_LEDGER", str(settings.root / "mock-gateway.jsonl"))
    env.setdefault("TICKETFLOW_RESERVATION_URL", f"http://127.0.0.1:{ports['reservation']}")
    env.setdefault("TICKETFLOW_BILLING_URL", f"http://127.0.0.1:{ports['billing']}")
    # Drill reports (ticketflow drill, and the portal's console that runs it and lists them).
    env.setdefault("TICKETFLOW_DRILL_REPORTS_DIR", str(settings.root / "drills"))
    return env


def service_env(env: dict[str, str], keys: Keys, service: str) -> dict[str, str]:
    """Each daemon calls the others with a service token of its own (unless the operator set one)."""
    if env.get("TICKETFLOW_SERVICE_TOKEN_FILE") == str(keys.token_file("operator")) and \
            keys.token_file(service).exists():
        return {**env, "TICKETFLOW_SERVICE_TOKEN_FILE": str(keys.token_file(service))}
    return env


def operator_token(env: dict[str, str]) -> str:
    """The CLI's own service credential (bench, the demo event)."""
    from deploy.runtime.auth import read_token_file

    return read_token_file(Path(env["TICKETFLOW_SERVICE_TOKEN_FILE"]))


def find_replica(env: dict[str, str], name: str) -> Replica:
    """A replica of the current topology by name (a daemon's name is its one replica's in ``local``)."""
    for replica in [*replicas(env), *every_replica(env)]:
        if replica.name == name:
            return replica
    raise KeyError(f"no daemon replica {name!r}")


def spawn_daemon(settings: StackSettings, name: str | Replica, restarts: int = 0) -> int:
    """Start one daemon replica with its pid file and log; its pid. ``restarts``: how many times
    the supervisor restarted it in this run (TICKETFLOW_RESTARTS, the daemon's metric)."""
    env = daemon_env(settings)
    replica = name if isinstance(name, Replica) else find_replica(env, name)
    pids, logs = daemon_dirs(settings)
    keys = Keys(settings.root)
    return process.spawn([sys.executable, "-m", BY_NAME[replica.daemon].module], replica.pidfile(pids),
                         replica.logfile(logs), env={**service_env(env, keys, replica.daemon), **replica.env,
                                                     "TICKETFLOW_RESTARTS": str(restarts)})


def ensure_frontends(env: dict[str, str]) -> str | None:
    """Under the HA topology: HAProxy's daemon frontends match the replicas (restarted if its config changes)."""
    if env.get(TOPOLOGY_ENV, "local") != "ha":
        return None
    from deploy.ops.stack.topology import ha

    proxy = ha().proxy
    return proxy.serve_frontends(frontends(env))


def start_all(settings: StackSettings) -> dict[str, str]:
    """Start every daemon replica not already running; returns daemon name -> base (public) URL."""
    env = daemon_env(settings)
    pids, logs = daemon_dirs(settings)
    Keys(settings.root).ensure()  # `stack up` made them; a stack dir of its own (tests, a second checkout) gets them here
    frontend = ensure_frontends(env)
    if frontend is not None:
        print(f"{'haproxy':<14} {frontend}")
    for replica in replicas(env):
        pidfile, log = replica.pidfile(pids), replica.logfile(logs)
        if process.running_pid(pidfile) is None:
            spawn_daemon(settings, replica)
            print(f"{replica.name:<14} starting (log: {log})")
        _wait_ready(replica.url + "/ready", pidfile, log)
        print(f"{replica.name:<14} ready at {replica.url}")
    urls = {spec.name: spec.url(env) for spec in DAEMONS}
    if frontend is not None:  # HAProxy marks a replica up after its first good check (1 s)
        for spec in DAEMONS:
            if spec.ha_ports(env):
                _wait_frontend(urls[spec.name] + "/ready")
                print(f"{spec.name:<14} ready at {urls[spec.name]} (HAProxy, {len(spec.ha_ports(env))} replicas)")
    return urls


def _wait_frontend(url: str, timeout: float = 15) -> None:
    if not _wait_ok(url, timeout):
        raise RuntimeError(f"HAProxy's frontend {url} not ready after {timeout:.0f}s "
                           "(ticketflow stack status --topology ha)")


def stop_all(settings: StackSettings) -> dict[str, bool]:
    """Stop the supervisor, then every replica of the current topology and any other one still running."""
    pids, _ = daemon_dirs(settings)
    env = daemon_env(settings)
    # The supervisor first: it would restart what we stop. On SIGTERM it stops the daemons itself.
    process.stop(supervisor_pidfile(settings), signal.SIGTERM, timeout=60)
    current = {r.name for r in replicas(env)}
    order = [spec.name for spec in DAEMONS]
    wanted = [r for r in every_replica(env) if r.name in current or process.running_pid(r.pidfile(pids))]
    wanted.sort(key=lambda r: -order.index(r.daemon))  # downstream first, as before
    # SIGTERM: each daemon finishes in-flight work and closes its links.
    return {r.name: process.stop(r.pidfile(pids), signal.SIGTERM, timeout=20) for r in wanted}


def demo(urls: dict[str, str], token: str) -> str:
    r, b, p = urls["reservation"], urls["billing"], urls["portal"]
    service = {"Authorization": f"Bearer {token}"}
    status, event = _http("POST", r + "/api/events", {
        "name": "TicketFlow Live", "venue": "Loopback Arena", "starts_at": "2027-06-01T19:30:00Z",
        "description": "the demo event created by make run",
        "layout": {"sections": [
            {"name": "STALLS", "rows": 10, "seats_per_row": 20, "price_minor": 4500, "currency": "EUR"},
            {"name": "BALCONY", "rows": 5, "seats_per_row": 12, "price_minor": 2900, "currency": "EUR"}]},
    }, {"Idempotency-Key": "make-run-demo-event", **service})  # re-running make run reuses the same event
    if status != 201:
        raise RuntimeError(f"could not create the demo event: {status} {event}")
    _, seats = _http("GET", f"{r}/api/events/{event['id']}/seats?status=available")
    seat = seats["seats"][0]
    # Fresh names and keys per printed walkthrough: a key from an earlier run would replay that run's answer.
    t = os.urandom(3).hex()
    # The pasted shell knows no topology: name it, so staff accounts land in the database the daemons use.
    topology = os.environ.get(TOPOLOGY_ENV, "local")
    on = "" if topology == "local" else f" --topology {topology}"
    return f"""
TicketFlow is running. Demo event "{event['name']}": {event['seats']['available']} of {event['seats']['total']} seats available.
  reservation {r}   billing {b}   bridge {urls['bridge']}   portal {p}
  (each serves /health, /ready, /api/instance, /openapi.json and /metrics for the service role)
  pages: buyers {r}/   organizers {r}/organizer   door {b}/door   operators {p}/ops
  logs: .stack/logs/      stop: Ctrl-C here, or `make stop` from anywhere

Paste this into a shell (bash). Each step prints what it got:

tf() {{ curl -s -w '\\n' -H 'Content-Type: application/json' "$@"; }}
field() {{ python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }}
# 1. Alice signs up (safe to paste twice: the same Idempotency-Key returns the same user) and logs in
USER_ID=$(tf -X POST {b}/api/users -H 'Idempotency-Key: signup-{t}' -d '{{"email":"alice-{t}@example.com","name":"Alice","password":"correct horse {t}"}}' | field '["id"]'); echo "user $USER_ID"
TOKEN=$(tf -X POST {b}/api/sessions -d '{{"email":"alice-{t}@example.com","password":"correct horse {t}"}}' | field '["token"]')
AUTH="Authorization: Bearer $TOKEN"
# 2. she holds seat {seat['label']} (retrying with the same Idempotency-Key never holds twice)
RES_ID=$(tf -X POST {r}/api/reserve -H "$AUTH" -H 'Idempotency-Key: hold-{t}' -d '{{"seat_id":"{seat['id']}"}}' | field '["id"]'); echo "reservation $RES_ID"
# 3. Bob wants the same seat: 409 SEAT_UNAVAILABLE (and without a token at all: 401)
tf -X POST {b}/api/users -d '{{"email":"bob-{t}@example.com","name":"Bob","password":"battery staple {t}"}}' >/dev/null
BOB="Authorization: Bearer $(tf -X POST {b}/api/sessions -d '{{"email":"bob-{t}@example.com","password":"battery staple {t}"}}' | field '["token"]')"
tf -X POST {r}/api/reserve -H "$BOB" -d '{{"seat_id":"{seat['id']}"}}'
tf -X POST {r}/api/reserve -d '{{"seat_id":"{seat['id']}"}}'
# 4. the hold reaches billing over the link as an order, pending payment (Bob cannot see it: 404)
until tf -H "$AUTH" {b}/api/orders/$RES_ID | grep -q pending; do sleep 0.1; done; tf -H "$AUTH" {b}/api/orders/$RES_ID | field '["status"]'
tf -H "$BOB" {b}/api/orders/$RES_ID
# 5. pay (mock gateway); the ticket's code is what the door scans
CODE=$(tf -X POST -H "$AUTH" {b}/api/orders/$RES_ID/pay -H 'Idempotency-Key: pay-{t}' | field '["tickets"][0]["code"]'); echo "ticket $CODE"
# 6. the payment crosses the bridge and RabbitMQ; the portal finalizes the sale: the seat is sold
until tf -H "$AUTH" {r}/api/reservations/$RES_ID | grep -q confirmed; do sleep 0.1; done; tf -H "$AUTH" {r}/api/reservations/$RES_ID | field '["status"]'
tf {r}/api/events/{event['id']}/seats | python3 -c "import json,sys; print('seat {seat['label']}:', next(s['status'] for s in json.load(sys.stdin)['seats'] if s['id'] == '{seat['id']}'))"
# 7. and Alice has exactly one notification
tf -H "$AUTH" "{p}/api/notifications" | field '["notifications"][0]["kind"]'
# 8. door staff (an account `ticketflow users create --role door` makes) log in at the door
{Path(sys.executable).parent}/ticketflow users create{on} --role door --email door-{t}@example.com --name Door --password 'door staff {t}' >/dev/null
DOOR="Authorization: Bearer $(tf -X POST {b}/api/sessions -d '{{"email":"door-{t}@example.com","password":"door staff {t}"}}' | field '["token"]')"
#    the first scan admits, the second says when the first was
tf -X POST -H "$DOOR" {b}/api/checkin -d '{{"code":"'$CODE'"}}'
tf -X POST -H "$DOOR" {b}/api/checkin -d '{{"code":"'$CODE'"}}'
# 9. the purchase through all four daemons' logs, by its correlation ids, with the time between steps
{Path(sys.executable).parent}/ticketflow trace{on} $RES_ID
"""


class Keeper:
    """Restarts daemon replicas that exit, each on its own, by the policy in ``restarts.py``;
    fed the current time by ``run_all``."""

    def __init__(self, settings: StackSettings, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.replicas = replicas(daemon_env(settings))
        self.policy = policy or RestartPolicy()
        self.log = RestartLog(restarts_file(settings))
        self.pids = daemon_dirs(settings)[0]
        self.due: dict[str, tuple[float, str]] = {}  # name -> (restart at, why it exited)
        self.started: dict[str, float] = {}

    def begin(self, now: float) -> None:
        self.log.start()
        for replica in self.replicas:
            self.policy.started(replica.name, now)
            self.started[replica.name] = now

    def tick(self, now: float) -> None:
        for replica in self.replicas:
            name = replica.name
            if name in self.due:
                at, reason = self.due[name]
                if now >= at:
                    del self.due[name]
                    count = self.log.record(name, reason)
                    spawn_daemon(self.settings, replica, restarts=count)
                    self.policy.started(name, now)
                    self.started[name] = now
                    _say(f"{name} restarted (restart {count} in this run); log: .stack/logs/{name}.log")
                continue
            pid = _pid_in(self.pids / f"{name}.pid")
            if pid is not None and process.running_pid(self.pids / f"{name}.pid") is None:
                reason = exit_reason(_reap(pid))
                delay = self.policy.exited(name, now)
                self.due[name] = (now + delay, reason)
                _say(f"{name} {reason} after {now - self.started.get(name, now):.1f} s; "
                     + ("restarting now" if delay == 0 else f"restarting in {delay:.1f} s (it keeps exiting)"))


def _pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid: int) -> int | None:
    """The exit status of our child ``pid`` (None if it is not our child)."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if reaped == pid else None


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_all() -> int:
    settings = stack_settings()
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    pidfile = supervisor_pidfile(settings)
    process.record(pidfile, os.getpid())
    try:
        urls = start_all(settings)
        print(demo(urls, operator_token(daemon_env(settings))))
        keeper = Keeper(settings)
        keeper.begin(time.monotonic())
        while not stop:
            keeper.tick(time.monotonic())
            time.sleep(0.1)  # detection within 0.1 s: a killed daemon serves again in about a second
    except RuntimeError as exc:
        print(f"ticketflow: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping daemons (the stack stays up; `make stop` stops it too)")
        pidfile.unlink(missing_ok=True)
        stop_all(settings)
    return 0
