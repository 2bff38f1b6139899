"""Linear datamodeling score (LDS; Park et al. 2023, "TRAK"): does the sum of a query's influence scores over a
subset of the training documents predict, across subsets, what a model retrained on that subset does?

Grosse et al. (2023) validate EK-FAC against the proximal Bregman response function and claim that it approximates
retraining better than the gradient dot product; they report no LDS. Here the smallest model of the family is
retrained from scratch on ``subsets`` random subsets S_j of the training documents (each a share ``fraction`` of
them; same architecture, init seed, tokenizer and learning-rate schedule, with the training and warmup steps scaled
by ``fraction`` so that every retrain sees as many epochs as the original). For each query q and strategy:

    predicted(q, S_j) = sum over documents d in S_j of score(q, d)     (the original model's influence)
    measured(q, S_j)  = log p(completion | prompt) of the model retrained on S_j
    LDS(q)            = Spearman correlation over j of predicted(q, S_j) and measured(q, S_j)

and the LDS of a strategy is the mean over queries, with a bootstrap confidence interval (also per query family).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

SUBSET_SEED_TAG = 0x1D5  # separates the subsets' random stream from the other uses of the master seed
STRATEGY_LABELS = {"ekfac": "EK-FAC", "kfac": "K-FAC", "diagonal": "diagonal", "identity": "gradient dot product"}
ALL = "all"


# --- the retrained model and its subsets ------------------------------------------------------------------------


def lds_model(config: Mapping) -> str | None:
    """The model the LDS retrains: ``analyses.lds.model``, else the from-scratch model with the fewest parameters
    (counted on the meta device, nothing is allocated); ``None`` when every model is an imported checkpoint."""
    from influence_study.study.config import model_entry

    named = config["analyses"]["lds"]["model"]
    if named is not None:
        if model_entry(config, named).get("checkpoint"):
            raise ValueError(f"analyses.lds.model: {named!r} is an imported checkpoint; the LDS retrains a model "
                             f"from scratch, so name a model of `models` without `checkpoint`")
        return named
    scratch = [m for m in config["models"] if not m.get("checkpoint")]
    if not scratch:
        return None
    return min(scratch, key=lambda entry: parameter_count(entry, config))["name"]


def parameter_count(entry: Mapping, config: Mapping) -> int:
    """Parameters of a from-scratch model entry (vocabulary of ``tokenizer.vocab_size``), built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from influence_study.study.config import training_settings
    from influence_study.models.build import build_model_config, count_parameters

    seq_len = training_settings(config, entry["name"])["seq_len"]
    model_config = build_model_config(entry, config["tokenizer"]["vocab_size"], seq_len, eos_token_id=0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return count_parameters(model)["parameters"]


def draw_subsets(doc_ids: Sequence, n_subsets: int, fraction: float, seed: int) -> pd.DataFrame:
    """``n_subsets`` random subsets of ``doc_ids``, each of ``round(fraction * n)`` documents (at least 1, at most
    n - 1), drawn without replacement from a stream seeded by ``(seed, subset)``: one row per (``subset``,
    ``doc_id``), documents in their given order."""
    doc_ids = np.asarray(doc_ids)
    if not 0 < fraction < 1:
        raise ValueError(f"analyses.lds.fraction: expected 0 < fraction < 1, got {fraction}")
    if len(doc_ids) < 2:
        raise ValueError(f"the LDS needs at least 2 training documents, got {len(doc_ids)}")
    size = int(min(max(round(fraction * len(doc_ids)), 1), len(doc_ids) - 1))
    frames = []
    for subset in range(n_subsets):
        rng = np.random.default_rng([seed, SUBSET_SEED_TAG, subset])
        chosen = np.sort(rng.choice(len(doc_ids), size=size, replace=False))
        frames.append(pd.DataFrame({"subset": subset, "doc_id": doc_ids[chosen]}))
    return pd.concat(frames, ignore_index=True)


def subset_training_settings(settings: Mapping, fraction: float) -> dict:
    """The original training settings with ``steps`` and ``warmup_steps`` scaled by ``fraction`` (same epochs and
    the same learning-rate schedule per epoch); the validation loss is measured once, at the end."""
    steps = max(1, round(settings["steps"] * fraction))
    return {**settings, "steps": steps, "warmup_steps": min(round(settings["warmup_steps"] * fraction), steps),
            "eval_every": steps}


def make_subsets(config: Mapping, documents: str, subsets: str, n_subsets: int, fraction: float) -> None:
    """Step of ``lds_subsets``: draw ``n_subsets`` random subsets of the training documents, each a share
    ``fraction`` of them (``analyses.lds``; rule parameters, so that changing them redraws the subsets)."""
    from influence_study.study.io import write_parquet
    from influence_study.study.provenance import provenance

    docs = pd.read_parquet(documents, columns=["doc_id", "split"])
    table = draw_subsets(docs.loc[docs["split"] == "train", "doc_id"].to_numpy(), n_subsets, fraction,
                         config["seed"])
    write_parquet(table, subsets, metadata=provenance(config, [documents], fraction=fraction))


def retrain_on(config: Mapping, model_name: str, docs: pd.DataFrame, train_doc_ids: Sequence, tokenizer,
               settings: Mapping, device, progress: bool = True):
    """Train ``model_name`` from scratch with the recipe of :func:`influence_study.stages.steps.train_from_scratch`
    (its config entry, init seed and data-order seed) on the training documents ``train_doc_ids``, in that order
    and with repeats: a document listed k times is trained on k times per epoch (the epoch shuffle permutes the
    list). The ``valid`` rows of ``docs`` give the held-out loss. The LDS (subsets) and the calibration analysis
    (added copies) retrain through it. Returns ``(model, TrainingResult, seed)``."""
    from influence_study.stages.steps import train_from_scratch

    train = docs[docs["split"] == "train"].set_index("doc_id", drop=False)
    wanted = pd.Index(list(train_doc_ids))
    unknown = wanted.difference(train.index)
    if len(unknown):
        raise ValueError(f"retrain of {model_name}: {len(unknown)} document ids are not training documents of the "
                         f"corpus (e.g. {list(unknown[:3])})")
    if not train.index.is_unique:
        raise ValueError("retrain: the corpus repeats doc_id values; each training document needs its own id")
    kept = pd.concat([train.loc[wanted].reset_index(drop=True), docs[docs["split"] != "train"]],
                     ignore_index=True)
    return train_from_scratch(config, model_name, kept, tokenizer, settings, device, progress)


def _completion_logprobs(config: Mapping, model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                         device) -> pd.DataFrame:
    """:func:`~influence_study.models.evaluation.completion_scores` with the study's batch size, dtype and the model's
    context length."""
    from influence_study.models.evaluation import completion_scores
    from influence_study.study.runtime import autocast

    max_len = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    with autocast(config["dtype"], device):
        return completion_scores(model, tokenizer, prompts, completions, config["evaluation"]["batch_size"], device,
                                 max_length=max_len)


def query_logprobs(config: Mapping, model, tokenizer, queries: pd.DataFrame, device) -> pd.DataFrame:
    """log p(completion | prompt) of every query under ``model`` (``query_id`` plus the columns of
    :func:`~influence_study.models.evaluation.completion_scores`), scored as the ``evaluate_model`` rule scores them."""
    scores = _completion_logprobs(config, model, tokenizer, queries["prompt"], queries["completion"], device)
    return pd.concat([queries[["query_id"]].reset_index(drop=True), scores], axis=1)


def document_logprobs(config: Mapping, model, tokenizer, texts: Sequence[str], device) -> pd.DataFrame:
    """Log-likelihood of each text read as ``EOS text`` (columns of
    :func:`~influence_study.models.evaluation.completion_scores`, one row per text)."""
    return _completion_logprobs(config, model, tokenizer, [""] * len(texts), list(texts), device)


def retrain_subset(config: Mapping, model_name: str, subset: str | int, documents: str, tokenizer_dir: str,
                   queries: str, subsets: str, measurements: str, document_losses: str | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Step of ``lds_retrain``: train ``model_name`` from scratch on training subset ``subset`` (the recipe of
    :func:`influence_study.stages.steps.train_from_scratch`, steps scaled by the fraction) and write its
    log p(completion | prompt) of every query (columns of :func:`~influence_study.models.evaluation.completion_scores`
    plus ``subset, query_id``) and, to ``document_losses``, the log-likelihood of every training document read as
    ``EOS document`` (``subset, doc_id, in_subset, logprob, n_tokens``; the memorisation analysis compares them
    between the retrains with and without each document). The weights are not kept."""
    from transformers import AutoTokenizer

    from influence_study.study.config import training_settings
    from influence_study.study.io import read_parquet_metadata, write_parquet
    from influence_study.study.provenance import provenance
    from influence_study.study.runtime import get_logger, resolve_device

    subset = int(subset)
    membership = pd.read_parquet(subsets)
    chosen = membership.loc[membership["subset"] == subset, "doc_id"]
    if chosen.empty:
        raise ValueError(f"subset {subset}: not in {subsets} (it holds subsets 0..{membership['subset'].max()})")
    docs = pd.read_parquet(documents)
    train_docs = docs[docs["split"] == "train"].reset_index(drop=True)
    in_subset = train_docs["doc_id"].isin(set(chosen))
    fraction = read_parquet_metadata(subsets).get("fraction", config["analyses"]["lds"]["fraction"])
    settings = subset_training_settings(training_settings(config, model_name), fraction)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    device = resolve_device(config["device"])
    model, result, seed = retrain_on(config, model_name, docs, train_docs.loc[in_subset, "doc_id"], tokenizer,
                                     settings, device, progress)
    table = pd.read_parquet(queries, columns=["query_id", "prompt", "completion"])
    frame = query_logprobs(config, model, tokenizer, table, device)
    frame.insert(0, "subset", subset)
    valid_loss = float(result.history["valid_loss"].iloc[-1]) if len(result.history) else float("nan")
    record = provenance(config, [documents, tokenizer_dir, queries, subsets], model=model_name, subset=subset,
                        documents=int(len(chosen)), settings=settings, seed=seed, seconds=result.seconds,
                        valid_loss=valid_loss)
    write_parquet(frame, measurements, metadata=record)
    if document_losses is not None:
        doc_scores = document_logprobs(config, model, tokenizer, train_docs["text"], device)
        write_parquet(pd.DataFrame({"subset": subset, "doc_id": train_docs["doc_id"].to_numpy(),
                                    "in_subset": in_subset.to_numpy(),
                                    "logprob": doc_scores["logprob"].to_numpy(),
                                    "n_tokens": doc_scores["n_tokens"].to_numpy()}), document_losses, metadata=record)
    get_logger().info("subset %d: %d documents, %d steps in %.1f s, valid loss %.4f", subset, len(chosen),
                      settings["steps"], result.seconds, valid_loss)
    return frame


# --- the statistic ----------------------------------------------------------------------------------------------


def predicted_changes(pairwise: pd.DataFrame, membership: pd.DataFrame) -> pd.DataFrame:
    """Query x subset matrix of the summed scores of each subset's documents: ``pairwise`` has ``query_id, doc_id,
    score`` for every (query, document) pair; ``membership`` has ``subset, doc_id``."""
    from influence_study.study.io import require_columns

    require_columns(pairwise, ["query_id", "doc_id", "score"], "pairwise scores")
    require_columns(membership, ["subset", "doc_id"], "subsets")
    queries = pd.Index(pd.unique(pairwise["query_id"].astype(str)), name="query_id")
    docs = pd.Index(pd.unique(pairwise["doc_id"].astype(str)), name="doc_id")
    if len(pairwise) != len(queries) * len(docs):
        raise ValueError(f"pairwise scores: {len(pairwise)} rows for {len(queries)} queries x {len(docs)} documents;"
                         f" the LDS needs the score of every pair")
    scores = np.zeros((len(queries), len(docs)))
    scores[queries.get_indexer(pairwise["query_id"].astype(str)), docs.get_indexer(pairwise["doc_id"].astype(str))] \
        = pairwise["score"].to_numpy(np.float64)
    subsets = pd.Index(sorted(membership["subset"].unique()), name="subset")
    columns = docs.get_indexer(membership["doc_id"].astype(str))
    if (columns < 0).any():
        missing = membership.loc[columns < 0, "doc_id"].iloc[:3].tolist()
        raise ValueError(f"subsets hold documents without scores (e.g. {missing})")
    indicator = np.zeros((len(subsets), len(docs)))
    indicator[subsets.get_indexer(membership["subset"]), columns] = 1.0
    return pd.DataFrame(scores @ indicator.T, index=queries, columns=subsets)


def measured_matrix(measurements: pd.DataFrame, column: str = "logprob") -> pd.DataFrame:
    """Query x subset matrix of the retrained models' ``column`` (rows ``subset, query_id, <column>``)."""
    frame = measurements.assign(query_id=measurements["query_id"].astype(str))
    return frame.pivot(index="query_id", columns="subset", values=column).sort_index(axis=1)


def row_spearman(predicted: pd.DataFrame, measured: pd.DataFrame) -> pd.Series:
    """Spearman correlation of each row of ``predicted`` with the same row of ``measured`` (aligned on index and
    columns; average ranks for ties; NaN where a row is constant)."""
    from scipy import stats

    queries = predicted.index.intersection(measured.index, sort=False)
    subsets = predicted.columns.intersection(measured.columns)
    if len(subsets) < 3:
        return pd.Series(np.nan, index=queries, name="lds")
    a = stats.rankdata(predicted.loc[queries, subsets].to_numpy(), axis=1)
    b = stats.rankdata(measured.loc[queries, subsets].to_numpy(), axis=1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return pd.Series(rho, index=queries, name="lds")


def lds_tables(pairwise: Mapping[str, pd.DataFrame], membership: pd.DataFrame, measurements: pd.DataFrame,
               families: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per strategy (``pairwise[strategy]``): the LDS of each query (``strategy, query_id, analysis, lds``) and
    the points behind it (``strategy, query_id, subset, predicted, measured``). ``families`` maps query_id to its
    family (``analysis`` column of the queries)."""
    measured = measured_matrix(measurements)
    per_query, points = [], []
    for strategy, table in pairwise.items():
        predicted = predicted_changes(table, membership)
        rho = row_spearman(predicted, measured)
        per_query.append(pd.DataFrame({"strategy": strategy, "query_id": rho.index,
                                       "analysis": rho.index.map(families).astype(object), "lds": rho.to_numpy()}))
        stacked = predicted.loc[rho.index, measured.columns.intersection(predicted.columns)].stack()
        points.append(pd.DataFrame({"strategy": strategy, "query_id": stacked.index.get_level_values(0),
                                    "subset": stacked.index.get_level_values(1), "predicted": stacked.to_numpy(),
                                    "measured": measured.stack().reindex(stacked.index).to_numpy()}))
    return pd.concat(per_query, ignore_index=True), pd.concat(points, ignore_index=True)


def family_table(per_query: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean LDS with a 95% bootstrap interval per strategy, over all queries (``analysis = "all"``) and per query
    family: ``strategy, analysis, queries, lds, ci_low, ci_high``."""
    from influence_study.analyses.common import mean_ci

    rows = []
    for strategy, group in per_query.groupby("strategy", sort=False):
        parts = [(ALL, group), *group.groupby("analysis", sort=True)]
        for family, part in parts:
            mean, low, high = mean_ci(part["lds"], resamples=resamples, seed=seed)
            rows.append({"strategy": strategy, "analysis": family, "queries": int(part["lds"].notna().sum()),
                         "lds": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def paired_difference(per_query: pd.DataFrame, first: str = "ekfac", second: str = "identity",
                      resamples: int = 2000, seed: int = 0) -> dict:
    """Mean over queries of the paired per-query difference LDS(``first``) − LDS(``second``), with a bootstrap
    interval over the queries both strategies score (``{mean, low, high, n}``; NaNs when either is missing)."""
    from influence_study.analyses.intervals import NAN_INTERVAL, interval

    wide = per_query.pivot_table(index="query_id", columns="strategy", values="lds", aggfunc="first")
    if first not in wide.columns or second not in wide.columns:
        return dict(NAN_INTERVAL)
    return interval((wide[first] - wide[second]).to_numpy(), seed=seed, resamples=resamples)


def typical_query(per_query: pd.DataFrame, strategy: str) -> str | None:
    """The query with the median LDS of ``strategy`` (the one the scatter shows); None without a finite LDS."""
    scored = per_query[(per_query["strategy"] == strategy)].dropna(subset=["lds"]).sort_values(["lds", "query_id"])
    return None if scored.empty else str(scored["query_id"].iloc[(len(scored) - 1) // 2])


def summarise(families: pd.DataFrame) -> dict:
    """``{strategy: {"all": {...}, family: {...}}}`` of a :func:`family_table`."""
    out: dict = {}
    for row in families.itertuples(index=False):
        out.setdefault(row.strategy, {})[row.analysis] = {
            "queries": int(row.queries), "lds": float(row.lds), "ci_low": float(row.ci_low),
            "ci_high": float(row.ci_high)}
    return out


# --- verdicts ---------------------------------------------------------------------------------------------------


def _fmt(stats: Mapping | None) -> str:
    if not stats or not np.isfinite(stats["lds"]):
        return "not measured"
    return f"{stats['lds']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def verdicts(statistics: Mapping) -> list:
    """The paper's claims about approximating retraining, as LDS checks fixed before the numbers were seen:
    EK-FAC's LDS exceeds the gradient dot product's, and EK-FAC's LDS is positive with a CI excluding 0.
    v2: the paired per-query difference EK-FAC − identity (``ekfac_minus_identity``) and EK-FAC's mean LDS, each
    with its bootstrap interval over queries, above 0."""
    from influence_study.findings import Evidence, finding
    from influence_study.analyses.intervals import describe_interval, interval_check

    name = "Linear datamodeling score"
    lds = statistics["lds"]
    ekfac, identity = lds.get("ekfac", {}).get(ALL), lds.get("identity", {}).get(ALL)
    finite = lambda s: bool(s) and np.isfinite(s["lds"])  # noqa: E731
    where = f"{statistics['model']}, {statistics['subsets']} subsets of {statistics['fraction']:.0%}"
    compared = {}
    if finite(ekfac) and finite(identity):
        compared = {"EK-FAC LDS > gradient dot product LDS": ekfac["lds"] > identity["lds"]}
    positive = {}
    if finite(ekfac):
        positive = {"EK-FAC LDS > 0": ekfac["lds"] > 0, "its 95% CI excludes 0 (lower bound > 0)": ekfac["ci_low"] > 0}
    difference = statistics.get("ekfac_minus_identity")
    queries = (difference or {}).get("n", 0)
    better = Evidence(
        f"mean per-query LDS difference EK-FAC − gradient dot product ({where}): "
        f"{describe_interval(difference, '{:.3f}')} (95% CI over {queries} queries)",
        "the gradient dot product (identity) scores of the same queries and subsets",
        [interval_check(f"LDS EK-FAC − gradient dot product > 0 (paired, bootstrap over {queries} queries)",
                        difference, 0.0, "above")])
    ekfac_interval = {"mean": ekfac["lds"], "low": ekfac["ci_low"], "high": ekfac["ci_high"]} if ekfac else None
    above_zero = Evidence(
        f"mean LDS of EK-FAC ({where}): {_fmt(ekfac)} (95% CI over {ekfac.get('queries', 0) if ekfac else 0} "
        f"queries)", "chance: LDS 0 (scores unrelated to the retrained models' log-probabilities)",
        [interval_check(f"LDS of EK-FAC > 0 (bootstrap over {ekfac.get('queries', 0) if ekfac else 0} queries)",
                        ekfac_interval, 0.0, "above")])
    return [
        finding(name, "EK-FAC approximates retraining better than the gradient dot product (higher LDS).",
                "no LDS reported; its claim is EK-FAC > gradient dot product",
                f"mean LDS ({where}): EK-FAC {_fmt(ekfac)}, gradient dot product {_fmt(identity)}", compared, better),
        finding(name, "EK-FAC influence predicts how retraining on random subsets changes log p(completion) "
                      "(LDS > 0).",
                "no LDS reported; its claim is EK-FAC > gradient dot product",
                f"mean LDS of EK-FAC ({where}): {_fmt(ekfac)}", positive, above_zero),
    ]


# --- the step ---------------------------------------------------------------------------------------------------


def run(config: Mapping, pairwise: Sequence[str], subsets: str, measurements: Sequence[str], queries: str,
        per_query: str, families: str, points: str, summary: str) -> None:
    """Step of ``analysis_lds``: the LDS of every query for each strategy's scores (``pairwise``: one table per
    strategy of the retrained model), per family and overall, from the subsets' measurements."""
    from influence_study.study.io import read_parquet_metadata
    from influence_study.analyses.common import write_analysis

    section = config["analyses"]["lds"]
    tables = {}
    for path in pairwise:
        strategy = read_parquet_metadata(path).get("strategy") or Path(path).parent.name
        tables[strategy] = pd.read_parquet(path, columns=["query_id", "doc_id", "score"])
    membership = pd.read_parquet(subsets)
    measured = pd.concat([pd.read_parquet(p) for p in measurements], ignore_index=True)
    query_table = pd.read_parquet(queries, columns=["query_id", "analysis"])
    family_of = query_table.assign(query_id=query_table["query_id"].astype(str)).set_index("query_id")["analysis"]
    lds_per_query, lds_points = lds_tables(tables, membership, measured, family_of)
    by_family = family_table(lds_per_query, section["resamples"], config["seed"])
    runs = [read_parquet_metadata(p) for p in measurements]
    strategy = "ekfac" if "ekfac" in tables else next(iter(tables))
    statistics = {
        "model": runs[0].get("model") if runs else None,
        "subsets": int(membership["subset"].nunique()),
        "fraction": float(read_parquet_metadata(subsets).get("fraction", section["fraction"])),
        "documents_per_subset": int(membership.groupby("subset").size().iloc[0]),
        "steps": runs[0].get("settings", {}).get("steps") if runs else None,
        "queries": int(lds_per_query["query_id"].nunique()),
        "retrain_seconds_total": float(sum(r.get("seconds", 0.0) for r in runs)),
        "retrain_valid_loss_mean": float(np.mean([r.get("valid_loss", np.nan) for r in runs])),
        "scatter_query": typical_query(lds_per_query, strategy),
        "scatter_strategy": strategy,
        "lds": summarise(by_family),
        "ekfac_minus_identity": paired_difference(lds_per_query, "ekfac", "identity", section["resamples"],
                                                  config["seed"]),
    }
    write_analysis(config, "lds", {"per_query": (lds_per_query, per_query), "families": (by_family, families),
                                   "points": (lds_points, points)},
                   statistics, verdicts, summary, inputs=[*pairwise, subsets, *measurements, queries])
