"""The DataInf statistics against references written here: AUCs by counting ordered pairs, detection curves and
recalls by hand, correlations with numpy/scipy; and the verdict rules on hand-made statistics."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from influence_study.analyses import datainf
from influence_study.analyses.intervals import bootstrap_aucs


def pair_auc(labels, scores):
    """P(score of a positive > score of a negative) + 0.5 P(tie), by enumerating every pair."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def totals_frame(rng, methods=("identity", "datainf", "exact"), tasks=("noisy_sentiment", "math_no_reason"),
                 ranks=(1, 4), n=30):
    rows = []
    for task in tasks:
        flipped = rng.random(n) < 0.3
        for rank in ranks:
            base = rng.normal(size=n)
            for method in methods:
                noise = 0 if method == "exact" else rng.normal(scale=0.5 if method == "datainf" else 2.0, size=n)
                rows.append(pd.DataFrame({"model": "m", "task": task, "rank": rank, "method": method,
                                          "example_id": [f"{task}-{i}" for i in range(n)], "class": "c",
                                          "flipped": flipped, "score": base + noise - 2 * flipped}))
    return pd.concat(rows, ignore_index=True)


def test_correlations_against_numpy_and_scipy():
    rng = np.random.default_rng(0)
    totals = totals_frame(rng)
    table = datainf.correlation_table(totals)
    assert set(table["method"]) == {"identity", "datainf"}  # exact is the reference
    assert len(table) == 2 * 2 * 2
    for row in table.itertuples():
        part = totals[(totals["task"] == row.task) & (totals["rank"] == row.rank)]
        x = part[part["method"] == row.method].sort_values("example_id")["score"].to_numpy()
        y = part[part["method"] == "exact"].sort_values("example_id")["score"].to_numpy()
        assert row.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
        assert row.spearman == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-12)


def test_mislabel_auc_counts_pairs_and_the_curve_is_the_running_share():
    rng = np.random.default_rng(1)
    totals = totals_frame(rng)
    aucs, curves = datainf.mislabel_tables(totals)
    assert set(aucs["rank"]) == {1, 4} and (aucs["flipped"] > 0).all()
    for row in aucs.itertuples():
        part = totals[(totals["task"] == "noisy_sentiment") & (totals["rank"] == row.rank)
                      & (totals["method"] == row.method)]
        # a flipped label harms: lower score = more suspicious
        assert row.auc == pytest.approx(pair_auc(part["flipped"], -part["score"]), abs=1e-12)
    # a hand-worked curve: 4 examples, harm order b, d, a, c; flipped b and c
    inspected, found = datainf.detection_curve([False, True, True, False], [0.1, 0.9, -1.0, 0.5], points=5)
    assert inspected.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert found.tolist() == [0, 0.5, 0.5, 0.5, 1.0]
    assert len(curves) == len(aucs) * 101


def test_class_detection_by_hand():
    classes = {"t": "a", "x1": "a", "x2": "b", "x3": "a", "x4": "b"}
    pairwise = pd.DataFrame({"method": "datainf", "test_id": "t", "example_id": ["x1", "x2", "x3", "x4"],
                             "score": [0.9, 0.8, 0.1, 0.05]})
    table = datainf.class_detection(pairwise, classes)
    row = table.iloc[0]
    # same class: x1, x3 (k = 2); top 2 by score: x1, x2 -> recall 1/2
    assert row["recall"] == pytest.approx(0.5)
    assert row["auc"] == pytest.approx(pair_auc([True, False, True, False], [0.9, 0.8, 0.1, 0.05]))  # 0.75
    assert row["auc"] == pytest.approx(0.75)
    # ties are broken by example id
    tied = pairwise.assign(score=0.0)
    assert datainf.class_detection(tied, classes).iloc[0]["recall"] == pytest.approx(0.5)  # x1, x2 first


def stats_for(corr, mislabel, class_auc, class_recall, seconds):
    return {"correlation_with_exact": corr, "mislabel_auc": mislabel, "class_auc": class_auc,
            "class_recall": class_recall, "seconds": seconds,
            "speedups": {m: {f"{o}/datainf": v[o] / v["datainf"] for o in ("lissa", "exact") if o in v}
                         for m, v in seconds.items()}}


@pytest.mark.parametrize("rank_1, rank_8, mislabel, class_auc, class_recall, seconds, exact_seconds, verdict", [
    (0.9, 0.7, 0.8, 0.9, 0.6, 1.0, 100.0, "replicated"),
    (0.1, 0.3, 0.4, 0.4, 0.1, 10.0, 1.0, "not replicated"),
], ids=["good", "bad"])
def test_verdicts_follow_the_checks(rank_1, rank_8, mislabel, class_auc, class_recall, seconds, exact_seconds,
                                    verdict):
    """DataInf's values against fixed baselines: the identity's and LiSSA's correlations with exact (0.5, 0.4),
    mislabel AUCs (0.7, 0.6), the identity's class AUC and recall (0.8, 0.5), and LiSSA's 5 seconds."""
    stats = stats_for({"m": {"1": {"datainf": rank_1, "identity": 0.5, "lissa": 0.4},
                             "8": {"datainf": rank_8, "identity": 0.5, "lissa": 0.4}}},
                      {"m": {"datainf": mislabel, "identity": 0.7, "lissa": 0.6}},
                      {"m": {"math": {"datainf": class_auc, "identity": 0.8}}},
                      {"m": {"math": {"datainf": class_recall, "identity": 0.5}}},
                      {"m": {"datainf": seconds, "lissa": 5.0, "exact": exact_seconds}})
    assert [f.verdict for f in datainf.verdicts(stats)] == [verdict] * 5


def test_a_single_rank_is_not_measured():
    one_rank = stats_for({"m": {"4": {"datainf": 0.9}}}, {}, {}, {}, {})
    assert datainf.verdicts(one_rank)[1].verdict == "not measured"


def test_bootstrap_auc_point_matches_pair_enumeration():
    rng = np.random.default_rng(3)
    labels = rng.random(60) < 0.3
    scores = np.round(rng.normal(size=60) + labels, 1)  # with ties
    point, draws = bootstrap_aucs(labels, np.stack([scores, -scores]), resamples=200)
    assert point[0] == pytest.approx(pair_auc(labels, scores)) and point[1] == pytest.approx(1 - point[0])
    assert draws.shape == (200, 2) and np.all((draws >= 0) & (draws <= 1))


def v2_stats(rng, effect: bool, n=200):
    """Totals, class table and times of one model, two ranks, three tasks; with ``effect`` DataInf is close to
    exact (closer at rank 1), detects the flipped labels and the classes, and is 10x faster; without, every method
    gives the same scores and times."""
    rows, class_rows, time_rows = [], [], []
    for task in ("noisy_sentiment", "math_no_reason", "sentence"):
        flipped = rng.random(n) < 0.2
        for rank in (1, 8):
            exact = rng.normal(size=n)
            shared = rng.normal(size=n)
            for method in ("identity", "lissa", "datainf", "exact"):
                if method == "exact":
                    score = exact
                elif effect:
                    noise = (0.3 if rank == 1 else 0.8) if method == "datainf" else 2.0
                    harm = 3.0 * flipped if method == "datainf" and task == "noisy_sentiment" else 0.0
                    score = exact + noise * rng.normal(size=n) - harm
                else:
                    score = exact + shared  # every method the same
                rows.append(pd.DataFrame({"model": "m", "task": task, "rank": rank, "method": method,
                                          "example_id": [f"{task}-{i}" for i in range(n)], "flipped": flipped,
                                          "score": score}))
            for method, seconds in (("datainf", 1.0), ("lissa", 10.0 if effect else 1.0),
                                    ("exact", 100.0 if effect else 1.0)):
                time_rows.append({"model": "m", "task": task, "rank": rank, "method": method, "fit": 0.0,
                                  "solve": 0.0, "gradients": 0.0, "total": seconds * (1 + 0.1 * rng.random())})
        if task != "noisy_sentiment":
            base = rng.uniform(0.4, 0.6, size=30)
            for method in ("datainf", "identity"):
                lift = 0.35 if (effect and method == "datainf") else 0.0
                class_rows.append(pd.DataFrame({"method": method, "test_id": [f"t{i}" for i in range(30)],
                                                "auc": base + lift, "recall": base / 2 + lift / 2, "model": "m",
                                                "task": task, "rank": 1}))
    totals = pd.concat(rows, ignore_index=True)
    classes = pd.concat(class_rows, ignore_index=True)
    times = pd.DataFrame(time_rows)
    intervals = datainf.interval_statistics(totals, classes, times, detection_rank=1, resamples=500)
    mislabel, _ = datainf.mislabel_tables(totals)
    return datainf.statistics(datainf.correlation_table(totals), mislabel, classes, times, [], 1, intervals)


def test_v2_positive_and_negative_controls():
    rng = np.random.default_rng(0)
    good = datainf.verdicts(v2_stats(rng, effect=True))
    assert [f.verdict_v2 for f in good] == ["replicated"] * 5
    assert all(len(f.interval_checks) for f in good)
    bad = datainf.verdicts(v2_stats(rng, effect=False))
    assert "replicated" not in [f.verdict_v2 for f in bad]
    # equal methods: zero differences and equal times are inconclusive, not contradicted
    assert bad[0].verdict_v2 == "inconclusive" and bad[4].verdict_v2 in ("inconclusive", "mixed",
                                                                          "not replicated")
