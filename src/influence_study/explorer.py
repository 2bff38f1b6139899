"""Token-level influence explorer: one self-contained, static HTML page per model.

Everything is rendered server-side into plain HTML with inline CSS (no scripts, fonts, images or other
external resources), so the page reads offline and without JavaScript. It holds a legend, a table of contents
and, per query, a collapsible section with the prompt and completion, the query's layer profile and its top
training documents, whose tokens are shaded by their influence scores.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from influence_study.study.io import atomic_path, require_columns

SPURIOUS_THRESHOLD = 2 / 3
"""Token scores ``a`` with ``‖a‖₂/‖a‖₁`` above this are flagged spurious (influence on one or two tokens)."""
LEVELS = 8  # shading levels per sign
EOS = "<|endoftext|>"
_LAYER = re.compile(r"^layer_(\d+)$")
_REQUIRED = {
    "queries": ("query_id", "analysis", "prompt", "completion"),
    "top": ("query_id", "doc_id", "rank", "score", "score_norm", "rescored"),
    "tokens": ("query_id", "doc_id", "position", "token", "score"),
    "documents": ("doc_id", "family", "text"),
    "relations": ("query_id", "doc_id", "relation"),
}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:0 auto;padding:1em 1.5em;
color:#1f2328;background:#fff}
h1{font-size:1.45em;margin:.2em 0 .1em}.sub{color:#57606a;margin:0 0 .8em}
.legend{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.3em 1em;font-size:.88em}
.legend li{margin:.15em 0}.toc{font-size:.88em;margin:.8em 0}.toc p{margin:.25em 0}
.toc a{margin-right:.5em;white-space:nowrap;color:#0969da;text-decoration:none}
section.query{border-top:1px solid #d0d7de}summary{cursor:pointer;padding:.45em 0}
summary h2{display:inline;font-size:1.05em;margin:0 .4em 0 0}
.an{font-size:.8em;background:#eaeef2;border-radius:10px;padding:.05em .55em;color:#424a53}
.qa{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;background:#f6f8fa;
border:1px solid #d0d7de;border-radius:4px;padding:.3em .6em;margin:.35em 0 0;font-size:.9em}
.completion{background:#dafbe1;border-bottom:2px solid #1a7f37;font-weight:600}
h3{font-size:.9em;margin:.7em 0 .2em;color:#57606a}
.lp{font-family:ui-monospace,Menlo,monospace;display:grid;grid-template-columns:3em 240px 4.5em;gap:2px .5em;
font-size:.8em;align-items:center}
.bar{background:#eaeef2;height:.75em}.bar b{display:block;height:100%}
.pos{background:#d1242f}.neg{background:#0969da}
.doc{margin:.5em 0 .9em;padding-left:.6em;border-left:3px solid #d0d7de}
.dh{font-size:.83em;color:#424a53}.dh>*{margin-right:.35em}.num{font-family:ui-monospace,Menlo,monospace}
.fam{color:#9a6700}.dim{color:#8c959f}
.rel,.spurious,.fr{border-radius:3px;padding:0 .35em;font-weight:600;background:#eaeef2}
.r-same_fact,.r-same_fact_other_language,.r-same_fact_flipped{background:#aceebb;color:#116329}
.r-same_schema,.r-same_theme{background:#ddf4ff;color:#0550ae}
.r-lexical_overlap,.r-exact_copy{background:#ffd8b5;color:#953800}.r-unrelated{color:#6e7781}
.spurious{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}.fr{background:#fbefff;color:#8250df}
.mini{display:inline-flex;align-items:flex-end;height:1em;gap:1px;vertical-align:-2px}
.mini b{width:4px;min-height:1px}
.t{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;font-size:.84em;line-height:1.65;
margin:.25em 0;word-break:break-word}
.t i{font-style:normal;border-radius:2px}.eos{font-size:.75em;opacity:.7}.legend .pos,.legend .neg{color:#fff}
footer{margin-top:2em;border-top:1px solid #d0d7de;font-size:.8em;color:#57606a}
"""


def token_concentration(scores: np.ndarray) -> float:
    """Return ``‖a‖₂ / ‖a‖₁`` of the token scores ``a`` (1 for one token, 1/√n when spread evenly; 0 if all zero)."""
    a = np.abs(np.asarray(scores, dtype=float)).ravel()
    l1 = float(a.sum())
    return float(np.linalg.norm(a) / l1) if l1 > 0 else 0.0


def _esc(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))


def _shares(values: np.ndarray) -> np.ndarray:
    """Per-layer signed shares ``S_l / Σ_k |S_k|`` (their absolute values sum to one)."""
    total = float(np.abs(values).sum())
    return values / total if total > 0 else np.zeros_like(values)


def _profile(shares: np.ndarray, numbers: list[int]) -> str:
    rows = "".join(
        f'<span>L{n}</span><span class=bar><b class={"pos" if s >= 0 else "neg"} style=width:{abs(s) * 100:.1f}%>'
        f"</b></span><span>{s * 100:+.1f}%</span>" for n, s in zip(numbers, shares))
    return f"<div class=lp>{rows}</div>"


def _mini(shares: np.ndarray, numbers: list[int]) -> str:
    """Tiny bar chart, heights relative to the largest share (classes u0..u8 / d0..d8), numbers in the title."""
    peak = float(np.abs(shares).max()) if shares.size else 0.0
    heights = np.rint(np.abs(shares) / peak * LEVELS).astype(int) if peak > 0 else np.zeros(len(shares), dtype=int)
    tip = " ".join(f"L{n} {s * 100:+.0f}%" for n, s in zip(numbers, shares))
    bars = "".join(f'<b class={"u" if s >= 0 else "d"}{h}></b>' for s, h in zip(shares, heights))
    return f'<span class=mini title="layer shares: {tip}">{bars}</span>'


def _token_html(tokens: list[str], scores: np.ndarray) -> str:
    """Token spans shaded by ``|score| / max |score|`` (LEVELS classes per sign), each titled with its score."""
    magnitude = np.nan_to_num(np.abs(scores))
    peak = float(magnitude.max()) if magnitude.size else 0.0
    levels = np.rint(magnitude / peak * LEVELS).astype(int) if peak > 0 else np.zeros(len(scores), dtype=int)
    eos = html.escape(EOS)
    parts = []
    for token, score, level in zip(tokens, scores, levels):
        text = html.escape(str(token)).replace(eos, "<span class=eos>⟨eos⟩</span>").replace("\n", "↵<br>")
        cls = f" class={'p' if score > 0 else 'n'}{level}" if level else ""
        parts.append(f"<i{cls} title={score:.3g}>{text}</i>")
    return "".join(parts)


def _document(row: dict[str, Any], layer_scores: np.ndarray, numbers: list[int], family: Any, relation: str,
              token_data: tuple[list[str], np.ndarray] | None, text: Any) -> str:
    rank, doc = int(row["rank"]), row["doc_id"]
    slug = re.sub(r"[^a-z0-9_]", "_", relation.lower())
    head = [f"<b>#{rank}</b>", f"<code>{_esc(doc)}</code>", f"<span class=fam>{_esc(family)}</span>",
            f'<span class="rel r-{slug}">{_esc(relation)}</span>',
            f'<span class=num>{float(row["score_norm"]):.2e} nats/copy</span>',
            f'<span class="num dim">raw {float(row["score"]):.2e}</span>',
            "<span class=fr>full-rank re-scored</span>" if not pd.isna(row["rescored"]) and bool(row["rescored"])
            else "<span class=dim>not re-scored</span>"]
    if numbers:
        head.append(_mini(_shares(layer_scores), numbers))
    if token_data is None:
        body = f"<div class=t>{_esc(text)}</div><span class=dim>(no token scores)</span>"
    else:
        concentration = token_concentration(token_data[1])
        head.append(f"<span class=dim>c={concentration:.2f}</span>")
        if concentration > SPURIOUS_THRESHOLD:
            head.append(f'<span class=spurious title="‖a‖₂/‖a‖₁ = {concentration:.2f} &gt; 2/3">spurious</span>')
        body = f"<div class=t>{_token_html(*token_data)}</div>"
    return f'<div class=doc data-rank={rank} data-doc="{_esc(doc)}"><div class=dh>{" ".join(head)}</div>{body}</div>'


def render_explorer(model_name: str, strategy: str, queries: pd.DataFrame, top: pd.DataFrame,
                    tokens: pd.DataFrame, documents: pd.DataFrame, relations: pd.DataFrame,
                    provenance: Mapping[str, Any], max_queries: int | None = None) -> str:
    """Render the explorer page for one model and return it as an HTML string.

    Queries appear in the order of ``queries`` (those with rows in ``top`` only, at most ``max_queries``);
    raises ``ValueError`` for a missing column or for ``top`` rows whose query is not in ``queries``.
    """
    for name, frame in (("queries", queries), ("top", top), ("tokens", tokens), ("documents", documents),
                        ("relations", relations)):
        require_columns(frame, _REQUIRED[name], name)
    unknown = set(top["query_id"]) - set(queries["query_id"])
    if unknown:
        raise ValueError(f"top: query_id not in queries: {sorted(map(str, unknown))[:5]}")
    layers = sorted((c for c in top.columns if _LAYER.match(str(c))), key=lambda c: int(_LAYER.match(c)[1]))
    numbers = [int(_LAYER.match(c)[1]) for c in layers]
    families = dict(zip(documents["doc_id"], documents["family"]))
    texts = dict(zip(documents["doc_id"], documents["text"]))
    truth = {(q, d): str(r) for q, d, r in relations[["query_id", "doc_id", "relation"]].itertuples(index=False)}
    ordered = tokens.sort_values("position", kind="stable")
    token_data = {key: (group["token"].tolist(), group["score"].to_numpy(dtype=float))
                  for key, group in ordered.groupby(["query_id", "doc_id"], sort=False)}
    by_query = {q: group.sort_values("rank", kind="stable") for q, group in top.groupby("query_id", sort=False)}
    shown = [q for q in queries[["query_id", "analysis", "prompt", "completion"]].itertuples(index=False)
             if q.query_id in by_query][:max_queries]

    sections, toc = [], {}
    for i, q in enumerate(shown):
        qid, rows = q.query_id, by_query[q.query_id]
        toc.setdefault(str(q.analysis), []).append(f'<a href="#q-{_esc(qid)}">{_esc(qid)}</a>')
        per_layer = np.nan_to_num(rows[layers].to_numpy(dtype=float))
        profile = ("<h3>Layer profile (share of influence, top documents)</h3>"
                   + _profile(_shares(per_layer.sum(axis=0)), numbers)) if layers else ""
        docs = "".join(
            _document(row, scores, numbers, families.get(row["doc_id"], "?"),
                      truth.get((qid, row["doc_id"]), "unrelated"), token_data.get((qid, row["doc_id"])),
                      texts.get(row["doc_id"], "")) for row, scores in zip(rows.to_dict("records"), per_layer))
        sections.append(
            f'<section class=query id="q-{_esc(qid)}"><details{" open" if i == 0 else ""}><summary>'
            f"<h2>{_esc(qid)}</h2><span class=an>{_esc(q.analysis)}</span><div class=qa>"
            f"<span class=prompt>{_esc(q.prompt)}</span><span class=completion>{_esc(q.completion)}</span></div>"
            f"</summary>{profile}<h3>Top documents ({len(rows)})</h3>{docs}</details></section>")

    toc_html = "".join(f"<p><b>{_esc(a)}</b> ({len(links)}): {' '.join(links)}</p>" for a, links in toc.items())
    prov = "\n".join(f"{_esc(k)}: {_esc(v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))}"
                     for k, v in provenance.items())
    shading = "".join(f".t .p{k}{{background:rgba(209,36,47,{0.85 * k / LEVELS:.3f})}}"
                      f".t .n{k}{{background:rgba(9,105,218,{0.85 * k / LEVELS:.3f})}}" for k in range(1, LEVELS + 1))
    shading += "".join(f".mini .u{k}{{height:{100 * k / LEVELS:.1f}%}}.mini .d{k}{{height:{100 * k / LEVELS:.1f}%}}"
                       for k in range(1, LEVELS + 1))
    shading += ".mini [class^=u]{background:#d1242f}.mini [class^=d]{background:#0969da}"
    strong = ",".join(f".t .{s}{k}" for s in "pn" for k in range(LEVELS - 2, LEVELS + 1))
    title = f"Influence explorer: {_esc(model_name)} ({_esc(strategy)})"
    legend = (
        "<ul>"
        "<li><b>Shading.</b> Each token's background shows its influence score: <span class=pos>&nbsp;red&nbsp;"
        "</span> positive, <span class=neg>&nbsp;blue&nbsp;</span> negative, intensity ∝ |score| / max |score| "
        f"over that document's tokens ({LEVELS} levels per sign). Hover a token for its raw score.</li>"
        "<li><b>Which token.</b> The score at position t is carried by the training gradient at input position "
        "t, i.e. it belongs to the prediction of token t+1: as in the paper, the token <em>before</em> the "
        "predicted one is shaded. <span class=eos>⟨eos⟩</span> marks the end-of-text token that precedes each "
        "document, ↵ a newline.</li>"
        "<li><b>Sign.</b> Positive = adding the document to training raises log p(completion | prompt).</li>"
        "<li><b>Normalisation.</b> score_norm = raw score / N (N = number of training sequences): the change of "
        "log p(completion), in nats, per added copy of the document. Raw scores are shown too.</li>"
        "<li><b>Spurious.</b> Flagged when the document's token scores a have ‖a‖₂/‖a‖₁ &gt; 2/3 (influence "
        "sitting on one or two tokens); c is that ratio.</li>"
        "<li><b>Layer profile.</b> Share of layer l = S<sub>l</sub> / Σ<sub>k</sub> |S<sub>k</sub>|, with "
        "S<sub>l</sub> the raw influence in layer l (summed over the top documents for a query; per document in "
        "the small bars, hover for numbers).</li></ul>")
    return (
        f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta name=viewport content="width=device-width,initial-scale=1"><title>{title}</title>'
        f"<style>{_CSS}{shading}{strong}{{color:#fff}}</style></head><body>\n"
        f"<h1>{title}</h1><p class=sub>{len(shown)} queries, {sum(len(by_query[q.query_id]) for q in shown)} "
        f"top documents, {len(layers)} layers</p><div class=legend>{legend}</div>"
        f"<nav class=toc><h3>Queries</h3>{toc_html}</nav>\n" + "\n".join(sections) +
        f"\n<footer><h3>Provenance</h3><pre>{prov}</pre></footer></body></html>\n")


def write_explorer(path: str | os.PathLike, model_name: str, strategy: str, queries: pd.DataFrame,
                   top: pd.DataFrame, tokens: pd.DataFrame, documents: pd.DataFrame, relations: pd.DataFrame,
                   provenance: Mapping[str, Any], max_queries: int | None = None) -> Path:
    """Render the explorer (see :func:`render_explorer`) and write it atomically to ``path``; return the path."""
    page = render_explorer(model_name, strategy, queries, top, tokens, documents, relations, provenance,
                           max_queries=max_queries)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)
