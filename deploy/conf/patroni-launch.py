"""Starts Patroni (Debian ``patroni`` 3.0.x, /usr/bin/python3) with two waits of its planned switchover cut short.

Run as ``python3 patroni-launch.py patroni.yml`` instead of ``/usr/bin/patroni patroni.yml``; everything else is
Patroni's own ``main``. Measured on this machine (issue 11, ``ticketflow drill pg-switchover``, Patroni at DEBUG),
a switchover's client write gap of 3.4 s held two fixed sleeps of Patroni 3.0.2:

1. The old leader, after sending PostgreSQL its fast shutdown, polls ``pg_controldata`` for "shut down" every
   ``STOP_POLLING_INTERVAL`` = 1 s (``Postgresql._do_stop``) and releases the leader key only then. The shutdown
   itself takes about 0.2 s, so the first poll (a few ms after the signal) misses it and the key stays taken for
   another second, with no primary. Polling every 0.1 s releases it within 0.1 s of the shutdown checkpoint.
2. The remaining standby (neither old leader nor candidate) is woken by the key's deletion, finds the cluster
   without a leader, is not the manual switchover's candidate and so ``time.sleep(2)`` "to give somebody time to
   take the leader lock" (``Ha.process_unhealthy_cluster``) before it follows anyone. The candidate takes the
   lock 0.1 s later, but this standby re-points its WAL receiver 2 s after the release; under
   ``synchronous_mode_strict`` the new primary's commits wait for exactly that standby (the old leader is still
   being restarted). Here that sleep ends as soon as the DCS names a leader (checked every 0.05 s, at most 2 s).

Both are waits only: nothing Patroni decides changes. A Patroni whose version or internals differ from what
this patches runs unpatched (and logs why).
"""

import sys
import threading
import time

EXPECTED = "3.0."


def patch() -> str | None:
    """Apply both cuts; the reason they were not applied, if they were not."""
    from patroni import ha, version
    from patroni import postgresql

    if not version.__version__.startswith(EXPECTED):
        return f"Patroni {version.__version__}, patched for {EXPECTED}x"
    if getattr(postgresql, "STOP_POLLING_INTERVAL", None) != 1 or not hasattr(ha.Ha, "process_unhealthy_cluster") \
            or ha.time is not time:
        return "Patroni internals differ from 3.0.2"

    postgresql.STOP_POLLING_INTERVAL = 0.1  # 1. (its stop_timeout counter adds the same interval: still seconds)

    waiting = threading.local()  # 2. the Ha instance whose process_unhealthy_cluster runs on this thread
    unhealthy = ha.Ha.process_unhealthy_cluster

    def process_unhealthy_cluster(self):
        waiting.ha = self
        try:
            return unhealthy(self)
        finally:
            waiting.ha = None

    class HaTime:
        """``time`` as patroni.ha sees it: the same, except the 2 s sleep inside process_unhealthy_cluster."""

        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            node = getattr(waiting, "ha", None)
            if node is None or seconds != 2:
                return time.sleep(seconds)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    if node.dcs.get_cluster().leader is not None:
                        return None
                except Exception:  # the DCS is unreachable right now: wait the full time, as Patroni would
                    pass
                time.sleep(0.05)
            return None

    ha.Ha.process_unhealthy_cluster = process_unhealthy_cluster
    ha.time = HaTime()
    return None


def main() -> None:
    try:
        reason = patch()
    except Exception as exc:  # never stop Patroni from starting
        reason = f"patch failed: {exc!r}"
    from patroni.__main__ import main as patroni_main

    if reason:  # before Patroni sets up its logging: straight to its log file (stderr)
        print(f"patroni-launch: running Patroni unpatched: {reason}", file=sys.stderr, flush=True)
    sys.argv[0] = "patroni"
    sys.exit(patroni_main())


if __name__ == "__main__":
    main()
