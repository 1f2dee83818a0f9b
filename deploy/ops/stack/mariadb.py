"""A private MariaDB server (10.11 or newer) from Debian's binaries, run as ``mysql``.

``--no-defaults`` everywhere: the system's /etc/mysql configuration belongs to
the system's server and must not leak into ours.
"""

from __future__ import annotations

from pathlib import Path

import aiomysql

from deploy.ops.stack.server import Server, ensure_system_user, which


class MariaDB(Server):
    name = "mariadb"
    packages = {
        "mariadb-server": ["/usr/sbin/mariadbd"],
        "mariadb-client": ["/usr/bin/mariadb"],
    }
    run_as = "mysql"

    @property
    def data(self) -> Path:
        return self.private_dir("data")

    @property
    def socket(self) -> Path:
        return self.private_dir("run") / "mariadb.sock"

    @property
    def init_file(self) -> Path:
        return self.private_dir("run") / "init.sql"

    def initialized(self) -> bool:
        return (self.data / "mysql").is_dir()

    def initialize(self) -> None:
        ensure_system_user("mysql")
        self.run_setup([
            which("mariadb-install-db", "mysql_install_db"), "--no-defaults",
            f"--datadir={self.data}", "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ])

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        s = self.settings
        # Idempotent set-up run by the server itself at every start, so no client
        # has to reach it over a socket before the application user exists.
        self.init_file.write_text(
            f"CREATE USER IF NOT EXISTS '{s.user}'@'127.0.0.1' IDENTIFIED BY '{s.password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{s.user}'@'127.0.0.1' WITH GRANT OPTION;\n"
            f"CREATE DATABASE IF NOT EXISTS `{s.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"
        )
        return [
            which("/usr/sbin/mariadbd", "mariadbd", "/usr/sbin/mysqld"), "--no-defaults",
            f"--datadir={self.data}",
            f"--socket={self.socket}",
            f"--pid-file={self.data / 'mariadbd.pid'}",
            f"--init-file={self.init_file}",
            "--bind-address=127.0.0.1", f"--port={s.mariadb_port}",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            "--default-storage-engine=InnoDB",
            "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=1",
            "--max-connections=500",
            "--transaction-isolation=READ-COMMITTED",
        ], None

    def dsn(self, database: str | None = None) -> str:
        s = self.settings
        return f"mysql://{s.user}:{s.password}@127.0.0.1:{s.mariadb_port}/{database or s.database}"

    async def probe(self) -> None:
        s = self.settings
        conn = await aiomysql.connect(
            host="127.0.0.1", port=s.mariadb_port, user=s.user, password=s.password,
            db=s.database, connect_timeout=3,
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_MARIADB_DSN": self.dsn()}
