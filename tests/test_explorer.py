"""The token-level HTML explorer: content, escaping, self-containment, and rendering in a real browser."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from influence_study.explorer import SPURIOUS_THRESHOLD, render_explorer, token_concentration, write_explorer

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SCRIPT_TEXT = 'if (a < b && c) { x = "<script>alert(1)</script>"; }'


class Elements(HTMLParser):
    """Every element as a dict (tag, attrs, classes, text content, index of its parent), in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.stack: list[int] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append({"tag": tag, "attrs": attrs, "classes": (attrs.get("class") or "").split(),
                              "text": "", "parent": self.stack[-1] if self.stack else None})
        if tag not in VOID:
            self.stack.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        while self.stack:  # close up to the matching tag
            if self.elements[self.stack.pop()]["tag"] == tag:
                break

    def handle_data(self, data):
        for i in self.stack:
            self.elements[i]["text"] += data

    def inside(self, i: int, ancestor: int) -> bool:
        while i is not None:
            if i == ancestor:
                return True
            i = self.elements[i]["parent"]
        return False

    def find(self, cls: str, within: int | None = None) -> list[int]:
        return [i for i, e in enumerate(self.elements)
                if cls in e["classes"] and (within is None or (i != within and self.inside(i, within)))]


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def tables():
    queries = pd.DataFrame({
        "query_id": ["q_fact", "q_code"],
        "analysis": ["facts", "code"],
        "prompt": ["The capital of Veloria is", "def add(a, b):\n    return"],
        "completion": [" Mirsk", " a + b"],
    })
    # q_fact: d_conc (rank 1) puts all influence on one token, d_even (rank 2) spreads it evenly
    top = pd.DataFrame({
        "query_id": ["q_fact"] * 3 + ["q_code"] * 3,
        "doc_id": ["d_conc", "d_even", "d_code", "d_code", "d_even", "d_conc"],
        "rank": [1, 2, 3, 1, 2, 3],
        "score": [9.0, 4.0, -1.0, 5.0, 2.0, 1.0],
        "score_norm": [9e-4, 4e-4, -1e-4, 5e-4, 2e-4, 1e-4],
        "rescored": [True, True, False, True, False, False],
        "layer_1": [6.0, 1.0, -0.5, 4.0, 1.0, 0.5],
        "layer_0": [3.0, 3.0, -0.5, 1.0, 1.0, 0.5],
    })
    token_texts = {"d_conc": ["<|endoftext|>", "Veloria", "'s", " capital", " is", " Mirsk"],
                   "d_even": ["<|endoftext|>", "Mirsk", " lies", " in", " Veloria", "."],
                   "d_code": ["<|endoftext|>", "if (a < b", " && c)", " {", "\n",
                              ' x = "<script>alert(1)</script>"; }']}
    token_scores = {"d_conc": [0.0, 0.01, 0.0, 0.02, 8.9, 0.0],   # concentration ~0.997 > 2/3
                    "d_even": [0.8, 0.8, 0.8, 0.8, 0.8, 0.0],     # concentration 1/sqrt(5) ~0.447
                    "d_code": [-0.2, -0.2, -0.2, -0.2, -0.1, -0.1]}
    rows = []
    for q, d, r in top[["query_id", "doc_id", "rank"]].itertuples(index=False):
        for pos, (tok, s) in enumerate(zip(token_texts[d], token_scores[d])):
            rows.append({"query_id": q, "doc_id": d, "rank": r, "position": pos, "token": tok, "score": s})
    tokens = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    documents = pd.DataFrame({
        "doc_id": ["d_conc", "d_even", "d_code"],
        "family": ["facts", "facts", "code"],
        "text": ["Veloria's capital is Mirsk", "Mirsk lies in Veloria.", SCRIPT_TEXT],
    })
    relations = pd.DataFrame({"query_id": ["q_fact"], "doc_id": ["d_conc"], "relation": ["same_fact"]})
    return queries, top, tokens, documents, relations


PROVENANCE = {"config_hash": "abc123", "model_fingerprint": "m-42", "factors": {"strategy": "ekfac"},
              "version": "0.1"}


def render(**overrides) -> str:
    queries, top, tokens, documents, relations = tables()
    args = dict(model_name="tiny-2l", strategy="ekfac", queries=queries, top=top, tokens=tokens,
                documents=documents, relations=relations, provenance=PROVENANCE)
    args.update(overrides)
    return render_explorer(**args)


def doc_blocks(parsed: Elements, query_index: int) -> list[dict]:
    section = parsed.find("query")[query_index]
    out = []
    for i in parsed.find("doc", within=section):
        rel = [parsed.elements[j]["text"] for j in parsed.find("rel", within=i)]
        attrs = parsed.elements[i]["attrs"]
        out.append({"doc": attrs["data-doc"], "rank": int(attrs["data-rank"]), "relation": rel,
                    "spurious": bool(parsed.find("spurious", within=i))})
    return out


def first_query_text(parsed: Elements) -> tuple[str, str]:
    section = parsed.find("query")[0]
    (prompt,) = parsed.find("prompt", within=section)
    (completion,) = parsed.find("completion", within=section)
    return parsed.elements[prompt]["text"], parsed.elements[completion]["text"]


# --------------------------------------------------------------------------------------------------------------
def test_token_concentration_hand_values():
    assert token_concentration(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert token_concentration(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert token_concentration(np.array([-1.0, 1.0, -1.0, 1.0])) == pytest.approx(0.5)  # sign-insensitive
    assert token_concentration(np.array([3.0, -4.0])) == pytest.approx(5.0 / 7.0)
    assert token_concentration(np.zeros(5)) == 0.0
    assert token_concentration(np.array([])) == 0.0
    assert SPURIOUS_THRESHOLD == pytest.approx(2 / 3)


def test_sections_order_relations_and_spurious_flags():
    parsed = parse(render())
    sections = parsed.find("query")
    assert [parsed.elements[i]["attrs"]["id"] for i in sections] == ["q-q_fact", "q-q_code"]
    assert first_query_text(parsed) == ("The capital of Veloria is", " Mirsk")
    first = doc_blocks(parsed, 0)
    assert [(d["rank"], d["doc"]) for d in first] == [(1, "d_conc"), (2, "d_even"), (3, "d_code")]
    assert [d["relation"] for d in first] == [["same_fact"], ["unrelated"], ["unrelated"]]
    assert [d["spurious"] for d in first] == [True, False, False]
    second = doc_blocks(parsed, 1)
    assert [d["doc"] for d in second] == ["d_code", "d_even", "d_conc"]
    assert [d["relation"] for d in second] == [["unrelated"]] * 3  # same_fact holds for q_fact only
    assert [d["spurious"] for d in second] == [False, False, True]
    # table of contents links to every section
    hrefs = [e["attrs"].get("href") for e in parsed.elements if e["tag"] == "a"]
    assert "#q-q_fact" in hrefs and "#q-q_code" in hrefs


def test_token_shading_titles_and_markers():
    page = render()
    parsed = parse(page)
    doc = parsed.find("doc", within=parsed.find("query")[0])[0]  # d_conc
    spans = [e for i, e in enumerate(parsed.elements) if e["tag"] == "i" and parsed.inside(i, doc)]
    assert [float(e["attrs"]["title"]) for e in spans] == pytest.approx([0.0, 0.01, 0.0, 0.02, 8.9, 0.0], abs=1e-3)
    # level = round(8 |score| / max |score|): 0.01 and 0.02 of 8.9 stay unshaded
    assert [e["classes"] for e in spans] == [[], [], [], [], ["p8"], []]
    assert spans[0]["text"] == "⟨eos⟩" and "<|endoftext|>" not in page
    code = parsed.find("doc", within=parsed.find("query")[0])[2]  # d_code: negative scores, newline token
    classes = [e["classes"] for i, e in enumerate(parsed.elements) if e["tag"] == "i" and parsed.inside(i, code)]
    assert classes == [["n8"]] * 4 + [["n4"]] * 2
    assert "↵<br>" in page


def test_escaping_and_self_contained():
    page = render()
    assert "<script" not in page.lower()  # the page has no script of its own, and document text is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;&amp; c)" in page
    for needle in ("http://", "https://", "<link", "src=", "url(", "@import"):
        assert needle not in page.lower(), needle
    parsed = parse(page)
    token_texts = [e["text"] for e in parsed.elements if e["tag"] == "i" and "&&" in e["text"]]
    assert token_texts == [" && c)"] * 2  # d_code is a top document of both queries
    (footer,) = [e["text"] for e in parsed.elements if e["tag"] == "footer"]
    assert "config_hash: abc123\n" in footer and 'factors: {"strategy": "ekfac"}\n' in footer


def test_layer_profile_numbers():
    parsed = parse(render())
    section = parsed.find("query")[0]
    (profile,) = parsed.find("lp", within=section)
    # q_fact: layer_0 = 3 + 3 - 0.5 = 5.5, layer_1 = 6 + 1 - 0.5 = 6.5 -> shares 5.5/12, 6.5/12; sorted numerically
    text = parsed.elements[profile]["text"]
    assert text == f"L0{100 * 5.5 / 12:+.1f}%L1{100 * 6.5 / 12:+.1f}%"


def test_max_queries_and_queries_without_top_rows():
    queries, top, tokens, documents, relations = tables()
    extra = pd.DataFrame({"query_id": ["q_none"], "analysis": ["math"], "prompt": ["1+1="], "completion": ["2"]})
    parsed = parse(render(queries=pd.concat([extra, queries], ignore_index=True)))
    assert [parsed.elements[i]["attrs"]["id"] for i in parsed.find("query")] == ["q-q_fact", "q-q_code"]
    parsed = parse(render(max_queries=1))
    assert [parsed.elements[i]["attrs"]["id"] for i in parsed.find("query")] == ["q-q_fact"]


def test_validation():
    queries, top, tokens, documents, relations = tables()
    with pytest.raises(ValueError, match=r"tokens.*'position'"):
        render(tokens=tokens.drop(columns="position"))
    with pytest.raises(ValueError, match=r"documents.*'family'"):
        render(documents=documents.drop(columns="family"))
    with pytest.raises(ValueError, match=r"top.*q_ghost"):
        render(top=pd.concat([top, top.iloc[:1].assign(query_id="q_ghost")], ignore_index=True))


def test_write_explorer_atomic(tmp_path):
    queries, top, tokens, documents, relations = tables()
    target = tmp_path / "sub" / "explorer.html"
    out = write_explorer(target, "tiny-2l", "ekfac", queries, top, tokens, documents, relations, PROVENANCE)
    assert out == target and target.read_text(encoding="utf-8") == render()
    with pytest.raises(ValueError):
        write_explorer(tmp_path / "bad.html", "m", "s", queries.drop(columns="prompt"), top, tokens, documents,
                       relations, PROVENANCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # nothing half-written


# --------------------------------------------------------------------------------------------------------------
def test_renders_in_headless_chromium(tmp_path):
    browser = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)
    if browser is None:
        pytest.skip("no Chromium installed (CI installs Debian's chromium: apt-get install chromium)")
    queries, top, tokens, documents, relations = tables()
    page = write_explorer(tmp_path / "explorer.html", "tiny-2l", "ekfac", queries, top, tokens, documents,
                          relations, PROVENANCE)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]

    def run(name: str, *extra: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile-{name}"
        profile.mkdir()
        return subprocess.run([browser, *flags, f"--user-data-dir={profile}", *extra, page.as_uri()],
                              capture_output=True, text=True, timeout=60, check=True)

    dom = parse(run("dom", "--dump-dom").stdout)
    assert first_query_text(dom) == (queries["prompt"][0], queries["completion"][0])
    assert [d["doc"] for d in doc_blocks(dom, 0)] == ["d_conc", "d_even", "d_code"]

    shot = tmp_path / "explorer.png"
    run("shot", f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.exists() and shot.stat().st_size > 5_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
