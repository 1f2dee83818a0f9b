"""Link security settings: refused at start-up, naming the variable, before any port opens."""

import os
import subprocess
import sys

import pytest

from billing_daemon.config import Settings as BillingSettings
from bridge_daemon.config import Settings as BridgeSettings
from deploy.runtime.config import ConfigError, is_loopback, load, receiver_link, sender_link
from reservation_daemon.config import Settings as ReservationSettings
from tests.support.tls import throwaway_cert as make_cert

OWN_SECRET = "an-operator-chosen-secret-0123"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_names(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "billing.internal", "192.168.1.1"])
def test_names_that_reach_beyond_this_machine(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("cls, variable", [
    (BridgeSettings, "TICKETFLOW_BRIDGE_LINK_LISTEN_HOST"),
    (BillingSettings, "TICKETFLOW_BILLING_LINK_LISTEN_HOST"),
])
def test_a_receiver_off_loopback_refuses_the_development_secret(cls, variable):
    with pytest.raises(ConfigError) as err:
        load(cls, {variable: "0.0.0.0"})
    assert err.value.variable == "TICKETFLOW_LINK_SECRET" and variable in str(err.value)
    assert "change-me" not in str(err.value)  # the secret itself is never printed
    load(cls, {variable: "0.0.0.0", "TICKETFLOW_LINK_SECRET": OWN_SECRET})  # a secret of one's own is fine
    load(cls, {variable: "127.0.0.1"})  # and the development secret on loopback


@pytest.mark.parametrize("cls, variable", [
    (ReservationSettings, "TICKETFLOW_BILLING_LINK_HOST"),
    (BillingSettings, "TICKETFLOW_BRIDGE_LINK_HOST"),
])
def test_a_sender_towards_a_remote_receiver_refuses_the_development_secret(cls, variable):
    with pytest.raises(ConfigError) as err:
        load(cls, {variable: "127.0.0.1,billing-2.internal:7101"})
    assert err.value.variable == "TICKETFLOW_LINK_SECRET" and "billing-2.internal" in str(err.value)
    load(cls, {variable: "127.0.0.1,[::1]:7101"})
    load(cls, {variable: "billing-2.internal", "TICKETFLOW_LINK_SECRET": OWN_SECRET})


def test_a_daemon_started_off_loopback_with_the_development_secret_exits_naming_the_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETFLOW_LINK")}
    env["TICKETFLOW_BRIDGE_LINK_LISTEN_HOST"] = "0.0.0.0"
    done = subprocess.run([sys.executable, "-m", "bridge_daemon"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TICKETFLOW_LINK_SECRET" in done.stderr and "TICKETFLOW_BRIDGE_LINK_LISTEN_HOST" in done.stderr


def test_tls_needs_both_certificate_and_key(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    with pytest.raises(ConfigError) as err:
        load(BridgeSettings, {"TICKETFLOW_LINK_TLS_CERT": str(cert)})
    assert err.value.variable == "TICKETFLOW_LINK_TLS_KEY"
    with pytest.raises(ConfigError) as err:
        load(BridgeSettings, {"TICKETFLOW_LINK_TLS_CERT": str(cert), "TICKETFLOW_LINK_TLS_KEY": str(cert)})
    assert err.value.variable == "TICKETFLOW_LINK_TLS_CERT"  # does not load
    with pytest.raises(ConfigError) as err:
        load(ReservationSettings, {"TICKETFLOW_LINK_TLS_CA": str(tmp_path / "missing.pem")})
    assert err.value.variable == "TICKETFLOW_LINK_TLS_CA"


def test_tls_settings_reach_the_link_settings(tmp_path):
    cert, key = make_cert(tmp_path)
    bridge = load(BridgeSettings, {"TICKETFLOW_LINK_TLS_CERT": str(cert), "TICKETFLOW_LINK_TLS_KEY": str(key),
                                   "TICKETFLOW_LINK_MAX_PENDING": "9", "TICKETFLOW_LINK_MAX_PENDING_PER_ADDRESS": "3"})
    link = receiver_link(bridge, "b")
    assert link.ssl is not None and (link.max_pending, link.max_pending_per_address) == (9, 3)
    billing = load(BillingSettings, {"TICKETFLOW_LINK_TLS_CA": str(cert), "TICKETFLOW_LINK_TLS_SERVER_NAME": "bridge"})
    out = sender_link(billing, "b")
    assert out.ssl is not None and out.server_name == "bridge"
    assert receiver_link(billing, "b").ssl is None  # TLS on billing's own port is a separate choice
    assert sender_link(load(ReservationSettings, {}), "r").ssl is None
