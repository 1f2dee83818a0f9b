"""A private RabbitMQ node (3.10 or newer) with its own epmd, on loopback only.

The /usr/sbin wrappers switch user and drop the environment, so the programs
in /usr/lib/rabbitmq/bin are called directly with every path and port set
here; nothing is read from /etc/rabbitmq.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import aio_pika

from deploy.ops.stack import process
from deploy.ops.stack.server import Server, StackError, which

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitMQ(Server):
    name = "rabbitmq"
    packages = {"rabbitmq-server": [str(RABBIT_BIN / "rabbitmq-server")]}

    @property
    def epmd_pidfile(self) -> Path:
        return self.dir / "epmd.pid"

    def initialized(self) -> bool:
        return (self.dir / "rabbitmq.conf").exists()

    def initialize(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        s = self.settings
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            f"default_user = {s.user}\n"
            f"default_pass = {s.password}\n"
            "default_vhost = /\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "vm_memory_high_watermark.relative = 0.2\n"
        )

    def base_env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.dir / "home"),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": "ticketflow@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(s.amqp_port),
            "RABBITMQ_DIST_PORT": str(s.amqp_dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(s.ctl_port_min),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(s.ctl_port_min + 9),
            "ERL_EPMD_PORT": str(s.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_CRASH_DUMP": str(self.dir / "log" / "erl_crash.dump"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # Makes the start script exec the VM, so the pid we record is the broker itself.
            "RUNNING_UNDER_SYSTEMD": "1",
        })
        return env

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        return [str(RABBIT_BIN / "rabbitmq-server")], self.base_env()

    def start(self) -> None:
        self._start_epmd()
        super().start()

    def _start_epmd(self) -> None:
        if process.running_pid(self.epmd_pidfile) is not None:
            return
        epmd = which("epmd", "/usr/lib/erlang/bin/epmd")
        process.spawn(
            [epmd, "-port", str(self.settings.epmd_port), "-address", "127.0.0.1"],
            self.epmd_pidfile, self.dir / "epmd.log", env=self.base_env(),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.settings.epmd_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise StackError(f"epmd did not listen on port {self.settings.epmd_port}; see {self.dir / 'epmd.log'}")

    def stop(self) -> bool:
        stopped = super().stop()
        process.stop(self.epmd_pidfile)
        return stopped

    def url(self, vhost: str = "/") -> str:
        s = self.settings
        path = "" if vhost == "/" else vhost
        return f"amqp://{s.user}:{s.password}@127.0.0.1:{s.amqp_port}/{path}"

    async def probe(self) -> None:
        connection = await aio_pika.connect(self.url(), timeout=3)
        await connection.close()

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_AMQP_URL": self.url()}
