#!/bin/sh
# Makes this (Debian, root) machine able to build and run docker-compose.yml with podman: no Docker engine and
# no image registry needed. Idempotent; each step is skipped when already done.
#   1. apt-get install podman runc debootstrap, and netavark + aardvark-dns (Debian's own packages): podman's
#      default CNI backend without the dnsname plugin gives containers no service-name DNS;
#   2. a containers.conf (in .podman/ of the checkout) that runs containers with runc and explicit ulimits:
#      crun refuses to start containers on this kind of VM's cgroup setup, and without it `podman-compose up`
#      hangs instead of failing. Point podman at it with CONTAINERS_CONF (printed at the end; the Makefile does);
#   3. the base image localhost/debian-base:bookworm, built with debootstrap from Debian's mirror and imported
#      (the Dockerfiles take it as --build-arg BASE=...; with a registry they use debian:bookworm-slim);
#   4. podman-compose into the checkout's virtualenv (the `compose` extra of pyproject.toml), when there is one.
set -eu
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BASE_IMAGE=${TICKETFLOW_BASE_IMAGE:-localhost/debian-base:bookworm}
MIRROR=${TICKETFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONF_DIR="$ROOT/.podman"
CONF="$CONF_DIR/containers.conf"

if [ "$(id -u)" != 0 ]; then
    echo "podman-setup: run as root (podman runs the stack's containers rootful here)" >&2
    exit 1
fi

missing=""
for tool in podman:podman runc:runc debootstrap:debootstrap /usr/lib/podman/netavark:netavark \
        /usr/lib/podman/aardvark-dns:aardvark-dns; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "${tool%%:*}" ] || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    echo "podman-setup: apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

mkdir -p "$CONF_DIR"
cat > "$CONF.tmp" <<CONF
# Written by deploy/docker/podman-setup.sh; used through CONTAINERS_CONF=$CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
# No systemd inside this VM's containers' host: plain cgroupfs and a file event log.
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# netavark + aardvark-dns: containers of one compose project find each other by service name.
[network]
network_backend = "netavark"
CONF
mv "$CONF.tmp" "$CONF"
export CONTAINERS_CONF="$CONF"

if ! podman image exists "$BASE_IMAGE"; then
    rootfs="$CONF_DIR/rootfs"
    rm -rf "$rootfs"
    echo "podman-setup: debootstrap --variant=minbase bookworm (about 30 s)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CONF_DIR/debootstrap.log" 2>&1 || {
        tail -20 "$CONF_DIR/debootstrap.log" >&2; exit 1; }
    # What debian:bookworm-slim also does: no apt caches kept, no docs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE"
    rm -rf "$rootfs"
fi

if [ -x "$ROOT/.venv/bin/pip" ] && ! [ -x "$ROOT/.venv/bin/podman-compose" ]; then
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[compose]"
fi
echo "podman-setup: ready; export CONTAINERS_CONF=$CONF"
