"""Every test under tests/ha carries the `ha` mark, so `-m ha` / `-m "not ha"` select the HA part."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 5), result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_ha_directory_carries_the_ha_mark():
    everything = collected("tests/ha")
    assert any("test_ha_stack.py::" in line for line in everything), everything
    assert collected("-m", "ha", "tests/ha") == everything
    assert collected("-m", "not ha", "tests/ha") == []
