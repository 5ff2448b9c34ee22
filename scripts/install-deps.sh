#!/usr/bin/env bash
# Installs every build and test dependency of streamgen from Debian's packages
# (Debian 12). Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  # Without an optimized BLAS, Debian's libtorch runs on the reference BLAS:
  # measured here, 2.5x slower at batch 1 and 25x slower at batch 16.
  libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libsentencepiece-dev libabsl-dev libspdlog-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libcpp-httplib-dev
  # libcrypto: the API keys' SHA-256 digests and CRYPTO_memcmp (server/auth.cc).
  libssl-dev
  python3 python3-grpcio python3-protobuf python3-jinja2 openssl
  # The HTTP face's tests: real clients (curl, python3-requests as the seed's
  # client, the openai npm package on Node, playwright-core driving chromium).
  curl python3-requests chromium
  # The gateway's test (tests/gateway_test.py): Debian's nginx in front of two
  # servers (it runs its own nginx on free ports, not the package's service).
  nginx
  # The container tests: podman builds and runs docker/Dockerfile (with runc:
  # crun fails on these VMs), mmdebstrap makes its base image from Debian's
  # archive (docker/make-base-image.sh), python3-yaml reads the compose and
  # Kubernetes files (tests/deploy_yaml_test.py).
  podman runc mmdebstrap iptables python3-yaml
  # Fuzzing (scripts/fuzz.sh): g++ has no libFuzzer; clang-14 and its runtimes
  # (libFuzzer, ASan, UBSan are in libclang-rt-14-dev) build the fuzz targets.
  clang-14 libclang-rt-14-dev
)
# Node and npm from Debian where the machine has no Node of its own (the
# development image ships Node 20 with npm; Debian 12's nodejs is 18.19).
if ! command -v node >/dev/null 2>&1; then PACKAGES+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
