"""deploy.runtime.times: the one way daemons write and read RFC 3339 times."""

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from deploy.runtime.times import naive_utc, parse_rfc3339, rfc3339

MOMENT = datetime(2026, 11, 24, 20, 0, 0, 5, tzinfo=timezone.utc)


def test_one_format_from_aware_naive_and_epoch():
    text = "2026-11-24T20:00:00.000005Z"
    assert rfc3339(MOMENT) == text
    assert rfc3339(MOMENT.replace(tzinfo=None)) == text, "naive is UTC (MariaDB DATETIME)"
    assert rfc3339(MOMENT.astimezone(timezone(timedelta(hours=2)))) == text
    assert rfc3339(MOMENT.timestamp()) == text
    assert rfc3339(1_800_000_000) == "2027-01-15T08:00:00.000000Z"
    assert rfc3339(None) is None


def test_reading_back():
    assert parse_rfc3339("2026-11-24T22:00:00.000005+02:00") == MOMENT
    assert naive_utc("2026-11-24T20:00:00.000005Z") == MOMENT.replace(tzinfo=None)
    assert naive_utc(MOMENT.timestamp()) == MOMENT.replace(tzinfo=None)


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(timezone.utc)))
def test_written_times_read_back_exactly(moment):
    assert parse_rfc3339(rfc3339(moment)) == moment
