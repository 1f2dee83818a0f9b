"""The one dependency direction (tooling -> daemons -> shared runtime -> protocol) holds.

The contracts live in pyproject.toml (``[tool.importlinter]``); import-linter checks
them. The second test plants one violation of each rule in a copy of the tree and
shows each contract catches its own.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["reservation_daemon", "billing_daemon", "bridge_daemon", "portal_consumer", "protocol", "deploy"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "lint-imports"
    assert tool.exists(), f"{tool} is missing: install the test extras (pip install -e '.[test]')"
    # import-linter puts its working directory first on sys.path: it analyses the tree in `cwd`.
    return subprocess.run([str(tool), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, f"an import breaks the layering:\n{result.stdout}\n{result.stderr}"


def test_each_contract_catches_its_own_violation(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    planted = {
        "reservation_daemon/__init__.py": "import billing_daemon.config",  # a daemon imports another
        "deploy/runtime/__init__.py": "import portal_consumer.config",  # the runtime imports a daemon
        "protocol/__init__.py": "import deploy.runtime.ids",  # the protocol imports the project
        "bridge_daemon/__init__.py": "import deploy.ops.daemons",  # a daemon imports the tooling
    }
    for path, line in planted.items():
        with open(tmp_path / path, "a") as f:
            f.write(f"\n{line}\n")

    result = lint_imports(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "Contracts: 0 kept, 4 broken." in out, out
    broken = out.split("Broken contracts")[1]
    assert "reservation_daemon -> billing_daemon.config" in broken, out
    assert "deploy.runtime -> portal_consumer.config" in broken, out
    assert "protocol -> deploy.runtime.ids" in broken, out
    assert "bridge_daemon -> deploy.ops.daemons" in broken, out
