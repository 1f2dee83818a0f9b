"""The operators' console's drill runs end, whatever goes wrong around them (no servers: the drill command is
a small Python child standing in for `ticketflow`)."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest

from portal_consumer.console import Console, DrillBusy


def console(tmp_path, drill_dir, script: str) -> Console:
    settings = SimpleNamespace(ops_command=f"{sys.executable} -c '{script}'", ops_topology="ha",
                               drill_dir=str(drill_dir), ops_sample_seconds=5.0, ops_history=10,
                               ops_idle_seconds=600.0, drill_timeout=30.0)
    return Console(settings)


async def finished(c: Console, timeout: float = 20.0) -> None:
    await asyncio.wait_for(c._drill_task, timeout)


async def test_a_drill_the_console_cannot_record_still_ends_and_frees_the_console(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the reports directory should be")
    c = console(tmp_path, blocked, "print(1)")
    run = c.start_drill("pg-switchover", "olga@example.com")
    await finished(c)
    assert run.exit_code == -1 and any("the console lost this drill" in line for line in run.lines), run.lines
    again = c.start_drill("pg-switchover", "olga@example.com")  # not refused as "still running"
    await finished(c)
    assert again.exit_code == -1
    await c.stop()  # and its lag sampler


async def test_an_output_line_too_long_to_read_ends_the_run_and_the_child(tmp_path):
    c = console(tmp_path, tmp_path / "drills", "import sys,time; sys.stdout.write(\"x\" * 200000); "
                                               "sys.stdout.flush(); time.sleep(60)")
    run = c.start_drill("mariadb-writer", "olga@example.com")
    await finished(c)
    assert run.exit_code is not None and run.exit_code != 0, run.lines
    await c.stop()
    with pytest.raises(DrillBusy):  # while one runs, a second is refused ...
        c2 = console(tmp_path, tmp_path / "drills", "import time; time.sleep(60)")
        c2.start_drill("mariadb-writer", "a")
        c2.start_drill("mariadb-writer", "b")
    await c2.stop()
