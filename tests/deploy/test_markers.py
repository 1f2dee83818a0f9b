"""Directory marks reach the tests: `-m "not slow"` leaves out the 500-purchase crash test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRASH_TEST = "tests/e2e/test_crash_safety.py::test_500_purchases_survive_every_daemon_killed_and_rabbitmq_restarted"


def collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: everything deselected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_not_slow_deselects_the_crash_test():
    assert CRASH_TEST in collected("tests/e2e/test_crash_safety.py"), "the crash test is not collected at all"
    assert CRASH_TEST not in collected("-m", "not slow", "tests/e2e/test_crash_safety.py")
    assert CRASH_TEST in collected("-m", "slow", "tests/e2e/test_crash_safety.py")


def test_tests_of_daemons_on_the_stack_carry_the_stack_mark():
    everything = collected("tests/reservation/test_api.py", "tests/billing/test_payments.py")
    assert everything and collected("-m", "not stack", "tests/reservation/test_api.py",
                                    "tests/billing/test_payments.py") == []
