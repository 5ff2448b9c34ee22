# Sourced by the build scripts. ccache keys on the compiler's command line,
# which holds absolute include paths, and (for -g builds) on the working
# directory: with these two settings a fresh clone in another folder (CI's)
# hits the cache that earlier builds of any clone filled. Paths inside the
# repository are rewritten relative to it; debug info then names files
# relative to the build folder.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
# Main, sanitizer, fuzz and sentencepiece builds together need more than
# ccache's default 5 GB; set once, kept in ccache's own configuration.
if command -v ccache >/dev/null 2>&1 && [ -z "${CCACHE_MAXSIZE:-}" ]; then
  case $(ccache --get-config max_size 2>/dev/null) in
    5.0G|5G|"") ccache --max-size=20G >/dev/null 2>&1 || true ;;
  esac
fi
