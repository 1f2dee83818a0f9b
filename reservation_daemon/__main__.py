"""``python -m reservation_daemon`` (also ``ticketflow run reservation``)."""

from deploy.runtime.service import main
from reservation_daemon.app import ReservationDaemon
from reservation_daemon.config import Settings


def run() -> None:
    main("reservation", Settings, ReservationDaemon)


if __name__ == "__main__":
    run()
