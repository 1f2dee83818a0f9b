#!/bin/sh
# Builds every image docker-compose.yml names, with podman (deploy/docker/podman-setup.sh first), on the local
# base BASE (default localhost/debian-base:bookworm; debian:bookworm-slim where a registry is reachable).
# TICKETFLOW_BUILD_CA: a CA bundle pip must trust (a TLS-intercepting proxy), passed as the build secret "ca";
# default: this machine's bundle. Layers are cached in podman's store: a rebuild after a code change takes seconds.
set -eu
cd "$(dirname "$0")/../.."
BASE=${BASE:-localhost/debian-base:bookworm}
TAG=${TICKETFLOW_IMAGE_TAG:-latest}
CA=${TICKETFLOW_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
set -- --format docker --build-arg "BASE=$BASE"
[ -r "$CA" ] && set -- "$@" --secret "id=ca,src=$CA"
podman build -q "$@" -t "ticketflow/app:$TAG" . >/dev/null
echo "built ticketflow/app:$TAG"
for target in etcd patroni galera rabbitmq haproxy; do
    podman build -q "$@" -f deploy/docker/Dockerfile.ha --target "$target" -t "ticketflow/$target:$TAG" . >/dev/null
    echo "built ticketflow/$target:$TAG"
done
