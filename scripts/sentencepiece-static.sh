#!/usr/bin/env bash
# Builds Debian's sentencepiece 0.1.97-3 (the source of Debian 12's
# libsentencepiece0: the upstream tarball plus Debian's patches, fetched from
# Debian's archive) as two static, position-independent archives with the
# caller's compiler flags, for builds whose shim must carry sentencepiece and
# its bundled protobuf-lite inside itself (-DSTREAMGEN_SENTENCEPIECE_STATIC; see
# engine/text/CMakeLists.txt and docs/contributing.md, Sanitizers). Debian's patch
# series is applied except disable-static-library.patch (it removes the static
# targets); the headers then equal /usr/include's.
#
# Usage: scripts/sentencepiece-static.sh DEPS_DIR
#   env: CC, CXX (default gcc, g++), SPM_FLAGS (added to CFLAGS and CXXFLAGS,
#   e.g. "-fsanitize=address,undefined -O1 -g"), JOBS.
# The two tarballs are fetched into DEPS_DIR once with `apt-get source`
# (sha256 checked, as listed in Debian's sentencepiece_0.1.97-3.dsc). Writes DEPS_DIR/sentencepiece/prefix/
# {include,lib} and prints that prefix last. Rebuilds only when the compiler or
# the flags change (a stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS_DIR=${1:?usage: $0 DEPS_DIR}
VERSION=0.1.97
DEBIAN_REVISION=3
ORIG=sentencepiece_${VERSION}.orig.tar.gz
ORIG_SHA256=56430381f45dc6debfd2e0cbde4f039f9499c49ca825af184b0cbf318c17a18f
DEBIAN=sentencepiece_${VERSION}-${DEBIAN_REVISION}.debian.tar.xz
DEBIAN_SHA256=6aaa1a376752f204107e4fcb816115c4eb401dfc9ce50aa6b245e9b2ee5a63ee
CC=${CC:-gcc}
CXX=${CXX:-g++}
SPM_FLAGS=${SPM_FLAGS:-}
JOBS=${JOBS:-$(nproc)}

mkdir -p "$DEPS_DIR"
DEPS_DIR=$(cd "$DEPS_DIR" && pwd)
ROOT=$DEPS_DIR/sentencepiece
PREFIX=$ROOT/prefix
# -fvisibility=hidden: nothing of sentencepiece (nor of its protobuf-lite and
# absl copies) may be exported from the shim; --exclude-libs,ALL at the shim's
# link does the same for what the archives' headers force to default visibility.
FLAGS="-fPIC -fvisibility=hidden -fvisibility-inlines-hidden $SPM_FLAGS"
STAMP="$VERSION-$DEBIAN_REVISION|$ORIG_SHA256|$DEBIAN_SHA256|$($CC --version | head -1)|$($CXX --version | head -1)|$FLAGS"

if [ -f "$ROOT/stamp" ] && [ "$(cat "$ROOT/stamp")" = "$STAMP" ] &&
   [ -f "$PREFIX/lib/libsentencepiece.a" ] && [ -f "$PREFIX/lib/libsentencepiece_train.a" ]; then
  echo "sentencepiece-static: up to date ($PREFIX)" >&2
  echo "$PREFIX"
  exit 0
fi

# The source package comes through apt, from the archive this machine already
# uses: a deb-src entry is derived from its own main-archive entry (deb822
# .sources or a one-line sources.list) into a private apt configuration under
# DEPS_DIR (its own source list and package lists; the system's are untouched),
# then `apt-get source --download-only` fetches the .dsc and both tarballs.
# The sha256 sums above are checked on every run.
have() { [ -f "$DEPS_DIR/$1" ] && echo "$2  $DEPS_DIR/$1" | sha256sum -c --status; }
fetch_source() {
  local apt=$DEPS_DIR/apt
  rm -rf "$apt"
  mkdir -p "$apt/lists/partial" "$apt/parts" "$apt/cache/archives/partial"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk 'BEGIN { RS = ""; ORS = "\n" }
         NR == 1 { sub(/Types:[^\n]*/, "Types: deb-src"); sub(/Components:[^\n]*/, "Components: main");
                   print; exit }' /etc/apt/sources.list.d/debian.sources >"$apt/parts/src.sources"
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb [^ ]+ [^ ]+ ' /etc/apt/sources.list | grep -v -- '-security' | head -1 |
      sed -E 's/^deb ([^ ]+ [^ ]+) .*/deb-src \1 main/' >"$apt/parts/src.list"
  fi
  if [ -z "$(cat "$apt"/parts/* 2>/dev/null)" ]; then
    echo "sentencepiece-static: no Debian apt source on this machine to derive a deb-src entry from" >&2
    exit 1
  fi
  local o=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/parts"
           -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
           -o "APT::Sandbox::User=root" -q)
  echo "sentencepiece-static: fetching the source package sentencepiece=$VERSION-$DEBIAN_REVISION with apt" >&2
  apt-get "${o[@]}" update >&2
  (cd "$DEPS_DIR" && apt-get "${o[@]}" source --download-only "sentencepiece=$VERSION-$DEBIAN_REVISION" >&2)
}
if ! have "$ORIG" "$ORIG_SHA256" || ! have "$DEBIAN" "$DEBIAN_SHA256"; then
  fetch_source
fi
for pair in "$ORIG $ORIG_SHA256" "$DEBIAN $DEBIAN_SHA256"; do
  set -- $pair
  if ! have "$1" "$2"; then
    echo "sentencepiece-static: $DEPS_DIR/$1 is missing or does not have sha256 $2" >&2
    exit 1
  fi
done

rm -rf "$ROOT"
mkdir -p "$ROOT/src" "$ROOT/debian" "$PREFIX/lib" "$PREFIX/include"
tar -xzf "$DEPS_DIR/$ORIG" -C "$ROOT/src" --strip-components=1
tar -xJf "$DEPS_DIR/$DEBIAN" -C "$ROOT/debian" --strip-components=1
while read -r patch; do
  case $patch in '' | '#'* | disable-static-library.patch) continue ;; esac
  patch -d "$ROOT/src" -p1 -s --no-backup-if-mismatch <"$ROOT/debian/patches/$patch"
done <"$ROOT/debian/patches/series"
LAUNCHER=()
if command -v ccache >/dev/null 2>&1; then
  LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# sentencepiece puts "-O3 -Wall -fPIC" before CMAKE_CXX_FLAGS, so an -O in
# SPM_FLAGS wins. No tcmalloc (it would replace the sanitizers' allocator).
CC=$CC CXX=$CXX cmake -S "$ROOT/src" -B "$ROOT/build" -G Ninja "${LAUNCHER[@]}" \
  -DCMAKE_BUILD_TYPE=None -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DSPM_ENABLE_SHARED=OFF -DSPM_ENABLE_TCMALLOC=OFF -DSPM_BUILD_TEST=OFF \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON >&2
# Only the two libraries, not the spm_* command-line programs.
cmake --build "$ROOT/build" -j"$JOBS" --target sentencepiece-static sentencepiece_train-static >&2
cp "$ROOT/build/src/libsentencepiece.a" "$ROOT/build/src/libsentencepiece_train.a" "$PREFIX/lib/"
cp "$ROOT/src/src/sentencepiece_processor.h" "$ROOT/src/src/sentencepiece_trainer.h" \
  "$PREFIX/include/"
for header in sentencepiece_processor.h sentencepiece_trainer.h; do
  if [ -f /usr/include/$header ] && ! cmp -s /usr/include/$header "$PREFIX/include/$header"; then
    echo "sentencepiece-static: warning: $header differs from /usr/include's (has Debian's" \
         "libsentencepiece-dev moved past $VERSION-$DEBIAN_REVISION?)" >&2
  fi
done
echo "$STAMP" >"$ROOT/stamp"
echo "sentencepiece-static: built $PREFIX" >&2
echo "$PREFIX"
