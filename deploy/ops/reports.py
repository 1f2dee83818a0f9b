"""How every command that measures something ends: its table for a person, one JSON line for a
program, and the JSON, indented, in ``--json-out FILE`` when asked (bench modes, drills)."""

from __future__ import annotations

import json
from typing import Any


def publish(report: dict[str, Any], text: str, json_path: str | None) -> None:
    print(text)
    print()
    print(json.dumps(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
