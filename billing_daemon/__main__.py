"""``python -m billing_daemon`` (also ``ticketflow run billing``)."""

from billing_daemon.app import BillingDaemon
from billing_daemon.config import Settings
from deploy.runtime.service import main


def run() -> None:
    main("billing", Settings, BillingDaemon)


if __name__ == "__main__":
    run()
