"""The en-docs pretraining corpus on the real documentation packages (`make system-deps`)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from plmkit.data import en_docs
from plmkit.data.builders import build_dataset
from plmkit.data.corpus import read_documents
from plmkit.data.en_docs import (
    APT_PACKAGES,
    SOURCES,
    Overlap,
    collect,
    evaluation_texts,
    html_paragraphs,
    is_prose,
    pod_paragraphs,
    read_page,
    vim_help_paragraphs,
    words_of,
)
from plmkit.errors import UserError

PYTHON = next(s for s in SOURCES if s.name == "python")
# The tutorial, and two guides that share five paragraphs.
PAGES = replace(PYTHON, name="python-pages",
                include=("tutorial/*.html", "distributing/*.html", "installing/*.html"))
CONTROL_FLOW = "tutorial/controlflow.html"
# Paragraphs of the Python tutorial's "More Control Flow Tools", in page order.
IN_ORDER = (
    "Besides the while statement just introduced, Python uses the usual flow control statements",
    "Perhaps the most well-known statement type is the if statement.",
    "The for statement in Python differs a bit from what you may be used to in C or Pascal.",
    "The break statement, like in C, breaks out of the innermost enclosing for or while loop.",
)


def test_html_keeps_prose_in_order_and_drops_the_rest() -> None:
    page = """<html><head><title>T</title><style>p {}</style></head><body>
    <div class="sphinxsidebar"><p>Navigation sidebar text that is long enough to keep.</p></div>
    <h1>Heading</h1><p>First paragraph with <code>len()</code> inline &amp; more.<br>After a
    break.</p><pre>for x in y:\n    pass</pre><ul><li>An item<li>Another item</ul>
    <img src="x.png" class="sidebar"><table><tr><td>cell</td></tr></table>
    <div class="highlight-python3"><div>print(1)</div></div><p>Last one.</p></body></html>"""
    assert html_paragraphs(page) == [
        "First paragraph with len() inline & more.", "After a break.", "An item",
        "Another item", "Last one."]


def test_pod_text() -> None:
    pod = ("=head1 NAME\n\nperlfoo - a B<bold> claim\n\n    my $x = 1;  # verbatim\n\n"
           "=item * Use C<< $a <=> $b >> and L<perlfunc/sort> or L<the docs|perlop>.\n\n"
           "=begin html\n\n<p>raw</p>\n\n=end html\n\nE<lt>tagE<gt> X<index>done.\n")
    assert pod_paragraphs(pod) == [
        "perlfoo - a bold claim", 'Use $a <=> $b and "sort" in perlfunc or the docs.',
        "<tag> done."]


def test_vim_help_text() -> None:
    help_text = ("*usr_05.txt*\tFor Vim version 9.0.\n\n"
                 "==============================================================================\n"
                 "*05.1*\tThe vimrc file\t\t\t\t*vimrc-intro*\n\n"
                 "You probably got tired of typing commands.  See |vimrc| and\n"
                 "the 'ruler' option: >\n\n\tset ruler\n\tset showcmd\n<\n"
                 "\t\t\tglobal\n\tThis switches on the ruler.\n")
    assert vim_help_paragraphs(help_text) == [
        "You probably got tired of typing commands. See vimrc and the 'ruler' option:",
        "This switches on the ruler."]


def test_is_prose() -> None:
    assert is_prose("Returns the number of elements in this list, or zero.")
    assert not is_prose("Returns the number of elements")  # no sentence end
    assert not is_prose("Gibt die Anzahl der Elemente dieser Liste zurück.")  # not English
    assert not is_prose("x = foo(1, 2) + bar[3] * 4; y = {5: 6};")  # code
    assert not is_prose("Too short.")


def test_real_page_keeps_order_and_drops_code() -> None:
    page = PYTHON.directory() / CONTROL_FLOW
    paragraphs = read_page((str(page), "html"))
    text = "\n".join(paragraphs)
    positions = [text.index(p) for p in IN_ORDER]
    assert positions == sorted(positions)
    assert "for w in words:" not in text  # the page's code examples
    assert "4.2. for Statements" not in text  # its headings
    assert all(is_prose(p) for p in paragraphs)


def test_documents_deduplicated_and_overlap_removed_on_real_pages() -> None:
    page = read_page((str(PYTHON.directory() / CONTROL_FLOW), "html"))
    held_out = page[:3]  # real paragraphs posing as an evaluation set
    build = collect([PAGES], Overlap({"page": held_out}), workers=1)
    stats = build.stats["python-pages"]
    assert stats.files == len(PAGES.files()) >= 10
    assert stats.overlaps >= 3 and build.overlaps["page"] == stats.overlaps
    paragraphs = [p for d in build.documents for p in d]
    assert not set(held_out) & set(paragraphs)
    keys = [" ".join(words_of(p)) for p in paragraphs]
    assert len(keys) == len(set(keys))  # no paragraph twice
    assert stats.duplicates == 5
    # The control-flow page is one document, in page order, less the held-out paragraphs.
    document = next(d for d in build.documents if IN_ORDER[2] in " ".join(d))
    assert document == [p for p in page[3:] if p in document]
    assert len(document) > 50


def test_overlap_on_real_evaluation_text() -> None:
    texts = evaluation_texts()
    tweet = next(t for t in texts["tweets (sentiment-en, nsp-en, sop-en)"]
                 if len(words_of(t)) >= 12)
    verse = texts["KJV Bible (bible-paraphrase)"][0]  # Genesis 1:1
    overlap = Overlap(texts)
    doc = "The following sentence is quoted from elsewhere, in the middle of a paragraph:"
    inside = " ".join(words_of(tweet)[2:10])
    assert overlap.find(words_of(f"{doc} {inside} and the paragraph goes on.")) is not None
    assert overlap.find(words_of(verse.upper())) == "KJV Bible (bible-paraphrase)"
    assert overlap.find(words_of(doc)) is None


def test_small_build_writes_corpus_files(tmp_path: Path) -> None:
    paths = en_docs.build_en_docs(tmp_path, sources=["python"], max_words=60_000, workers=1)
    assert [p.name for p in paths] == ["train.txt", "heldout.txt", "SOURCES.md"]
    train = list(read_documents([paths[0]]))
    heldout = list(read_documents([paths[1]]))
    assert len(heldout) == max(1, round(0.02 * (len(train) + len(heldout))))
    words = sum(len(s.split()) for d in train + heldout for s in d)
    assert 60_000 <= words < 100_000
    sources = paths[2].read_text()
    assert "| python | `python3-doc`" in sources and "PSF" in sources
    blocks = paths[0].read_text().split("\n\n")
    assert all(len(b.split()) >= en_docs.MIN_DOCUMENT_WORDS for b in blocks)


def test_unknown_source_and_missing_package() -> None:
    with pytest.raises(UserError, match="unknown en-docs source 'nope'"):
        en_docs.select_sources(["nope"])
    missing = replace(PYTHON, root="/nonexistent/doc-*/html")
    with pytest.raises(UserError, match="apt-get install -y python3-doc"):
        missing.files()


def test_makefile_installs_every_source() -> None:
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    listed = re.search(r"EN_DOCS_PACKAGES := ((?:.*\\\n)*.*)", makefile)
    assert listed is not None
    assert sorted(listed.group(1).replace("\\", " ").split()) == sorted(APT_PACKAGES)


@pytest.mark.slow
def test_full_corpus(tmp_path: Path) -> None:
    """The whole corpus: at least 20M words, every source present, no paragraph twice and no
    `NGRAM`-word sequence shared with an evaluation set (checked again independently)."""
    paths = build_dataset("en-docs", tmp_path)
    documents = list(read_documents(paths[:2]))
    sources = paths[2].read_text()
    assert all(f"| {s.name} |" in sources for s in SOURCES)
    seen: set[str] = set()
    words = 0
    n = en_docs.NGRAM
    grams = {" ".join(w[i:i + n]) for texts in evaluation_texts().values() for t in texts
             for w in [words_of(t)] for i in range(len(w) - n + 1)}
    for line in paths[0].read_text().splitlines() + paths[1].read_text().splitlines():
        tokens = words_of(line)
        if not tokens:
            continue
        words += len(line.split())
        key = " ".join(tokens)
        assert key not in seen
        seen.add(key)
        assert not any(" ".join(tokens[i:i + n]) in grams for i in range(len(tokens) - n + 1))
    assert words >= 20_000_000
    assert len(documents) > 10_000
