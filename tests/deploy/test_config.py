"""Settings from TICKETFLOW_* variables: defaults, parsing, errors that name the variable."""

from dataclasses import dataclass

import pytest

from deploy.runtime.config import ConfigError, describe, load, port, positive_int, secret, setting


@dataclass(frozen=True)
class Example:
    listen_port: int = setting("TICKETFLOW_EXAMPLE_PORT", 8083, port, "HTTP port")
    window: int = setting("TICKETFLOW_EXAMPLE_WINDOW", 256, positive_int)
    key: bytes = setting("TICKETFLOW_EXAMPLE_SECRET", b"d" * 16, secret)


def test_defaults_apply_when_unset():
    assert load(Example, {}) == Example()


def test_values_are_parsed():
    assert load(Example, {"TICKETFLOW_EXAMPLE_PORT": "9000", "TICKETFLOW_EXAMPLE_WINDOW": " 8 "}).listen_port == 9000


@pytest.mark.parametrize(
    "variable, value",
    [("TICKETFLOW_EXAMPLE_PORT", "70000"), ("TICKETFLOW_EXAMPLE_PORT", "http"),
     ("TICKETFLOW_EXAMPLE_WINDOW", "0"), ("TICKETFLOW_EXAMPLE_SECRET", "short")],
)
def test_a_bad_value_fails_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as err:
        load(Example, {variable: value})
    assert err.value.variable == variable
    assert variable in str(err.value)


def test_describe_lists_every_variable_with_its_default():
    assert [row[0] for row in describe(Example)] == [
        "TICKETFLOW_EXAMPLE_PORT", "TICKETFLOW_EXAMPLE_WINDOW", "TICKETFLOW_EXAMPLE_SECRET"]


@pytest.mark.parametrize("module", ["reservation_daemon.config", "billing_daemon.config", "bridge_daemon.config",
                                    "portal_consumer.config"])
def test_every_daemon_refuses_a_log_level_it_does_not_know(module):
    import importlib

    settings = importlib.import_module(module).Settings
    assert load(settings, {"TICKETFLOW_LOG_LEVEL": "WARNING"}).log_level == "warning"
    with pytest.raises(ConfigError) as err:
        load(settings, {"TICKETFLOW_LOG_LEVEL": "loud"})
    assert err.value.variable == "TICKETFLOW_LOG_LEVEL"
