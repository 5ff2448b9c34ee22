#!/usr/bin/python3
"""libstreamgen_sentencepiece.so exports its factory and nothing of its own
besides (libstdc++ template instantiations aside), and, when
built from the static sentencepiece (--self-contained, the sanitizer builds),
carries sentencepiece and its protobuf-lite wholly inside itself: no
libsentencepiece or libprotobuf among its DT_NEEDED, no protobuf,
sentencepiece or absl symbol imported. That is what makes loading it without
RTLD_DEEPBIND safe next to libprotobuf 3.21 (engine/text/sentencepiece_loader.cc).

    /usr/bin/python3 tests/sanitizers/shim_exports_test.py --shim PATH (--self-contained | --system)
"""
import argparse
import re
import subprocess
import sys
import unittest

ARGS = None
FACTORY = "streamgen_new_sentencepiece_backend"


def run(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def dynamic_symbols(*flags):
    """Names from `nm -D` with the given flags (-C: demangled)."""
    names = []
    for line in run("nm", "-D", *flags, ARGS.shim).splitlines():
        fields = line.split(None, 2)
        if len(fields) == 3:
            names.append(fields[2])
        elif len(fields) == 2:  # an undefined symbol: "U name"
            names.append(fields[1])
    return names


def needed():
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run("readelf", "-d", ARGS.shim))


class ShimExportsTest(unittest.TestCase):
    def test_exports_only_the_factory(self):
        # Besides the factory, only weak instantiations of libstdc++ templates
        # (its headers give them default visibility), which equal libstdc++'s own.
        exported = [name for name in dynamic_symbols("--defined-only")
                    if name not in ("_init", "_fini") and not re.match(r"_ZN?K?St", name)]
        self.assertEqual(exported, [FACTORY])

    def test_protobuf_stays_inside(self):
        libraries = needed()
        if ARGS.self_contained:
            for library in libraries:
                self.assertNotRegex(library, r"libsentencepiece|libprotobuf", libraries)
            imported = dynamic_symbols("-C", "--undefined-only")
            foreign = [name for name in imported
                       if re.match(r"(google::protobuf|sentencepiece|absl)::", name)]
            self.assertEqual(foreign, [], "imported from outside the shim")
        else:
            self.assertTrue(any(lib.startswith("libsentencepiece.so") for lib in libraries),
                            libraries)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--shim", required=True)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--self-contained", action="store_true")
    kind.add_argument("--system", action="store_true")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
