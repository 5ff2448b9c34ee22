#!/usr/bin/env bash
# Makes the base image that docker/Dockerfile starts FROM,
# docker.io/library/debian:bookworm-slim, out of Debian's archive with
# mmdebstrap, for podman on machines that reach no image registry (these
# development and CI machines). The Dockerfile keeps its ordinary FROM; on a
# machine with a registry, skip this script and let `docker build` pull it.
# Skips when the image exists. Needs root (or sudo), mmdebstrap and podman.
#   docker/make-base-image.sh [IMAGE]
set -euo pipefail
IMAGE=${1:-docker.io/library/debian:bookworm-slim}
# runc, cgroupfs: this VM's cgroup hybrid mode defeats crun and systemd (README, Deployment).
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
if "${PODMAN[@]}" image exists "$IMAGE"; then
  echo "make-base-image: $IMAGE exists"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase: Essential packages and apt. Like Docker's slim images, dpkg leaves
# out documentation, manual pages and translations (the rule stays in the image
# for the packages installed on top of it).
mmdebstrap --variant=minbase \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  bookworm "$work/rootfs.tar"
"${PODMAN[@]}" import --change 'CMD ["bash"]' "$work/rootfs.tar" "$IMAGE"
echo "make-base-image: $IMAGE made from Debian's archive"
