from pathlib import Path

import pytest
import uvloop

TESTS = Path(__file__).resolve().parent

# Marks every test under a directory carries. (A ``pytestmark`` in a conftest.py has no
# effect: pytest reads it from test modules only.)
DIRECTORY_MARKS = {
    "reservation": ("stack",),
    "billing": ("stack",),
    "e2e": ("stack", "slow"),
    "browser": ("stack", "browser"),
    "ha": ("ha",),
    "compose": ("compose",),
}


def pytest_ignore_collect(collection_path, config):
    # tests/compose/ builds images and runs docker-compose.yml with podman: only `make test-compose`
    # (pytest -m compose tests/compose) collects it; `make test` never does.
    if collection_path == TESTS / "compose":
        return (config.getoption("markexpr") or "").strip() != "compose"
    return None


def pytest_asyncio_loop_factories(config, item):
    # The daemons run on uvloop; so do their tests.
    return {"uvloop": uvloop.new_event_loop}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            directory = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        for mark in DIRECTORY_MARKS.get(directory, ()):
            item.add_marker(mark)
