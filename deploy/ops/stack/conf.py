"""The configuration templates under deploy/conf/, rendered with ``${NAME}`` placeholders.

The same files serve the local HA stack and (issue 12) the containers, so there is one
renderer and no copies: ``string.Template`` syntax is also what ``envsubst`` fills in.
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

from deploy.ops.stack.settings import CHECKOUT

CONF_DIR = CHECKOUT / "deploy" / "conf"


def render(template: str, **values: object) -> str:
    """The template ``deploy/conf/<template>`` with every placeholder filled (a missing one is an error)."""
    return Template((CONF_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})


def write(path: Path, text: str, mode: int = 0o600, owner: str | None = None) -> None:
    """Write a rendered file atomically, readable only by its owner (it may hold passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if owner is not None:
        import pwd

        user = pwd.getpwnam(owner)
        os.chown(temporary, user.pw_uid, user.pw_gid)
    os.replace(temporary, path)
