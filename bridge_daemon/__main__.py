"""``python -m bridge_daemon`` (also ``ticketflow run bridge``)."""

from bridge_daemon.app import BridgeDaemon
from bridge_daemon.config import Settings
from deploy.runtime.service import main


def run() -> None:
    main("bridge", Settings, BridgeDaemon)


if __name__ == "__main__":
    run()
