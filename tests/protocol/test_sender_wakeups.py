"""Regression: a notify while the window is full must not stall the sender.

Event.wait() returns without yielding when the event is already set. A sender
that left its wake-up flag set while its window was full spun without ever
yielding, so its ack reader never ran: the whole event loop froze. A frozen
loop would freeze this test too, so the scenario runs in a child process
under a timeout.
"""

import subprocess
import sys
import textwrap

SCENARIO = textwrap.dedent("""
    import asyncio, uvloop
    from protocol.link import LinkSettings
    from protocol.receiver import Receiver
    from protocol.sender import Sender
    from tests.helpers import ListSource, MemoryStore, make_events

    class SlowStore(MemoryStore):
        async def apply(self, events):
            await asyncio.sleep(0.02)  # the window fills while each batch commits
            await super().apply(events)

    async def main():
        settings = LinkSettings(secret=b"wakeup-test-secret-0123", node="t")
        store = SlowStore()
        receiver = Receiver({"s": store}, settings)
        await receiver.start()
        source = ListSource(make_events(300))
        sender = Sender("127.0.0.1", receiver.port, "s", source.read, settings, poll_interval=5)
        sender.settings = LinkSettings(secret=settings.secret, node="t", window=2)
        task = asyncio.create_task(sender.run())

        async def notify_storm():
            while True:
                sender.notify()  # what LISTEN/NOTIFY does on every commit
                await asyncio.sleep(0.001)

        storm = asyncio.create_task(notify_storm())
        while store.committed_position < 300:
            await asyncio.sleep(0.01)
        storm.cancel(); task.cancel()
        print("delivered", store.committed_position)

    uvloop.run(main())
""")


def test_notifies_while_the_window_is_full_never_freeze_the_sender():
    result = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "delivered 300" in result.stdout
