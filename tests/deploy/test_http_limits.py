"""Rate-limit buckets and route limits (deploy/runtime/http.py), on an injected clock; JSON depth; rate settings."""

import pytest

from deploy.runtime.auth import Principal
from deploy.runtime.config import ConfigError, Rate, load, rate
from deploy.runtime.http import (MAX_JSON_DEPTH, Buckets, MalformedRequest, RateLimited, RouteLimit, RouteLimiter,
                                 json_depth, parse_json)
from tests.support.clock import FakeClock


class FakeRequest(dict):
    """What the limiter reads of a request: its principal and its address."""

    def __init__(self, remote: str, caller: Principal | None = None) -> None:
        super().__init__()
        self.remote = remote
        self.app: dict = {}  # no trusted proxies: the peer's address is the client's
        if caller is not None:
            self["principal"] = caller


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    clock = FakeClock(100.0)
    buckets = Buckets(2, 4, clock)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.5), "the next token is half a second away at 2/s"
    assert buckets.take("b") == 0.0, "each key has its own bucket"
    clock.advance(0.5)
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    clock.advance(60)
    assert [buckets.take("a") for _ in range(5)].count(0.0) == 4, "refills to the burst, never beyond"


def test_refused_attempts_do_not_push_the_wait_further_out():
    clock = FakeClock(100.0)
    buckets = Buckets(1, 1, clock)
    assert buckets.take("a") == 0.0
    waits = [buckets.take("a") for _ in range(10)]
    assert waits == [pytest.approx(1.0)] * 10
    clock.advance(1.0)
    assert buckets.take("a") == 0.0


def test_bucket_memory_is_bounded_and_the_least_recently_used_key_goes_first():
    clock = FakeClock(100.0)
    buckets = Buckets(1, 1, clock, max_keys=3)
    for key in "abc":
        buckets.take(key)
    buckets.take("a")  # a is now the most recently used
    buckets.take("d")
    assert len(buckets) == 3
    assert buckets.take("a") > 0, "a was remembered (still empty)"
    assert buckets.take("b") == 0.0, "b, the least recently used, was forgotten: a fresh bucket"


def test_route_limits_key_by_subject_and_by_address_and_exempt_services():
    clock = FakeClock(100.0)
    limiter = RouteLimiter([RouteLimit("holds", per_subject=Rate(1, 2), per_address=Rate(1, 5))], clock)
    alice, bob = Principal("alice", "buyer"), Principal("bob", "buyer")
    limiter.check(FakeRequest("10.0.0.1", alice), "holds")
    limiter.check(FakeRequest("10.0.0.2", alice), "holds")
    with pytest.raises(RateLimited) as refused:
        limiter.check(FakeRequest("10.0.0.3", alice), "holds")  # a new address does not reset alice's budget
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.details == {"limit": "holds", "per": "subject"}
    for _ in range(4):  # other callers from one address share that address's budget
        limiter.check(FakeRequest("10.0.0.9", Principal(f"user-{_}", "buyer")), "holds")
    limiter.check(FakeRequest("10.0.0.9", None), "holds")  # anonymous: counted per address only
    with pytest.raises(RateLimited) as refused:
        limiter.check(FakeRequest("10.0.0.9", bob), "holds")
    assert refused.value.details == {"limit": "holds", "per": "address"}
    service = Principal("portal", "service")
    for _ in range(100):
        limiter.check(FakeRequest("10.0.0.9", service), "holds")
    clock.advance(1)
    limiter.check(FakeRequest("10.0.0.9", bob), "holds")


def test_retry_after_is_whole_seconds_until_the_next_token():
    clock = FakeClock(100.0)
    limiter = RouteLimiter([RouteLimit("logins", per_address=rate("5/min"), per_key=rate("5/min"))], clock)
    for _ in range(5):
        limiter.check(FakeRequest("10.0.0.1"), "logins")
    with pytest.raises(RateLimited) as refused:
        limiter.check(FakeRequest("10.0.0.1"), "logins")
    assert refused.value.headers == {"Retry-After": "12"}
    for _ in range(5):
        limiter.take("logins", "key", "ann@example.com")
    with pytest.raises(RateLimited):
        limiter.take("logins", "key", "ann@example.com")
    limiter.take("holds", "key", "anything")  # no such limit: nothing to count


def test_make_app_refuses_limits_for_routes_that_do_not_exist():
    from aiohttp import web

    from deploy.runtime.http import make_app

    async def handler(_):
        return web.Response()

    with pytest.raises(ValueError, match="/api/sesions"):
        make_app([web.post("/api/sessions", handler)], limited={("POST", "/api/sesions"): RouteLimit("logins")})


def test_rate_settings_parse_readably_and_name_the_variable_when_wrong():
    assert rate("20/s burst 40") == Rate(20, 40) and str(rate("20/s burst 40")) == "20/s burst 40"
    assert rate("5/min") == Rate(5 / 60, 5) and str(rate("5/min")) == "5/min burst 5"
    assert rate("0") == Rate(0, 0) and rate("off") == Rate(0, 0)
    from reservation_daemon.config import Settings

    defaults = load(Settings, {})
    assert defaults.rate_limits_enabled and defaults.holds_per_subject == Rate(20, 40)
    assert defaults.http_request_timeout == 15 and defaults.http_keepalive == 30
    for bad in ("20", "20/fortnight", "-1/s", "5/s burst 0"):
        with pytest.raises(ConfigError) as error:
            load(Settings, {"TICKETFLOW_RATE_LIMIT_HOLDS_PER_SUBJECT": bad})
        assert error.value.variable == "TICKETFLOW_RATE_LIMIT_HOLDS_PER_SUBJECT"


def test_json_depth_is_capped_without_recursion():
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [{"b": []}]}) == 4
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(parse_json(ok)) == MAX_JSON_DEPTH
    for raw in (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), b"[" * 10**6 + b"]" * 10**6,
                b'{"a":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(MalformedRequest) as refused:
            parse_json(raw)
        assert refused.value.code == "MALFORMED_JSON"
    assert parse_json(b'["' + b"[" * 50 + b'"]') == ["[" * 50], "brackets inside strings are not nesting"
