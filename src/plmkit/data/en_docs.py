"""`en-docs`: an English pretraining corpus with documents and discourse order, built offline
from the manuals, guides and API references that Debian packages install (`make system-deps`).

Every HTML page (or POD or Vim help file) is one document: its paragraphs in reading order, one a
line. Headings, code blocks, tables, navigation and sidebars are dropped; a paragraph is kept when
it reads as English prose (`is_prose`). Paragraphs are deduplicated over the whole corpus (exact,
after lowercasing and dropping punctuation), and a paragraph that shares an `NGRAM`-word sequence
with an evaluation set (`evaluation_texts`: the sentiment-en / nsp-en / sop-en tweets and the WEB
and KJV Bibles that the bible-* tasks are made of) is removed. The Bibles are not a source, since
every English Bible that Debian ships is an evaluation text. `build_en_docs` writes train.txt,
heldout.txt (whole documents held out for MLM evaluation) and SOURCES.md (sources, licences,
counts).
"""

from __future__ import annotations

import gzip
import multiprocessing
import random
import re
import subprocess
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from glob import glob
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from plmkit.data.bible import read_bible
from plmkit.data.sources import read_tweets
from plmkit.errors import UserError

Reader = Literal["html", "pod", "vimhelp"]

NGRAM = 8  # words; a paragraph sharing this many words in a row with an evaluation text goes
MIN_WORDS = 6  # a shorter paragraph is a label or a fragment, not prose
MIN_LETTERS = 0.75  # letters among the non-space characters; code and numbers score lower
MIN_FUNCTION_WORDS = 0.15  # English function words among the words; code and other languages
MIN_DOCUMENT_WORDS = 50  # a page left with less than this after filtering is not a document
HELDOUT = 0.02  # documents held out
SENTENCE_END = re.compile(r"[.!?:;][\"'”’)\]]*$")


def _names(names: str) -> frozenset[str]:
    return frozenset(names.split())


FUNCTION_WORDS = _names(
    "a an the and or but if of to in on at by for with from as into than that this these those "
    "it its is are was were be been being has have had do does did not no can could may might "
    "must shall should will would which who whom whose what when where how there then so such "
    "all any each some other only also more most you your we our they their he she his her")


@dataclass(frozen=True)
class Source:
    """One documentation tree: the Debian packages that install it, where (a glob; the last match
    in sorted order, the newest version, is read), which files (patterns on the path relative to
    the root) and under which licence (from the packages' copyright files)."""

    name: str
    packages: tuple[str, ...]
    root: str
    licence: str
    include: tuple[str, ...] = ("*.html",)
    exclude: tuple[str, ...] = ()
    reader: Reader = "html"

    def directory(self) -> Path:
        """The installed root; `UserError` naming the package when it is missing."""
        found = sorted(glob(self.root))
        if not found:
            install = " ".join(self.packages)
            raise UserError(f"en-docs source {self.name!r}: {self.root} not found "
                            f"(apt-get install -y {install}, or `make system-deps`)")
        return Path(found[-1])

    def files(self) -> list[Path]:
        """The files to read, sorted by path (so a build is reproducible)."""
        root = self.directory()
        paths = (p for p in root.rglob("*") if p.is_file())
        return sorted(p for p in paths if self.wanted(p.relative_to(root).as_posix()))

    def wanted(self, relative: str) -> bool:
        return any(fnmatch(relative, g) for g in self.include) and not any(
            fnmatch(relative, g) for g in self.exclude)


QT_PACKAGES = tuple(f"qt{m}5-doc-html" for m in (
    "base", "declarative", "multimedia", "quickcontrols2-", "quickcontrols", "webengine", "tools",
    "location", "connectivity", "3d", "charts", "datavisualization", "xmlpatterns", "script",
    "sensors", "virtualkeyboard", "scxml", "wayland", "remoteobjects", "websockets",
    "networkauth", "serialport", "webchannel", "gamepad", "speech"))
_SPHINX = ("genindex*.html", "py-modindex.html", "search.html", "_sources/*", "_modules/*")
SOURCES = (
    Source("python", ("python3-doc",), "/usr/share/doc/python3.*/html",
           "PSF License Agreement (Python documentation)", exclude=_SPHINX),
    Source("linux", ("linux-doc",), "/usr/share/doc/linux-doc-*/html", "GPL-2",
           exclude=(*_SPHINX, "translations/*")),
    Source("postgresql", ("postgresql-doc",), "/usr/share/doc/postgresql-doc-*/html",
           "PostgreSQL Licence (BSD-style)"),
    Source("java", ("default-jdk-doc",), "/usr/share/doc/openjdk-*-doc/api",
           "GPL-2 with the Classpath exception",
           exclude=("*/class-use/*", "*/package-tree.html", "*/package-use.html", "index-files/*",
                    "allclasses-index.html", "allpackages-index.html", "overview-tree.html",
                    "deprecated-list.html", "constant-values.html", "serialized-form.html",
                    "src-html/*", "*/doc-files/*")),
    Source("perl", ("perl-doc",), "/usr/share/perl/5.*/pod", "GPL-1+ or Artistic",
           include=("*.pod",), reader="pod"),
    Source("erlang", ("erlang-doc",), "/usr/share/doc/erlang-doc", "Apache-2.0"),
    Source("lilypond", ("lilypond-doc-html",), "/usr/share/doc/lilypond/html/Documentation",
           "GFDL-1.3+ (no invariant sections)", exclude=("*-big-page.html",)),
    Source("qt", QT_PACKAGES, "/usr/share/qt5/doc", "GFDL-1.3 (no invariant sections)"),
    Source("rust", ("rust-doc",), "/usr/share/doc/rust-doc/html", "MIT or Apache-2.0",
           include=tuple(f"{d}/*.html" for d in (
               "book", "reference", "nomicon", "rust-by-example", "rustc", "edition-guide",
               "embedded-book", "cargo", "rustdoc", "std")),
           exclude=("*/print.html", "*/toc.html")),
    Source("django", ("python-django-doc",), "/usr/share/doc/python-django-doc/html",
           "BSD-3-Clause", exclude=_SPHINX),
    Source("sqlalchemy", ("python-sqlalchemy-doc",), "/usr/share/doc/python-sqlalchemy-doc/html",
           "Expat (MIT)", exclude=_SPHINX),
    Source("scipy", ("python-scipy-doc",), "/usr/share/doc/python-scipy-doc/html", "BSD-3-Clause",
           exclude=_SPHINX),
    Source("sympy", ("python-sympy-doc",), "/usr/share/doc/python-sympy-doc/html", "BSD-3-Clause",
           exclude=_SPHINX),
    Source("sphinx", ("sphinx-doc",), "/usr/share/doc/sphinx-doc/html", "BSD-2-Clause",
           exclude=_SPHINX),
    Source("sqlite", ("sqlite3-doc",), "/usr/share/doc/sqlite3", "public domain",
           include=("*.html", "*.html.gz")),
    Source("apache", ("apache2-doc",), "/usr/share/doc/apache2-doc/manual/en", "Apache-2.0"),
    Source("octave", ("octave-doc",), "/usr/share/doc/octave", "GPL-3+"),
    Source("maxima", ("maxima-doc",), "/usr/share/doc/maxima-doc/html", "GPL-2"),
    Source("r", ("r-doc-html",), "/usr/share/doc/r-doc-html/manual", "GPL-2"),
    Source("cmake", ("cmake-doc",), "/usr/share/doc/cmake-data/html", "BSD-3-Clause",
           exclude=_SPHINX),
    Source("git", ("git-doc",), "/usr/share/doc/git-doc", "GPL-2"),
    Source("nodejs", ("nodejs-doc",), "/usr/share/doc/nodejs/api", "Expat (MIT)",
           exclude=("all.html",)),
    Source("bash", ("bash-doc",), "/usr/share/doc/bash", "GPL-3+"),
    Source("debian-handbook", ("debian-handbook",), "/usr/share/doc/debian-handbook/html/en-US",
           "GPL-2+ or CC-BY-SA-3.0"),
    Source("ghc", ("ghc-doc",), "/usr/share/doc/ghc-doc/html", "BSD-3-Clause"),
    Source("sklearn", ("python-sklearn-doc",), "/usr/share/doc/python-sklearn-doc/html",
           "BSD-3-Clause", exclude=_SPHINX),
    Source("pandas", ("python-pandas-doc",), "/usr/share/doc/python-pandas-doc/html",
           "BSD-3-Clause", exclude=_SPHINX),
    Source("statsmodels", ("python-statsmodels-doc",),
           "/usr/share/doc/python-statsmodels-doc/html", "BSD-3-Clause", exclude=_SPHINX),
    Source("astropy", ("python-astropy-doc",), "/usr/share/doc/python-astropy-doc/html",
           "BSD-3-Clause", exclude=_SPHINX),
    Source("gtk", ("libglib2.0-doc", "libgtk-3-doc"), "/usr/share/gtk-doc/html", "LGPL-2.1+",
           include=tuple(f"{d}/*.html" for d in ("glib", "gio", "gobject", "gtk3", "gdk3"))),
    Source("gtk4", ("libgtk-4-doc",), "/usr/share/doc/libgtk-4-doc", "LGPL-2.1+"),
    Source("libreoffice", ("libreoffice-help-en-us",), "/usr/share/libreoffice/help/en-US",
           "MPL-2.0"),
    Source("gimp", ("gimp-help-en",), "/usr/share/gimp/2.0/help/en",
           "GFDL-1.2+ (no invariant sections)"),
    Source("wireshark", ("wireshark-doc",), "/usr/share/doc/wireshark", "GPL-2+"),
    Source("libvirt", ("libvirt-doc",), "/usr/share/doc/libvirt-doc/html", "LGPL-2.1+"),
    Source("exim", ("exim4-doc-html",), "/usr/share/doc/exim4-doc-html", "GPL-2+"),
    Source("bind", ("bind9-doc",), "/usr/share/doc/bind9-doc", "MPL-2.0"),
    Source("postfix", ("postfix-doc",), "/usr/share/doc/postfix/html",
           "IBM Public License 1.0 or EPL-2.0"),
    Source("boost", ("libboost1.74-doc",), "/usr/share/doc/libboost*-doc", "BSL-1.0",
           include=("*.html", "*.htm")),
    Source("racket", ("racket-doc",), "/usr/share/doc/racket", "MIT or Apache-2.0"),
    Source("freepascal", ("fp-docs-3.2.2",), "/usr/share/doc/fp-docs/*", "GPL-2+"),
    Source("swi-prolog", ("swi-prolog-doc",), "/usr/share/swi-prolog/doc", "BSD-2-Clause"),
    Source("grass", ("grass-doc",), "/usr/share/doc/grass-doc/html", "GPL-2+"),
    Source("postgis", ("postgis-doc",), "/usr/share/doc/postgis-doc", "GPL-2+"),
    Source("docutils", ("docutils-doc",), "/usr/share/doc/docutils-doc", "public domain"),
    Source("debian-reference", ("debian-reference-en",), "/usr/share/debian-reference",
           "GPL-2+", include=("*.en.html",)),
    Source("debian-policy", ("debian-policy",), "/usr/share/doc/debian-policy", "GPL-2+"),
    Source("developers-reference", ("developers-reference",),
           "/usr/share/developers-reference", "GPL-2"),
    Source("debian-faq", ("debian-faq",), "/usr/share/doc/debian/FAQ", "GPL-2+"),
    Source("vim", ("vim-runtime",), "/usr/share/vim/vim*/doc", "OPL-1+ (no options) and Vim",
           include=("*.txt",), reader="vimhelp"),
)
APT_PACKAGES = tuple(p for s in SOURCES for p in s.packages)


# ---------------------------------------------------------------------------------------------
# Pages to paragraphs

VOID = _names("area base br col embed hr img input link meta param source track wbr")
BREAKS = frozenset({"br", "hr"})
BLOCKS = _names(
    "p div li ul ol dl dd blockquote section article main body td tr th caption figcaption "
    "center details summary")
SKIPPED = _names(  # whole subtrees that are not running prose
    "head title script style noscript template pre code-block listing xmp table nav header "
    "footer aside form select button textarea svg math iframe object h1 h2 h3 h4 h5 h6 dt "
    "figure sup")
SKIPPED_CLASSES = _names(  # class tokens of navigation, signatures and code containers
    "sphinxsidebar sphinxsidebarwrapper related footer navheader navfooter navigation "
    "nav navbar sidebar breadcrumb breadcrumbs toc contents toctree-wrapper menu headerlink sig "
    "highlight synopsis programlisting screen example smallexample lisp display format "
    "shortcontents top-nav sub-nav summary-table member-signature type-signature item-decl "
    "example-wrap out-of-band srclink menu-bar nav-wrapper nav-chapters mobile-nav-chapters "
    "leftnav qt-code codeblock code literal-block doctest")
SKIPPED_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_DROPPED_CHARS = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\u00b6"))


class _Paragraphs(HTMLParser):
    """Collects the text of block elements in document order, skipping `SKIPPED` subtrees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._text: list[str] = []
        self._skip: str | None = None  # the tag whose subtree is being skipped
        self._depth = 0  # open elements of that tag name inside the skipped subtree

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            self._depth += tag == self._skip and tag not in VOID
        elif tag in VOID:
            if tag in BREAKS:
                self._flush()
        elif tag in SKIPPED or _skipped(attrs):
            self._flush()
            self._skip, self._depth = tag, 1
        elif tag in BLOCKS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is None and (tag in BLOCKS or tag in BREAKS):
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip:
                self._depth -= 1
                if self._depth == 0:
                    self._skip = None
        elif tag in BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        if self._text:
            self.paragraphs.append(normalize("".join(self._text)))
            self._text = []


def _skipped(attrs: list[tuple[str, str | None]]) -> bool:
    values = dict(attrs)
    classes = (values.get("class") or "").split()
    return values.get("role") in SKIPPED_ROLES or any(
        c in SKIPPED_CLASSES or c.startswith("highlight") for c in classes)


def html_paragraphs(html: str) -> list[str]:
    """The non-empty text blocks of an HTML page in reading order (see `SKIPPED`)."""
    parser = _Paragraphs()
    parser.feed(html)
    parser.close()
    return [p for p in parser.paragraphs if p]


_POD_ITEM = re.compile(r"^=item\s+(?:\*|\d+\.?)?\s*")
_POD_ENTITIES = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|"}
_POD_CODE = re.compile(r"([A-Z])<([^<>]*)>")
_POD_CODE_LONG = [re.compile(rf"([A-Z])<{{{k}}}\s+(.*?)\s+>{{{k}}}", re.S) for k in (4, 3, 2)]


def pod_paragraphs(pod: str) -> list[str]:
    """The text paragraphs of a POD file: verbatim (indented) paragraphs, commands, and
    `=begin`..`=end` blocks dropped; `=item` text kept; formatting codes rendered as text."""
    out, inside_begin = [], False
    for block in re.split(r"\n[ \t]*\n", pod):
        block = block.strip("\n")
        if block.startswith("=begin"):
            inside_begin = True
        elif block.startswith("=end"):
            inside_begin = False
        elif not inside_begin and block and block[0] not in " \t":
            if block.startswith("=item"):
                block = _POD_ITEM.sub("", block)
            elif block.startswith("="):
                continue
            out.append(normalize(_pod_text(block)))
    return [p for p in out if p]


def _pod_text(text: str) -> str:
    for pattern in _POD_CODE_LONG:
        text = pattern.sub(_pod_code, text)
    while True:
        new = _POD_CODE.sub(_pod_code, text)
        if new == text:
            return text
        text = new


def _pod_code(m: re.Match[str]) -> str:
    code, body = m.group(1), m.group(2)
    if code in "XZ":
        return ""
    if code == "E":
        if body.isdigit():
            return chr(int(body))
        return _POD_ENTITIES.get(body) or unescape(f"&{body};")
    if code == "L":
        text, bar, _ = body.partition("|")
        if bar:
            return text
        name, _, section = body.partition("/")
        section = section.strip('"')
        return f'"{section}" in {name}' if name and section else section or name
    return body


_VIM_TAG = re.compile(r"\*[^*\s]+\*")
_VIM_LINK = re.compile(r"\|([^|\s]+)\|")


def vim_help_paragraphs(text: str) -> list[str]:
    """The text paragraphs of a Vim help file: examples (from a line ending in " >" or ">" to
    a line starting with "<" or unindented), lines laid out in columns (a tab after text, or
    indented by two tabs: option headers, scopes, tables) and lines of only tags or rules
    dropped; |links| kept as words."""
    out: list[str] = []
    lines: list[str] = []
    example = False
    for line in text.splitlines():
        stripped = line.strip()
        if example and (line.startswith("<") or (stripped and not line[0].isspace())):
            example = False
            line = line.removeprefix("<")
            stripped = line.strip()
        if example:
            continue
        if stripped == ">" or stripped.endswith(" >"):
            example = True
            stripped = stripped.removesuffix(">")
        if not stripped or set(stripped) <= set("=-*~"):
            out.append(" ".join(lines))
            lines = []
        elif "\t" not in stripped and not line.startswith(("\t\t", " " * 16)) \
                and _VIM_TAG.sub("", stripped).strip():
            lines.append(_VIM_LINK.sub(r"\1", _VIM_TAG.sub("", stripped)))
    out.append(" ".join(lines))
    return [p for p in map(normalize, out) if p]


def normalize(text: str) -> str:
    """NFKC, invisible characters and pilcrows removed, whitespace collapsed to single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_DROPPED_CHARS).split())


def is_prose(paragraph: str) -> bool:
    """Whether a paragraph reads as English prose: `MIN_WORDS` words or more, ending like a
    sentence, mostly letters (code is not) and with English function words (other languages
    and identifiers lack them)."""
    words = paragraph.split()
    if len(words) < MIN_WORDS or "\ufffd" in paragraph or not SENTENCE_END.search(paragraph):
        return False
    letters = sum(c.isalpha() for c in paragraph)
    if letters < MIN_LETTERS * (len(paragraph) - len(words) + 1):
        return False
    function = sum(w.lower().strip(".,;:!?()\"'") in FUNCTION_WORDS for w in words)
    return function >= MIN_FUNCTION_WORDS * len(words)


READERS: dict[Reader, Callable[[str], list[str]]] = {
    "html": html_paragraphs, "pod": pod_paragraphs, "vimhelp": vim_help_paragraphs}


def read_page(task: tuple[str, Reader]) -> list[str]:
    """The prose paragraphs of one file (`.gz` read through gzip), in order."""
    path, reader = task
    raw = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else (
        Path(path).read_bytes())
    return [p for p in READERS[reader](raw.decode("utf-8", errors="replace")) if is_prose(p)]


# ---------------------------------------------------------------------------------------------
# Deduplication and evaluation overlap

_WORD = re.compile(r"\w+")


def words_of(text: str) -> list[str]:
    """Lowercased word characters: the form compared for duplicates and overlap."""
    return _WORD.findall(text.lower())


class Overlap:
    """The word `n`-grams of named evaluation sets; `find` names the set a paragraph shares an
    n-gram with. An evaluation text shorter than `n` words matches a paragraph equal to it."""

    def __init__(self, sets: dict[str, Iterable[str]], n: int = NGRAM) -> None:
        self.n, self.names = n, list(sets)
        self.grams: dict[int, int] = {}  # hash of an n-gram (or a short text) -> set index
        for index, texts in enumerate(sets.values()):
            for text in texts:
                for gram in self._grams(words_of(text)):
                    self.grams.setdefault(hash(gram), index)

    def _grams(self, words: Sequence[str]) -> Iterator[str]:
        if len(words) < self.n:
            yield " ".join(words)
        for i in range(len(words) - self.n + 1):
            yield " ".join(words[i:i + self.n])

    def find(self, words: Sequence[str]) -> str | None:
        """The evaluation set that the paragraph `words` overlaps, or None."""
        for gram in self._grams(words):
            index = self.grams.get(hash(gram))
            if index is not None:
                return self.names[index]
        return None


def evaluation_texts() -> dict[str, list[str]]:
    """The English text of the evaluation sets that `plmkit data build` writes."""
    return {
        "tweets (sentiment-en, nsp-en, sop-en)": [t for t, _ in read_tweets()],
        "WEB Bible (bible-swag, bible-paraphrase, bible-en-es)": [
            v.text for v in read_bible("web")],
        "KJV Bible (bible-paraphrase)": [v.text for v in read_bible("kjv")],
    }


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class SourceStats:
    files: int = 0
    documents: int = 0
    paragraphs: int = 0
    words: int = 0
    duplicates: int = 0  # paragraphs dropped as seen before
    overlaps: int = 0  # paragraphs dropped for evaluation overlap


@dataclass
class Build:
    """Deduplicates and filters the paragraphs of each page into documents."""

    overlap: Overlap
    max_words: int | None = None
    documents: list[list[str]] = field(default_factory=list)
    stats: dict[str, SourceStats] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)  # evaluation set -> paragraphs
    words: int = 0
    _seen: set[int] = field(default_factory=set)

    def full(self) -> bool:
        return self.max_words is not None and self.words >= self.max_words

    def add(self, source: str, paragraphs: list[str]) -> None:
        """One page's prose paragraphs: new ones that overlap no evaluation set form a document
        when they hold `MIN_DOCUMENT_WORDS` words or more."""
        stats = self.stats.setdefault(source, SourceStats())
        stats.files += 1
        kept, words = [], 0
        for paragraph in paragraphs:
            tokens = words_of(paragraph)
            key = hash(" ".join(tokens))
            if key in self._seen:
                stats.duplicates += 1
                continue
            self._seen.add(key)
            found = self.overlap.find(tokens)
            if found is not None:
                stats.overlaps += 1
                self.overlaps[found] = self.overlaps.get(found, 0) + 1
                continue
            kept.append(paragraph)
            words += len(paragraph.split())
        if words >= MIN_DOCUMENT_WORDS:
            self.documents.append(kept)
            stats.documents += 1
            stats.paragraphs += len(kept)
            stats.words += words
            self.words += words


def _pages(tasks: list[tuple[str, Reader]], workers: int) -> Iterator[list[str]]:
    """`read_page` of each task in order, in `workers` processes (forked: they run no torch)."""
    if workers <= 1:
        yield from map(read_page, tasks)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(read_page, tasks, chunksize=8)


def collect(sources: Sequence[Source], overlap: Overlap, *, max_words: int | None = None,
            workers: int = 2) -> Build:
    """Read `sources` in order into a `Build`, stopping once it holds `max_words` words."""
    build = Build(overlap, max_words)
    files = [(s.name, (str(p), s.reader)) for s in sources for p in s.files()]
    pages = _pages([task for _, task in files], workers)
    for (name, _), paragraphs in zip(files, pages):  # noqa: B905 (may stop early)
        build.add(name, paragraphs)
        if build.full():
            break
    pages.close()  # type: ignore[attr-defined] (a generator: ends its pool)
    return build


def select_sources(names: Sequence[str] | None) -> list[Source]:
    """The `SOURCES` named (all of them for None), in `SOURCES` order."""
    if names is None:
        return list(SOURCES)
    known = {s.name: s for s in SOURCES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown en-docs source {unknown[0]!r}; known: {', '.join(known)}")
    return [s for s in SOURCES if s.name in names]


def build_en_docs(out_dir: Path, seed: int = 0, *, sources: Sequence[str] | None = None,
                  max_words: int | None = None, heldout: float = HELDOUT,
                  workers: int = 2) -> list[Path]:
    """Write out_dir/train.txt and heldout.txt (one paragraph a line, a blank line between
    documents, documents shuffled by `seed`, the first `heldout` share held out) and
    SOURCES.md; `sources` and `max_words` make a smaller corpus."""
    start = time.monotonic()
    chosen = select_sources(sources)
    overlap = Overlap(evaluation_texts())
    build = collect(chosen, overlap, max_words=max_words, workers=workers)
    if not build.documents:
        raise UserError("en-docs: no documents found in " + ", ".join(s.name for s in chosen))
    documents = list(build.documents)
    random.Random(seed).shuffle(documents)
    cut = max(1, round(heldout * len(documents)))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "train.txt", out_dir / "heldout.txt", out_dir / "SOURCES.md"]
    for path, part in zip(paths[:2], (documents[cut:], documents[:cut]), strict=True):
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(d) for d in part) + "\n")
    held = sum(len(p.split()) for d in documents[:cut] for p in d)
    paths[2].write_text(sources_markdown(chosen, build, cut, held, time.monotonic() - start),
                        encoding="utf-8")
    return paths


def package_version(package: str) -> str:
    """The installed version of a Debian package ("?" when dpkg cannot tell)."""
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def sources_markdown(sources: Sequence[Source], build: Build, heldout_docs: int,
                     heldout_words: int, seconds: float) -> str:
    """SOURCES.md: where each part of the corpus comes from, its licence and its counts."""
    rows = []
    for s in sources:
        st = build.stats.get(s.name)
        if st is None:
            continue
        packages = ", ".join(f"`{p}` {package_version(p)}" for p in s.packages)
        rows.append(f"| {s.name} | {packages} | "
                    f"`{s.directory()}` | {s.licence} | {st.files:,} | {st.documents:,} | "
                    f"{st.paragraphs:,} | {st.words:,} | {st.duplicates:,} | {st.overlaps:,} |")
    total = sum(len(d) for d in build.documents)
    lines = [
        "# en-docs: sources", "",
        "Built by `plmkit data build --name en-docs` from documentation that Debian packages "
        "install (`make system-deps`). One document per page, paragraphs in reading order; "
        "headings, code, tables and navigation dropped; paragraphs deduplicated; paragraphs "
        f"sharing a {build.overlap.n}-word sequence with an evaluation set removed.", "",
        "| source | package | directory | licence | files | documents | paragraphs | words "
        "| duplicates dropped | overlaps dropped |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"Total: {len(build.documents):,} documents, {total:,} paragraphs, {build.words:,} words "
        f"(train {build.words - heldout_words:,}, heldout {heldout_words:,} in {heldout_docs:,} "
        "documents).", "",
        "Paragraphs removed for overlap with evaluation sets: " + (", ".join(
            f"{name}: {n:,}" for name, n in build.overlaps.items()) or "none") + ".", "",
        f"Build time: {seconds:.0f} s.", "",
    ]
    return "\n".join(lines)
