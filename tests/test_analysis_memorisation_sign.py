"""Memorisation and the sign of influence: the loss gaps and groups against hand computations, the AUCs against
counting ordered pairs, the verdict rules, and the scoring step against separate engine calls (one validation
document and one training document at a time)."""

import numpy as np
import pandas as pd
import pytest
import torch

from influence_study.analyses import memorisation_sign as ms
from influence_study.stages.memorisation_sign import score_documents
from influence_study.study.config import validate_config


def pair_auc(labels, scores):
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_loss_gaps_by_hand():
    # d0: in subsets 0, 1 (losses 2, 4), out of 2, 3 (losses 7, 9) -> gap 8 - 3 = 5; d1 only once out -> dropped
    rows = [(0, "d0", True, -2.0, 4), (1, "d0", True, -4.0, 4), (2, "d0", False, -7.0, 4), (3, "d0", False, -9.0, 4),
            (0, "d1", True, -1.0, 2), (1, "d1", True, -1.0, 2), (2, "d1", False, -1.5, 2), (3, "d1", True, -1.0, 2)]
    losses = pd.DataFrame(rows, columns=["subset", "doc_id", "in_subset", "logprob", "n_tokens"])
    gaps = ms.loss_gaps(losses, min_subsets=2).set_index("doc_id")
    assert list(gaps.index) == ["d0"]
    assert gaps.loc["d0", "loss_in"] == pytest.approx(3.0) and gaps.loc["d0", "loss_out"] == pytest.approx(8.0)
    assert gaps.loc["d0", "gap"] == pytest.approx(5.0) and gaps.loc["d0", "gap_per_token"] == pytest.approx(1.25)
    assert (gaps.loc["d0", "n_in"], gaps.loc["d0", "n_out"]) == (2, 2)
    assert ms.loss_gaps(losses, min_subsets=1).set_index("doc_id").loc["d1", "gap"] == pytest.approx(0.5)


def test_groups_take_the_extreme_shares_and_the_known_families():
    gaps = pd.DataFrame({"doc_id": [f"d{i}" for i in range(10)], "gap": [5, 1, 9, 0, 3, 3, -2, 7, 4, 2]})
    groups = ms.measured_groups(gaps, 0.2)
    assert set(groups[groups == "memorised"].index) == {"d2", "d7"}  # gaps 9 and 7
    assert set(groups[groups == "generalised"].index) == {"d6", "d3"}  # gaps -2 and 0
    assert groups.isna().sum() == 6
    # per token: d0..d9 have 1..10 tokens, so gap/token = 5, .5, 3, 0, .6, .5, -2/7, .875, 4/9, .2
    gaps = gaps.assign(gap_per_token=gaps["gap"] / np.arange(1, 11))
    groups = ms.measured_groups(gaps, 0.2, "gap_per_token")
    assert set(groups[groups == "memorised"].index) == {"d0", "d2"}
    assert set(groups[groups == "generalised"].index) == {"d6", "d3"}
    influence = pd.DataFrame({"doc_id": ["a", "b", "c"], "family": ["quotes", "facts", "canaries"]})
    assert ms.construction_groups(influence).to_dict() == {"a": "memorised", "b": "generalised", "c": "memorised"}


def test_separation_aucs_count_pairs():
    rng = np.random.default_rng(0)
    n = 40
    influence = pd.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "family": "facts",
                              "valid_influence": rng.normal(size=n), "self_influence": rng.exponential(size=n)})
    memorised = rng.random(n) < 0.3
    groups = pd.Series(np.where(memorised, "memorised", "generalised"), index=influence["doc_id"])
    groups.iloc[:5] = None  # left out
    out = ms.separation(influence, groups)
    kept = groups.notna().to_numpy()
    labels = memorised[kept]
    v, s = influence["valid_influence"].to_numpy()[kept], influence["self_influence"].to_numpy()[kept]
    assert out["auc_sign"] == pytest.approx(pair_auc(labels, (v < 0).astype(float)))
    assert out["auc_minus_influence"] == pytest.approx(pair_auc(labels, -v))
    assert out["auc_self_influence"] == pytest.approx(pair_auc(labels, s))
    assert out["memorised"]["negative_share"] == pytest.approx((v[labels] < 0).mean())
    assert out["documents"] == {"memorised": int(labels.sum()), "generalised": int((~labels).sum())}


def stats_with(sign_auc, neg_mem, neg_gen, self_auc):
    entry = {"auc_sign": sign_auc, "auc_minus_influence": sign_auc, "auc_self_influence": self_auc,
             "memorised": {"negative_share": neg_mem}, "generalised": {"negative_share": neg_gen}}
    return {"models": {"m": {"construction": entry, "measured": entry}}}


def test_verdicts_follow_the_checks():
    sign, own = ms.verdicts(stats_with(0.8, 0.9, 0.2, 0.7))
    assert sign.verdict == "replicated" and own.verdict == "replicated" and len(sign.checks) == 4
    sign, own = ms.verdicts(stats_with(0.5, 0.2, 0.2, 0.4))
    assert sign.verdict == "not replicated" and own.verdict == "not replicated"
    sign, _ = ms.verdicts(stats_with(0.55, 0.3, 0.2, 0.6))
    assert sign.verdict == "mixed"
    assert ms.verdicts({"models": {}})[0].verdict == "not measured"


def test_document_table_and_statistics_per_grouping():
    rng = np.random.default_rng(1)
    n = 30
    ids = [f"d{i:02d}" for i in range(n)]
    families = ["canaries", "quotes"] + ["facts"] * (n - 2)

    def influence():
        return pd.DataFrame({"doc_id": ids, "family": families, "n_tokens": rng.integers(3, 40, n),
                             "self_influence": rng.exponential(size=n), "valid_influence": rng.normal(size=n)})

    by_model = {"small": influence(), "big": influence()}
    gap = rng.normal(size=n) * 3
    gaps = pd.DataFrame({"doc_id": ids, "loss_in": 1.0, "loss_out": 1.0 + gap, "gap": gap,
                         "gap_per_token": gap / by_model["small"]["n_tokens"]})
    table = ms.document_table(by_model, gaps, "small", share=0.2)
    small = table[table["model"] == "small"].set_index("doc_id")
    assert small["measured"].to_dict() == ms.measured_groups(gaps, 0.2).reindex(ids).to_dict()
    assert small["measured_per_token"].to_dict() == ms.measured_groups(gaps, 0.2, "gap_per_token").reindex(
        ids).to_dict()
    assert (small["measured_per_token"] == "memorised").sum() == 6
    assert table.loc[table["model"] == "big", list(ms.MEASURED)].isna().all().all()
    stats = ms.statistics(table, "small")
    assert set(stats["models"]["small"]) >= {"construction", *ms.MEASURED}
    assert set(stats["models"]["big"]) == {"construction"}
    expected = ms.separation(by_model["small"], small["measured_per_token"].dropna())
    assert stats["models"]["small"]["measured_per_token"] == expected
    sign, _ = ms.verdicts(stats)
    assert any("small (measured_per_token)" in check for check in sign.checks)


TEXTS = [f"The capital of Land{i} is City{i % 5}. It is quiet." for i in range(16)]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A tiny GPT-2 with its tokenizer, a corpus (12 training, 4 validation documents) and EK-FAC factors."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from influence_study import LanguageModelingTask, fit_factors
    from influence_study.stages.influence_inputs import load_study_inputs
    from influence_study.corpus.tokenizer import save_tokenizer, train_tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("memorisation_sign")
    tokenizer_dir = root / "model"
    save_tokenizer(train_tokenizer(TEXTS, vocab_size=200, progress=False), tokenizer_dir)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tokenizer_dir)
    docs = pd.DataFrame({"doc_id": [f"d{i:02d}" for i in range(16)], "text": TEXTS,
                         "family": ["facts"] * 10 + ["canaries", "quotes"] + ["facts"] * 4,
                         "split": ["train"] * 12 + ["valid"] * 4})
    documents = root / "corpus.parquet"
    docs.to_parquet(documents)
    inputs = load_study_inputs(tokenizer_dir, documents)
    factors = fit_factors(inputs.model, LanguageModelingTask(), inputs.document_batches(4).batches, strategy="ekfac",
                          progress=False)
    factors.save(root / "factors")
    config = validate_config({"seed": 0, "device": "cpu", "models": [{"name": "tiny", "architecture": "gpt2",
                              "n_layer": 1, "d_model": 16, "n_head": 2}], "influence": {"batch_size": 5}})
    return {"root": root, "model_dir": str(tokenizer_dir), "documents": str(documents), "docs": docs,
            "factors": str(root / "factors"), "config": config}


def test_score_documents_against_one_pair_at_a_time(tiny_study):
    from influence_study import LanguageModelingTask, pairwise_scores
    from influence_study.engine.factors import Factors
    from influence_study.stages.influence_inputs import document_batches, load_study_inputs

    s = tiny_study
    out = s["root"] / "influence.parquet"
    frame = score_documents(s["config"], "tiny", s["model_dir"], s["factors"], s["documents"], str(out),
                               progress=False)
    assert list(frame.columns) == ms.INFLUENCE_COLUMNS
    assert list(frame["doc_id"]) == [f"d{i:02d}" for i in range(12)]
    assert frame.set_index("doc_id").loc["d10", "family"] == "canaries"
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)

    inputs = load_study_inputs(s["model_dir"], s["documents"])
    factors = Factors.load(s["factors"], model=inputs.model)
    task = LanguageModelingTask()
    valid = s["docs"].loc[s["docs"]["split"] == "valid", "text"].tolist()
    for i in range(12):  # each training document alone, against each validation document alone
        train = document_batches([inputs.document_sequences[i]], inputs.pad_id, 1).batches
        total = 0.0
        for text in valid:
            query = document_batches(inputs.encode_documents([text]), inputs.pad_id, 1).batches
            total += pairwise_scores(inputs.model, task, factors, query, train, dtype=torch.float64,
                                     progress=False).scores.item()
        own = pairwise_scores(inputs.model, task, factors, train, train, dtype=torch.float64, progress=False)
        row = frame.iloc[i]
        assert row["valid_influence"] == pytest.approx(total, rel=1e-3, abs=1e-3 * abs(total) + 1e-6)
        assert row["self_influence"] == pytest.approx(own.scores.item(), rel=1e-3)
        assert row["self_influence"] > 0
        assert row["n_tokens"] == len(inputs.document_sequences[i]) - 1


def test_v2_intervals_over_documents_positive_and_negative_controls():
    rng = np.random.default_rng(0)
    n = 200
    memorised = np.arange(n) < 60
    ids = [f"d{i:03d}" for i in range(n)]
    groups = pd.Series(np.where(memorised, "memorised", "generalised"), index=ids)

    def stats_of(valid, own):
        influence = pd.DataFrame({"doc_id": ids, "family": "facts", "valid_influence": valid, "self_influence": own})
        return {"models": {"m": {"construction": ms.separation(influence, groups)}}}

    # positive control: memorised documents mostly hurt held-out data and have 3x the self-influence
    valid = np.where(memorised, -1.0, 1.0) + 0.5 * rng.normal(size=n)
    own = np.where(memorised, 3.0, 1.0) * rng.exponential(size=n) + np.where(memorised, 2.0, 0.0)
    sign, self_ = ms.verdicts(stats_of(valid, own))
    assert sign.verdict_v2 == "replicated" and self_.verdict_v2 == "replicated"
    assert len(sign.interval_checks) == 2 and "200 documents" in sign.interval_checks[0]["name"]
    # negative control: influence and self-influence drawn alike for both groups (identical values by group)
    same = rng.normal(size=n // 2)
    valid = np.concatenate([same, same])
    own = np.abs(np.concatenate([same, same]))
    order = np.r_[np.arange(0, n, 2), np.arange(1, n, 2)]  # memorised docs get every other value
    sign, self_ = ms.verdicts(stats_of(valid[np.argsort(order)], own[np.argsort(order)]))
    assert sign.verdict_v2 != "replicated" and self_.verdict_v2 != "replicated"
