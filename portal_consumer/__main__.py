"""``python -m portal_consumer`` (also ``ticketflow run portal``)."""

from deploy.runtime.service import main
from portal_consumer.app import PortalConsumer
from portal_consumer.config import Settings


def run() -> None:
    main("portal", Settings, PortalConsumer)


if __name__ == "__main__":
    run()
