#!/usr/bin/env bash
# Installs every build and test dependency of streamgen from Debian's packages
# (Debian 12). Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
# --cuda-toolkit (opt-in, issue 13): also Debian 12's nvidia-cuda-toolkit
# (nvcc 11.8, from the archive's contrib and non-free components, which this
# enables by copying the machine's own main-archive source entry; ~170 MB
# installed), so that scripts/cuda-compile-check.sh compiles the CUDA kernels
# on a machine with no GPU. Its host compiler is clang-14 (nvcc 11.8 refuses
# gcc 12). CI's `cuda` job (scripts/test.sh) passes it.
# --build-only: just what building and running the server, the client and
# the tools needs (scripts/quickstart.sh); the test tools below are skipped.
CUDA_TOOLKIT=0
BUILD_ONLY=0
for arg in "$@"; do
  case $arg in
    --cuda-toolkit) CUDA_TOOLKIT=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    *) echo "install-deps: unknown argument '$arg' (want --cuda-toolkit or --build-only)" >&2; exit 2 ;;
  esac
done

BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  # Without an optimized BLAS, Debian's libtorch runs on the reference BLAS:
  # 2.5x slower at batch 1 and 25x slower at batch 16 (bench/README.md).
  libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libsentencepiece-dev libabsl-dev libspdlog-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libcpp-httplib-dev
  # libcrypto: the API keys' SHA-256 digests and CRYPTO_memcmp (server/auth.cc).
  libssl-dev
  # tokenizer.json: PCRE2 runs the pre-tokenizer regexes, ICU normalizes text
  # (engine/text/hf_text.h).
  libpcre2-dev libicu-dev
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
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
  # llama.cpp as the reference (tests/llamacpp/): its gguf-py needs numpy, and the
  # fixture's vocabulary is read as its converter reads it, with sentencepiece.
  python3-numpy python3-sentencepiece
)
# Node and npm from Debian where the machine has no Node of its own (the
# development image ships Node 20 with npm; Debian 12's nodejs is 18.19).
if ! command -v node >/dev/null 2>&1; then PACKAGES+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi

if [ $BUILD_ONLY -eq 1 ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); fi
if [ $CUDA_TOOLKIT -eq 1 ]; then PACKAGES+=(nvidia-cuda-toolkit); fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# contrib + non-free next to the configured main archive, same mirror, suites
# and key (deb822 .sources as on Debian 12 images, or a one-line sources.list).
enable_contrib_non_free() {
  local dir=/etc/apt/sources.list.d
  if grep -rqsE '^(Components:.*non-free|deb .* non-free)' /etc/apt/sources.list "$dir"; then
    return 0
  fi
  if [ -f "$dir/debian.sources" ]; then
    awk 'BEGIN { RS = ""; ORS = "\n" }
         NR == 1 { sub(/Components:[^\n]*/, "Components: contrib non-free"); print; exit }' \
      "$dir/debian.sources" | $SUDO tee "$dir/streamgen-contrib-non-free.sources" >/dev/null
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb [^ ]+ [^ ]+ ' /etc/apt/sources.list | grep -v -- '-security' |
      sed -E 's/^(deb [^ ]+ [^ ]+) .*/\1 contrib non-free/' |
      $SUDO tee "$dir/streamgen-contrib-non-free.list" >/dev/null
  else
    echo "install-deps: no apt source to copy for contrib/non-free" >&2
    exit 1
  fi
  echo "install-deps: enabled contrib and non-free (for nvidia-cuda-toolkit)"
}

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
if [[ " ${missing[*]} " == *" nvidia-cuda-toolkit "* ]]; then enable_contrib_non_free; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
