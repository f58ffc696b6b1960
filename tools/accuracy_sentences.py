"""A deterministic set of varied English sentences for tools/accuracy, built from local text only.

Sources (nothing is downloaded; everything ships with Python or with this repo):

  * pydoc_data.topics: the Python Language Reference prose that `help()` shows (79 topics);
  * the docstrings of a fixed list of standard-library modules (STDLIB_MODULES), read from their
    source files with `ast` (never imported, so no import side effects and no platform variance);
  * tests/fixtures/texts.json (the engine's reference texts);
  * sentence templates filled from small word lists with a seeded random.Random, for short
    everyday sentences (the documentation prose is all technical).

The prose is cleaned of reStructuredText markup (``x``, :func:`x`, *x*), split into paragraphs
(indented blocks, i.e. code, grammar rules and parameter lists, are dropped) and then into
sentences. `plausible_english` keeps only sentences that look like English prose: capitalized
start, final punctuation, mostly lowercase alphabetic words, no code-like tokens (dotted names,
calls, underscores, operators). Long texts (31 to 200 words) are runs of consecutive sentences of
one source (a pydoc topic or one docstring), in reading order.

Selection is by length bucket (LENGTH_BUCKETS: word counts 3..200 with target shares), taking
candidates in the order of the sha256 of their text, so it depends on nothing but the texts
themselves (not on dict or file-system order); a source sentence is used in at most one selected
text, and no text appears twice. The same Python version therefore yields the same file, byte for
byte; its sha256 is recorded in every report. Queries for the retrieval test are short spans of
words cut from selected sentences with a seeded random.Random.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from common import REPO_DIR

SEED = 20261126
FIXTURE_TEXTS = REPO_DIR / "tests" / "fixtures" / "texts.json"

# (min words, max words, share of the set). Shares sum to 1; the long tail is smaller, as in
# real passage collections, but every bucket is well populated.
LENGTH_BUCKETS = [
    (3, 7, 0.16),
    (8, 15, 0.27),
    (16, 30, 0.27),
    (31, 60, 0.17),
    (61, 120, 0.09),
    (121, 200, 0.04),
]
TEMPLATE_SHARE = 0.12  # of the set; counted against the buckets the templates fall into

# Standard-library modules whose docstrings are used (pure-Python modules present in every
# CPython 3.11+ build). Listed, not discovered, so the set does not depend on the installation.
STDLIB_MODULES = [
    "abc", "argparse", "ast", "asyncio/events", "asyncio/locks", "asyncio/queues", "asyncio/tasks",
    "base64", "bisect", "calendar", "cmd", "codecs", "collections/__init__", "colorsys",
    "concurrent/futures/_base", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "doctest", "email/message", "email/utils", "enum",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob",
    "gzip", "hashlib", "heapq", "hmac", "html/parser", "http/client", "http/cookiejar",
    "http/server", "imaplib", "inspect", "ipaddress", "json/__init__", "json/decoder",
    "logging/__init__", "logging/handlers", "mailbox", "mimetypes", "multiprocessing/pool",
    "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "poplib", "pprint", "queue", "random", "re/__init__", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3/__init__",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "typing", "unittest/case", "unittest/mock",
    "urllib/parse", "urllib/request", "uuid", "warnings", "wave", "weakref", "xml/dom/minidom",
    "zipfile", "zipimport",
    "asyncio/base_events", "asyncio/futures", "asyncio/streams", "asyncio/subprocess", "bdb",
    "codeop", "compileall", "concurrent/futures/process", "concurrent/futures/thread", "copyreg",
    "dis", "email/feedparser", "email/generator", "email/headerregistry", "email/policy",
    "filecmp", "getpass", "graphlib", "http/cookies", "importlib/__init__", "importlib/abc",
    "importlib/_bootstrap", "json/encoder", "linecache", "locale", "logging/config", "lzma",
    "modulefinder", "multiprocessing/connection", "multiprocessing/managers",
    "multiprocessing/process", "multiprocessing/queues", "multiprocessing/synchronize", "pdb",
    "pickletools", "plistlib", "posixpath", "profile", "pstats", "py_compile", "pyclbr", "pydoc",
    "quopri", "reprlib", "rlcompleter", "runpy", "site", "stat", "symtable", "sysconfig",
    "tabnanny", "tracemalloc", "turtle", "types", "unittest/loader", "unittest/result",
    "unittest/runner", "unittest/suite", "urllib/robotparser", "webbrowser", "wsgiref/handlers",
    "xml/etree/ElementTree", "xml/sax/handler", "xml/sax/saxutils", "xmlrpc/client",
    "xmlrpc/server", "zipapp",
]

# Words that end in a period without ending a sentence.
ABBREVIATIONS = ["e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Mrs.", "Dr.", "St.", "approx.", "no.", "No."]


# ------------------------------------------------------------------------------------------------
# Cleaning and splitting prose


def clean_markup(text: str) -> str:
    """Strip reStructuredText inline markup, keeping the words it wraps."""
    text = re.sub(r":[a-z:]+:`~?!?([^`<]*?)\s*(?:<[^`]*>)?`", r"\1", text)  # :func:`name <target>`
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`]*)`_?", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"(?<!\w)\*([^*\s][^*]*)\*(?!\w)", r"\1", text)
    text = re.sub(r"\[\d+\]_?", "", text)  # footnote references
    return re.sub(r"\s+", " ", text).strip()


def paragraphs(text: str) -> list[str]:
    """Unindented paragraphs of a text, each joined onto one line.

    Indented lines are code examples, grammar productions, option and parameter lists: a
    paragraph with any indented line, an interactive prompt or a heading underline is dropped.
    """
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not block.strip():
            continue
        if any(l[:1].isspace() for l in lines if l.strip()):
            continue
        if any(l.lstrip().startswith((">>>", "...", "$ ", "#")) for l in lines):
            continue
        if any(re.fullmatch(r"\s*([*=\-~^+#])\1{2,}\s*", l) for l in lines):
            continue
        out.append(" ".join(l.strip() for l in lines))
    return out


_SPLIT = re.compile(r"(?<=[.!?])[\"')]?\s+(?=[\"'(]?[A-Z])")


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph at ., ! or ? followed by a capital letter, not after an abbreviation."""
    protected = paragraph
    for i, abbr in enumerate(ABBREVIATIONS):
        protected = re.sub(rf"(?<!\w){re.escape(abbr)}", f"\x00{i}\x00", protected)
    out = []
    for s in _SPLIT.split(protected):
        s = re.sub(r"\x00(\d+)\x00", lambda m: ABBREVIATIONS[int(m.group(1))], s).strip()
        if s:
            out.append(s)
    return out


# Tokens that give away code rather than prose.
_CODE = re.compile(
    r"[{}\[\]<>=\\|#@$^~_`]"  # brackets, operators, underscores, markup leftovers
    r"|\w\(|\(\)"  # calls
    r"|\w\.\w"  # dotted names (os.path, 3.11)
    r"|::|->|\+\+|--|//|/\w|\w/"  # paths, operators
    r"|\b[a-z]+[A-Z]\w*"  # camelCase
    r"|\b(?:def|elif|lambda|self|cls|args|kwargs|str|int|bool|dict|tuple|None|True|False)\b"
)


def plausible_english(s: str) -> bool:
    """True for a sentence that reads as English prose, not code, a heading or a fragment."""
    words = s.split()
    if not 3 <= len(words) <= 200:
        return False
    if not re.match(r"[\"'(]?[A-Z]", s) or not re.search(r"[.!?][\"')]?$", s):
        return False
    if _CODE.search(s):
        return False
    if not s.isascii():
        return False
    if any(len(w) > 24 for w in words):
        return False
    letters = sum(c.isalpha() for c in s)
    if letters < 0.8 * sum(not c.isspace() for c in s):
        return False
    # Most words must be ordinary lowercase words (not identifiers, constants or numbers).
    plain = sum(bool(re.fullmatch(r"[\"'(]?[a-z]+(?:'[a-z]+)?[.,;:!?\"')]*", w)) for w in words)
    return plain >= 0.6 * len(words)


# ------------------------------------------------------------------------------------------------
# Sources


def pydoc_paragraphs() -> list[tuple[str, str]]:
    """(source id, paragraph) for every prose paragraph of pydoc_data.topics, in topic-name order."""
    from pydoc_data.topics import topics

    return [(f"pydoc:{name}", p) for name in sorted(topics) for p in paragraphs(topics[name])]


def docstring_paragraphs() -> list[tuple[str, str]]:
    """(source id, paragraph) for the docstrings of STDLIB_MODULES (module, classes, functions)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for mod in STDLIB_MODULES:
        path = stdlib / f"{mod}.py"
        if not path.exists():
            continue  # a module removed in some future Python: the report's sha256 will show it
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [tree] + [n for n in ast.walk(tree)
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if doc:
                # One source per docstring (the line number tells same-named methods apart).
                where = f"{node.name}@{node.lineno}" if hasattr(node, "name") else "module"
                out += [(f"doc:{mod}:{where}", p) for p in paragraphs(doc)]
    return out


def fixture_texts() -> list[str]:
    return [t for t in json.loads(FIXTURE_TEXTS.read_text()) if isinstance(t, str)]


# Templates for short everyday sentences: {slot} is filled from WORDS[slot].
TEMPLATES = [
    "The {adj} {noun} {verb_past} the {noun2} {place}.",
    "My {person} {verb_past} a {adj} {noun} {time}.",
    "Why did the {person} leave the {noun} {place}?",
    "We should {verb} the {noun} before {time_future}.",
    "A {adj} {noun} is easier to {verb} than a {adj2} one.",
    "{Name} {verb_past} the {noun} {place} {time}, and nobody noticed.",
    "Can you {verb} the {adj} {noun} for me?",
    "The {person} said that the {noun} was too {adj} to {verb}.",
    "{Name} and her {person} {verb_past} {place} {time}.",
    "After the storm, the {noun} {place} looked {adj}.",
    "How long does it take to {verb} a {noun}?",
    "If the {noun} is {adj}, {verb} it {time_future}.",
    "Everyone in the {group} agreed that the {noun} {verb_past_intr}.",
    "The report {verb_past_intr} because the {noun} was {adj}.",
    "I think the {adj} {noun} belongs to the {person} who lives {place}.",
    "{Name} never expected the {group} to {verb} such a {adj} {noun}.",
    "When the {person} {verb_past} the {noun}, the {group} {verb_past_intr}.",
    "Please {verb} the {noun} and tell the {person} about it {time_future}.",
]
WORDS = {
    "adj": ["old", "quiet", "bright", "heavy", "broken", "famous", "tiny", "expensive", "green", "strange",
            "careful", "ancient", "noisy", "fresh", "empty", "wooden", "friendly", "dusty"],
    "noun": ["bicycle", "letter", "garden", "engine", "painting", "bridge", "recipe", "contract", "window",
             "violin", "lantern", "map", "harvest", "parcel", "ladder", "kettle", "telescope", "novel"],
    "verb": ["repair", "paint", "carry", "sell", "describe", "measure", "wash", "explain", "deliver",
             "replace", "open", "photograph", "borrow", "inspect"],
    "verb_past": ["repaired", "painted", "carried", "sold", "described", "measured", "washed", "found",
                  "delivered", "replaced", "opened", "borrowed", "forgot", "inspected"],
    "verb_past_intr": ["failed", "succeeded", "disappeared", "changed", "arrived late", "collapsed", "improved"],
    "place": ["near the river", "in the kitchen", "at the station", "behind the school", "on the hill",
              "in the old library", "by the harbour", "across the street", "in the village square"],
    "time": ["yesterday", "last winter", "on Monday", "this morning", "after lunch", "two weeks ago",
             "during the festival"],
    "time_future": ["tomorrow", "next week", "the guests arrive", "it gets dark", "the end of the month"],
    "person": ["neighbour", "teacher", "grandmother", "doctor", "uncle", "colleague", "baker", "captain"],
    "group": ["committee", "family", "team", "choir", "class", "crew", "council"],
    "Name": ["Maria", "Tom", "Aisha", "Kenji", "Olga", "Pedro", "Fatima", "Liam", "Ingrid", "Samuel"],
}
WORDS["adj2"], WORDS["noun2"] = WORDS["adj"], WORDS["noun"]


def template_sentences(n: int, rng: random.Random) -> list[str]:
    """n distinct template sentences (3 to about 20 words), drawn with rng."""
    out: dict[str, None] = {}
    while len(out) < n:
        t = rng.choice(TEMPLATES)
        s = re.sub(r"\{(\w+)\}", lambda m: rng.choice(WORDS[m.group(1)]), t)
        s = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", s)  # "a empty one" -> "an empty one"
        out[s[0].upper() + s[1:]] = None
    return list(out)


# ------------------------------------------------------------------------------------------------
# Selection


@dataclass
class Candidate:
    text: str
    parts: tuple[int, ...]  # ids of the source sentences it is made of

    @property
    def words(self) -> int:
        return len(self.text.split())


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def candidates() -> tuple[list[Candidate], dict]:
    """Every single sentence and every run of 2+ consecutive sentences (up to 200 words)."""
    sentence_id: dict[str, int] = {}
    cands: list[Candidate] = []
    stats = {"pydoc_paragraphs": 0, "docstring_paragraphs": 0, "fixture_texts": 0}
    paras = pydoc_paragraphs()
    stats["pydoc_paragraphs"] = len(paras)
    docs = docstring_paragraphs()
    stats["docstring_paragraphs"] = len(docs)
    fixtures = [clean_markup(t) for t in fixture_texts()]
    stats["fixture_texts"] = len(fixtures)
    # Group paragraphs by source (a pydoc topic, one docstring): long texts are runs of the
    # source's plausible sentences in reading order (implausible ones, e.g. code, are skipped).
    by_source: dict[str, list[str]] = {}
    for src, para in paras + docs + [(f"fixture:{i}", t) for i, t in enumerate(fixtures)]:
        by_source.setdefault(src, []).extend(split_sentences(clean_markup(para)))
    for src in sorted(by_source):
        # Plausible sentences, each once per source (docstrings of overloads repeat themselves).
        sents = list(dict.fromkeys(s for s in by_source[src] if plausible_english(s)))
        ids = [sentence_id.setdefault(s, len(sentence_id)) for s in sents]
        for i, s in enumerate(sents):
            cands.append(Candidate(s, (ids[i],)))
            text, words = s, len(s.split())
            for j in range(i + 1, len(sents)):
                words += len(sents[j].split())
                if words > 200:
                    break
                text = f"{text} {sents[j]}"
                cands.append(Candidate(text, tuple(ids[i:j + 1])))
    stats["distinct_plausible_sentences"] = len(sentence_id)
    stats["plausible_single_sentences"] = sum(len(c.parts) == 1 for c in cands)
    return cands, stats


def build(n: int) -> tuple[list[str], dict]:
    """n texts, selected as the module docstring says; returns (texts, construction stats)."""
    rng = random.Random(SEED)
    cands, stats = candidates()
    # Templates: TEMPLATE_SHARE of the set, counted against the buckets they fall into.
    templates = template_sentences(round(n * TEMPLATE_SHARE), rng)
    targets = [round(n * share) for _, _, share in LENGTH_BUCKETS]
    targets[1] += n - sum(targets)  # rounding remainder
    chosen: dict[str, str] = {}  # text -> source kind
    for t in templates:
        b = next(i for i, (lo, hi, _) in enumerate(LENGTH_BUCKETS) if lo <= len(t.split()) <= hi)
        targets[b] -= 1
        chosen[t] = "template"

    used: set[int] = set()
    by_bucket: list[list[Candidate]] = [[] for _ in LENGTH_BUCKETS]
    for c in cands:
        for i, (lo, hi, _) in enumerate(LENGTH_BUCKETS):
            if lo <= c.words <= hi:
                by_bucket[i].append(c)
    # Longest buckets first: they need runs of sentences, which short buckets would break up.
    shortfall = 0
    for b in reversed(range(len(LENGTH_BUCKETS))):
        want = targets[b] + shortfall
        got = 0
        for c in sorted(by_bucket[b], key=lambda c: _key(c.text)):
            if got >= want:
                break
            if c.text in chosen or used.intersection(c.parts):
                continue
            chosen[c.text] = "prose"
            used.update(c.parts)
            got += 1
        shortfall = want - got  # a thin bucket passes its deficit to the next shorter one
    if shortfall > 0:
        raise SystemExit(f"sentence set: only {n - shortfall} of {n} texts available")

    texts = sorted(chosen, key=_key)  # shuffled by hash: lengths and sources interleaved
    words = sorted(len(t.split()) for t in texts)
    stats |= {
        "texts": len(texts), "templates": sum(v == "template" for v in chosen.values()),
        "prose_texts": sum(v == "prose" for v in chosen.values()),
        "multi_sentence_texts": sum(1 for t in texts if len(split_sentences(t)) > 1),
        "words_min": words[0], "words_median": words[len(words) // 2], "words_max": words[-1],
        "buckets": {f"{lo}-{hi}": sum(lo <= len(t.split()) <= hi for t in texts) for lo, hi, _ in LENGTH_BUCKETS},
        "python": sys.version.split()[0], "seed": SEED,
    }
    return texts, stats


def make_queries(texts: list[str], n: int, seed: int = SEED) -> list[tuple[str, int]]:
    """n retrieval queries: (a span of 3-8 consecutive words of a text, that text's index).

    Source texts are drawn without replacement among texts of 6+ words; punctuation at the
    span's ends is stripped. Spans that occur verbatim in more than one text are kept: the
    retrieval test compares engines with each other, not with a ground truth.
    """
    rng = random.Random(seed + 1)
    pool = [i for i, t in enumerate(texts) if len(t.split()) >= 6]
    out = []
    for i in rng.sample(pool, min(n, len(pool))):
        words = texts[i].split()
        span = rng.randint(3, min(8, len(words) - 1))
        start = rng.randint(0, len(words) - span)
        q = " ".join(words[start:start + span]).strip(" .,;:!?\"'()")
        out.append((q, i))
    return out


if __name__ == "__main__":  # preview: python tools/accuracy_sentences.py [N]
    texts, stats = build(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
    print(json.dumps(stats, indent=1), file=sys.stderr)
    print("\n".join(texts))
