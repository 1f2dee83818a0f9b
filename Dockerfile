# syntax=docker/dockerfile:1
# TicketFlow: ONE image with the four daemons and the `ticketflow` CLI.
#   docker build -t ticketflow .
#   docker run ticketflow python -m reservation_daemon        (or billing_daemon, bridge_daemon, portal_consumer)
# Every daemon listens on 0.0.0.0:8080 in the container (TICKETFLOW_*_PORT), which the HEALTHCHECK asks for
# GET /ready; the links listen on 7001 (billing) and 7002 (bridge). docker-compose.yml runs the whole HA
# topology with it. Without a registry, build from a local Debian base (deploy/docker/podman-setup.sh):
#   podman build --build-arg BASE=localhost/debian-base:bookworm -t ticketflow .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The dependencies of pyproject.toml in their own layer: a code change does not reinstall them.
WORKDIR /opt/ticketflow
COPY pyproject.toml README.md ./
# Behind a TLS-intercepting proxy, pass its CA bundle as the build secret "ca" (podman/docker build
# --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt); without it pip uses the image's own CAs.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -q --no-cache-dir --upgrade pip setuptools \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -q --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY protocol protocol
COPY deploy deploy
COPY reservation_daemon reservation_daemon
COPY billing_daemon billing_daemon
COPY bridge_daemon bridge_daemon
COPY portal_consumer portal_consumer
# Editable: the packages' SQL files and migrations are used in place; this adds the `ticketflow` script.
RUN /opt/venv/bin/pip install -q --no-cache-dir --no-deps --no-build-isolation -e . \
 && python3 -m compileall -q /opt/ticketflow

# Non-root; /var/lib/ticketflow holds the shared keys and the mock gateway's ledger (volumes in compose).
RUN useradd --system --home-dir /var/lib/ticketflow --create-home ticketflow \
 && mkdir -p /var/lib/ticketflow/keys /var/lib/ticketflow/gateway \
 && chown -R ticketflow:ticketflow /var/lib/ticketflow
USER ticketflow

ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    TICKETFLOW_STACK_DIR=/var/lib/ticketflow TICKETFLOW_DRILL_REPORTS_DIR=/var/lib/ticketflow/drills \
    TICKETFLOW_RESERVATION_HOST=0.0.0.0 TICKETFLOW_RESERVATION_PORT=8080 \
    TICKETFLOW_BILLING_HOST=0.0.0.0 TICKETFLOW_BILLING_PORT=8080 \
    TICKETFLOW_BRIDGE_HOST=0.0.0.0 TICKETFLOW_BRIDGE_PORT=8080 \
    TICKETFLOW_PORTAL_HOST=0.0.0.0 TICKETFLOW_PORTAL_PORT=8080 \
    TICKETFLOW_BILLING_LINK_LISTEN_HOST=0.0.0.0 TICKETFLOW_BRIDGE_LINK_LISTEN_HOST=0.0.0.0
EXPOSE 8080 7001 7002
# The daemons' own readiness (database, schema, broker), not just a listening socket.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2)"]
COPY deploy/docker/app-entrypoint.sh /usr/local/bin/tf-entrypoint
ENTRYPOINT ["tf-entrypoint"]
CMD ["ticketflow", "--help"]
