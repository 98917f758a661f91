#!/usr/bin/env bash
# A stand-in for the Dockerfiles' base image (python:3.11-slim), for machines that reach Debian's
# packages but no image registry (this project's CI). Debian bookworm's own Python 3.11 with pip and
# venv, from this machine's apt sources, imported into the given podman store under the name the
# Dockerfiles expect. A user with a registry pulls the real base instead.
#   tests/cluster/node/base-image.sh PODMAN_ARGS... (e.g. --root .cache/containers/storage)
set -euo pipefail
name=${BASE_IMAGE:-docker.io/library/python:3.11-slim}
if podman "$@" image exists "$name"; then
  echo "base image $name: present"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "base image $name: building a stand-in with mmdebstrap (Debian bookworm's python3.11)"
mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs.tar"
podman "$@" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$work/rootfs.tar" "$name" >/dev/null
echo "base image $name: imported ($(podman "$@" image inspect --format '{{.Size}}' "$name" | numfmt --to=iec))"
