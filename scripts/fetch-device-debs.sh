#!/usr/bin/env bash
# Downloads (apt-get download, no install) the Debian 12 packages that a GPU
# machine without a package registry needs to build and run streamgen, except
# libtorch (PyTorch's own libtorch is used there): gRPC, protobuf, abseil,
# sentencepiece, spdlog + fmt, nlohmann-json, googletest, cpp-httplib, OpenSSL's
# headers, pkgconf, and the closure of their runtime dependencies, minus the
# base system (libc, libgcc, libstdc++, the compilers, perl, python) that every
# such machine has. scripts/device-check.sh unpacks them there with `dpkg -x`.
#
# Usage: scripts/fetch-device-debs.sh [DIR]      (DIR: build-device-debs)
# Idempotent: a .deb already in DIR is not fetched again; .debs of versions no
# longer wanted are removed. Writes DIR/MANIFEST.txt (package, version, file,
# bytes) and prints the total size, which must stay well under the device
# machine's 64 MiB carry limit (the tracked tree takes ~14 MB of it).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build-device-debs}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
LIMIT_BYTES=$((45 * 1024 * 1024))

# What the project installs (scripts/install-deps.sh) and its CMake files find,
# for building and running; not the test-only tools (curl, nginx, podman, node,
# chromium, clang), not libtorch, not python.
ROOTS=(
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc grpc-proto
  libprotobuf-dev protobuf-compiler libprotoc-dev
  libabsl-dev libsentencepiece-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libcpp-httplib-dev libssl-dev zlib1g-dev
  libpcre2-dev libicu-dev
  pkgconf-bin
)
# The base system of any Linux machine with a C++ toolchain (the device's own
# are newer), and what only Debian's packaging needs. Their dependencies are not
# followed. catch2: libspdlog-dev's tests only.
EXCLUDE_RE='^(libc6|libc6-dev|libc-dev-bin|libc-bin|libc-dev|linux-libc-dev|libcrypt1|libcrypt-dev|libnsl2|libnsl-dev|libtirpc3|libtirpc-dev|libtirpc-common|rpcsvc-proto|libgcc-s1|libgcc-[0-9]+-dev|gcc-[0-9]+-base|libstdc\+\+6|libstdc\+\+-[0-9]+-dev|gcc|gcc-[0-9]+|g\+\+|g\+\+-[0-9]+|cpp|cpp-[0-9]+|binutils.*|perl|perl-base|perl-modules.*|libperl.*|python3.*|libpython3.*|debconf|dpkg|install-info|tar|coreutils|bash|dash|sensible-utils|init-system-helpers|catch2|pkgconf|pkg-config)$'

# Breadth-first over Depends and Pre-Depends, one apt-cache call per level; a
# virtual package stands for its first provider (of the roots' dependencies
# only libc-dev is virtual, and it is excluded).
declare -A seen=()
level=("${ROOTS[@]}")
wanted=()
while [ ${#level[@]} -gt 0 ]; do
  todo=()
  for pkg in "${level[@]}"; do
    [ -n "${seen[$pkg]:-}" ] && continue
    seen[$pkg]=1
    [[ $pkg =~ $EXCLUDE_RE ]] || todo+=("$pkg")
  done
  level=()
  [ ${#todo[@]} -gt 0 ] || break
  while read -r kind name; do
    case $kind in
      pkg) wanted+=("$name") ;;
      dep) level+=("$name") ;;
    esac
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
             --no-replaces --no-enhances "${todo[@]}" 2>/dev/null | awk '
    /^[^ ]/ { virtual = ($1 ~ /^</); name = $1; gsub(/[<>]/, "", name); sub(/:.*/, "", name)
              if (!virtual) print "pkg", name; next }
    virtual && $1 ~ /^[^ ]/ { next }
    $1 == "Depends:" || $1 == "PreDepends:" { d = $2; gsub(/[<>]/, "", d); sub(/:.*/, "", d); print "dep", d }
    virtual { print "dep", $1 }')
done
mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)

# File name and size of the candidate version of each package (one call).
manifest=$DIR/MANIFEST.txt.part
apt-cache show --no-all-versions "${wanted[@]}" |
  awk '/^Package:/{p=$2} /^Version:/{v=$2} /^Filename:/{f=$2} /^Size:/{s=$2}
       /^$/ && p {print p, v, f, s; p=""} END{if (p) print p, v, f, s}' > "$manifest.show"
if [ "$(wc -l < "$manifest.show")" != "${#wanted[@]}" ]; then
  echo "fetch-device-debs: apt-cache show did not list all ${#wanted[@]} packages" >&2
  exit 1
fi
: > "$manifest"
declare -A keep=()
fetched=0
while read -r pkg version file size; do
  base=$(basename "$file")  # the pool's name (apt-get download adds the epoch)
  keep[$base]=1
  if [ ! -f "$DIR/$base" ] || [ "$(stat -c %s "$DIR/$base")" != "$size" ]; then
    rm -rf "$DIR/.part" && mkdir -p "$DIR/.part"
    (cd "$DIR/.part" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >/dev/null) || {
      echo "fetch-device-debs: apt-get download $pkg=$version failed (apt-get update?)" >&2
      exit 1
    }
    mv "$DIR"/.part/*.deb "$DIR/$base"
    fetched=$((fetched + 1))
  fi
  printf '%s\t%s\t%s\t%s\n' "$pkg" "$version" "$base" "$size" >> "$manifest"
done < "$manifest.show"
rm -rf "$DIR/.part" "$manifest.show"
# .debs that no longer belong (an older version, a package dropped).
for f in "$DIR"/*.deb; do
  [ -e "$f" ] || continue
  [ -n "${keep[$(basename "$f")]:-}" ] || { echo "fetch-device-debs: removing stale $(basename "$f")"; rm -f "$f"; }
done
total=$(cat "$DIR"/*.deb | wc -c)
{
  echo "# streamgen device packages: Debian $(cat /etc/debian_version 2>/dev/null), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# roots: ${ROOTS[*]}"
  echo "# excluded (base system, not followed): $EXCLUDE_RE"
  echo "# ${#wanted[@]} packages, $total bytes"
  printf '# package\tversion\tfile\tbytes\n'
  cat "$manifest"
} > "$DIR/MANIFEST.txt"
rm -f "$manifest"
echo "fetch-device-debs: ${#wanted[@]} packages in $DIR ($fetched fetched now), $total bytes" \
     "($(awk -v b="$total" 'BEGIN{printf "%.1f", b / 1048576}') MiB)"
if [ "$total" -gt "$LIMIT_BYTES" ]; then
  echo "fetch-device-debs: more than $((LIMIT_BYTES / 1048576)) MiB: too much to carry to the device" >&2
  exit 1
fi
# The shared golden fixture travels with the packages (18 MB; the device's copy
# of the tree has no ../shared): scripts/device-check.sh links it to
# ../shared/fixtures/tiny-llama there, where the tests look. Never committed:
# build-device-debs/ is ignored. Packages + fixture + the tree stay under the
# device's 64 MiB.
FIXTURE=$(pwd)/../shared/fixtures/tiny-llama
if [ -f "$FIXTURE/golden.json" ]; then
  rm -rf "$DIR/fixtures/tiny-llama" && mkdir -p "$DIR/fixtures" && cp -r "$FIXTURE" "$DIR/fixtures/"
  echo "fetch-device-debs: copied the tiny-llama fixture ($(du -sm "$DIR/fixtures/tiny-llama" | cut -f1) MB) for the device"
else
  echo "fetch-device-debs: no $FIXTURE: the device's golden test will skip"
fi
