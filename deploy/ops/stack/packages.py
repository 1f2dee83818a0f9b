"""Installs the Debian server packages the stack runs, when they are missing.

Only the binaries are wanted: the packages' own system services must not start
(a system PostgreSQL/MariaDB/RabbitMQ is not ours to run or touch), so the
install runs under a policy-rc.d that forbids service starts, as Debian's
invoke-rc.d documents.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_DENY_STARTS = "#!/bin/sh\n# ticketflow: install binaries only, start no system services\nexit 101\n"


class InstallError(RuntimeError):
    """apt-get could not provide a server package; the message says which and why."""


def missing(packages: dict[str, Iterable[str]]) -> list[str]:
    """Packages none of whose probe paths exist. ``packages``: name -> paths proving it is installed."""
    return [name for name, probes in packages.items() if not any(Path(p).exists() for p in probes)]


def install(names: list[str]) -> None:
    if not names:
        return
    if os.geteuid() != 0:
        raise InstallError(f"missing packages {', '.join(names)}: run as root or install them with apt-get")
    if shutil.which("apt-get") is None:
        raise InstallError(f"missing packages {', '.join(names)} and no apt-get on this machine")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    placed_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text(_DENY_STARTS)
        POLICY_RC_D.chmod(0o755)
        placed_policy = True
    try:
        for attempt in range(2):
            if attempt == 1 or not _have_package_lists():
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
            result = subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names], env=env
            )
            if result.returncode == 0:
                return
        raise InstallError(f"apt-get install {' '.join(names)} failed (exit {result.returncode})")
    finally:
        if placed_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def _have_package_lists() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any(p.name.endswith("Packages") or "Packages" in p.name for p in lists.iterdir())
