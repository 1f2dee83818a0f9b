"""A receiver behind what the sender still retains is an error, said loudly, until an operator moves it."""

import asyncio

import structlog

from deploy.runtime.backoff import Backoff
from protocol.link import LinkSettings
from protocol.receiver import Receiver
from protocol.sender import Sender
from tests.helpers import ListSource, MemoryStore, make_events, wait_until

SECRET = b"retention-test-secret-0123"


class PrunedSource(ListSource):
    """An outbox whose rows up to ``pruned`` were deleted after the retention period."""

    def __init__(self, events, pruned: int) -> None:
        super().__init__(events)
        self.pruned = pruned

    async def read(self, after: int, limit: int):
        start = max(after, self.pruned)
        return self.events[start:start + limit]


async def test_a_receiver_behind_retention_is_refused_loudly_and_resumes_once_advanced():
    store = MemoryStore()
    store.committed_position = 12  # e.g. restored from an old backup
    receiver = Receiver({"s": store}, LinkSettings(secret=SECRET, node="r"))
    await receiver.start()
    source = PrunedSource(make_events(900), pruned=500)
    backoff = Backoff(base=0.01, cap=0.05)
    sender = Sender("127.0.0.1", receiver.port, "s", source.read, LinkSettings(secret=SECRET, node="s"),
                    head=source.head, backoff=backoff)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(sender.run())
        await wait_until(lambda: sender.problem is not None, 5, "the sender reporting the retention gap")
        await wait_until(lambda: any(e.get("event") == "link_closed_by_peer" for e in logs), 5,
                         "the receiver hearing why")
    assert sender.problem == {"stream": "s", "error": "POSITION_BEHIND_RETENTION", "receiver_position": 12,
                              "oldest_retained": 501, "missing": 488, "advance_to": 500}
    errors = [e for e in logs if e["log_level"] == "error"]
    sender_line = next(e for e in errors if e["event"] == "link_position_behind_retention")
    assert (sender_line["stream"], sender_line["receiver_position"], sender_line["oldest_retained"]) == ("s", 12, 501)
    peer_line = next(e for e in errors if e["event"] == "link_closed_by_peer")
    assert peer_line["code"] == "POSITION_BEHIND_RETENTION"
    assert sender.last_delay == backoff.cap, "retrying cannot cure it: wait the cap"
    assert store.applied == [] and not task.done(), "nothing applied, and the sender keeps running"

    store.committed_position = 500  # the operator reconciled and advanced the receiver
    await wait_until(lambda: sender.acked == 900, 10, "the stream resuming from the oldest retained event")
    assert store.applied == list(range(501, 901))
    assert sender.problem is None
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()


async def test_a_sender_without_a_head_callback_still_refuses_to_skip_pruned_events():
    store = MemoryStore()
    receiver = Receiver({"s": store}, LinkSettings(secret=SECRET, node="r"))
    await receiver.start()
    source = PrunedSource(make_events(30), pruned=10)
    sender = Sender("127.0.0.1", receiver.port, "s", source.read, LinkSettings(secret=SECRET, node="s"),
                    backoff=Backoff(base=0.01, cap=0.05))
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.last_error == "POSITION_BEHIND_RETENTION", 5, "the gap being refused")
    assert sender.problem["oldest_retained"] == 11 and store.applied == [] and not task.done()
    await sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await receiver.stop()
