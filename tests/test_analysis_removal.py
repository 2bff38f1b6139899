"""Influence-guided removal: the test split, the harm ranking against a brute-force count, the random removal, the
statistics and verdicts on hand-made run tables, the figure and notebook, and one end-to-end step on a tiny model."""

import json
import random
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from influence_study.analyses import removal as analysis
from influence_study.finetune import removal as step
from influence_study.stages import removal as stage


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 7, 10, 25])
def test_the_test_split_has_disjoint_halves_covering_the_test_set(n):
    ids = [f"t{i:02d}" for i in range(n)]
    halves = set()
    for seed in range(6):
        selection, evaluation = step.split_test(ids, seed)
        assert len(selection) == n // 2 and len(evaluation) == n - n // 2
        assert not set(selection) & set(evaluation)
        assert sorted(selection + evaluation) == ids
        assert step.split_test(ids, seed) == (selection, evaluation)  # seeded
        halves.add(frozenset(selection))
    if n >= 7:
        assert len(halves) > 1  # the seed matters


def test_the_test_split_refuses_too_few_or_repeated_ids():
    with pytest.raises(ValueError, match="at least two"):
        step.split_test(["a"], 0)
    with pytest.raises(ValueError, match="unique"):
        step.split_test(["a", "b", "a"], 0)


def brute_force_most_harmful(rows, selection, k):
    """Sum each training example's scores over ``selection`` row by row, then keep the examples that fewer than k
    others beat: another example beats x when its sum is lower, or equal with a smaller id."""
    sums = {}
    for test_id, example_id, score in rows:
        sums.setdefault(example_id, 0)
        if test_id in selection:
            sums[example_id] += score
    chosen = []
    for x, sx in sums.items():
        beaten_by = sum(1 for y, sy in sums.items() if sy < sx or (sy == sx and y < x))
        if beaten_by < k:
            chosen.append((beaten_by, x))
    return [x for _, x in sorted(chosen)], sums


def test_most_harmful_examples_against_a_brute_force_count():
    rng = random.Random(3)
    tests = [f"t{i}" for i in range(6)]
    train = [f"x{i:02d}" for i in range(30)]
    # small integer scores, so that many sums tie exactly and the tie-break by id is exercised
    rows = [(t, x, rng.randint(-3, 3)) for t in tests for x in train]
    rng.shuffle(rows)
    pairwise = pd.DataFrame(rows, columns=["test_id", "example_id", "score"]).astype({"score": float})
    selection = ["t4", "t0", "t2"]
    ranking = step.harm_ranking(pairwise, selection, train)
    assert sorted(ranking["example_id"]) == sorted(train)
    for k in (0, 1, 5, 13, 29, 30):
        expected, sums = brute_force_most_harmful(rows, set(selection), k)
        assert step.most_harmful(ranking, k) == expected
    harm = dict(zip(ranking["example_id"], ranking["harm"]))
    assert all(harm[x] == -sums[x] for x in train)
    assert len(set(sums.values())) < len(train)  # ties were present
    with pytest.raises(ValueError, match="cannot remove"):
        step.most_harmful(ranking, 31)


def test_harm_ranking_ignores_the_evaluation_half():
    # x1 hurts the evaluation test example badly, but only the selection example decides
    pairwise = pd.DataFrame({"test_id": ["a", "a", "b", "b"], "example_id": ["x1", "x2", "x1", "x2"],
                             "score": [1.0, -1.0, -100.0, 0.0]})
    assert step.harm_ranking(pairwise, ["a"])["example_id"].tolist() == ["x2", "x1"]
    assert step.harm_ranking(pairwise, ["a", "b"])["example_id"].tolist() == ["x1", "x2"]


def test_harm_ranking_refuses_incomplete_tables():
    pairwise = pd.DataFrame({"test_id": ["a", "a", "b"], "example_id": ["x1", "x2", "x1"], "score": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="selection test examples"):
        step.harm_ranking(pairwise, ["a", "c"])
    with pytest.raises(ValueError, match="not scored against every"):
        step.harm_ranking(pairwise, ["a", "b"])
    with pytest.raises(ValueError, match="have no score"):
        step.harm_ranking(pairwise, ["a"], train_ids=["x1", "x2", "x3"])


def test_random_removal_is_seeded_distinct_and_varies_with_the_seed():
    train = [f"x{i:03d}" for i in range(200)]
    first = step.random_removal(train, 20, study_seed=0, seed=0)
    assert len(first) == len(set(first)) == 20 and set(first) <= set(train)
    assert first == step.random_removal(train, 20, study_seed=0, seed=0)
    assert first != step.random_removal(train, 20, study_seed=0, seed=1)
    assert first != step.random_removal(train, 20, study_seed=1, seed=0)
    assert first[:10] != step.random_removal(train, 10, study_seed=0, seed=0)  # k is part of the seed
    with pytest.raises(ValueError, match="cannot remove"):
        step.random_removal(train[:3], 4, 0, 0)


def test_removal_plan_lists_every_condition_once_per_seed_and_k():
    train = [f"x{i}" for i in range(10)]
    ranking = pd.DataFrame({"example_id": train[::-1], "harm": np.arange(10.0)[::-1]})
    plan = step.removal_plan(train, ranking, [2, 5], seeds=3, study_seed=0)
    keys = [(p["condition"], p["k"], p["seed"]) for p in plan]
    assert sorted(keys) == sorted([("none", 0, s) for s in range(3)] + [(c, k, s) for c in ("harmful", "random")
                                                                        for k in (2, 5) for s in range(3)])
    for p in plan:
        assert len(p["removed"]) == p["k"]
        if p["condition"] == "harmful":
            assert p["removed"] == train[::-1][:p["k"]]
    with pytest.raises(ValueError, match="finetune.removal.k"):
        step.removal_plan(train, ranking, [10], seeds=1, study_seed=0)


# ---------------------------------------------------------------------------------------------------------------
# Statistics and verdicts on hand-made run tables
# ---------------------------------------------------------------------------------------------------------------

def hand_runs(model="m", harmful=(0.8, 0.9, 1.0), random_=(1.05, 1.25, 1.1), none=(1.0, 1.2, 1.1), k=2,
              harmful_flipped=(2, 2, 1), random_flipped=(0, 1, 0)):
    rows = []
    base = {"model": model, "task": "noisy_sentiment", "rank": 4, "method": "datainf", "train_size": 10,
            "train_flipped": 2, "eval_accuracy": 0.5, "eval_examples": 5, "selection_examples": 5}
    for seed in range(len(none)):
        rows.append({**base, "condition": "none", "k": 0, "seed": seed, "removed_flipped": 0,
                     "eval_loss": none[seed], "selection_loss": 1.0})
        rows.append({**base, "condition": "harmful", "k": k, "seed": seed, "removed_flipped": harmful_flipped[seed],
                     "eval_loss": harmful[seed], "selection_loss": 0.5})
        rows.append({**base, "condition": "random", "k": k, "seed": seed, "removed_flipped": random_flipped[seed],
                     "eval_loss": random_[seed], "selection_loss": 1.0})
    return pd.DataFrame(rows)


def test_statistics_by_hand():
    per_run = analysis.per_run_table(hand_runs())
    harmful = per_run[per_run["condition"] == "harmful"].sort_values("seed")
    assert harmful["flipped_share"].tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert harmful["delta_none"].tolist() == pytest.approx([-0.2, -0.3, -0.1])
    assert per_run.loc[per_run["condition"] == "none", "flipped_share"].isna().all()
    assert (per_run["base_flipped_share"] == 0.2).all()

    conditions = analysis.condition_table(per_run).set_index(["condition", "k"])
    assert conditions.loc[("none", 0), "eval_loss"] == pytest.approx(1.1)
    assert conditions.loc[("harmful", 2), "eval_loss"] == pytest.approx(0.9)
    assert conditions.loc[("random", 2), "eval_loss"] == pytest.approx(3.4 / 3)
    assert conditions.loc[("harmful", 2), "flipped_share"] == pytest.approx(2.5 / 3)
    assert conditions.loc[("random", 2), "flipped_share"] == pytest.approx(1 / 6)
    for _, row in conditions.iterrows():
        assert row["eval_loss_low"] <= row["eval_loss"] <= row["eval_loss_high"]
        assert row["seeds"] == 3

    differences = analysis.difference_table(per_run).set_index("contrast")
    assert differences.loc["harmful − none", "difference"] == pytest.approx(-0.2)
    assert differences.loc["random − none", "difference"] == pytest.approx((0.05 + 0.05 + 0.0) / 3)
    assert differences.loc["harmful − random", "difference"] == pytest.approx((-0.25 - 0.35 - 0.1) / 3)
    # every paired difference of harmful − none is negative, so its whole interval is
    assert differences.loc["harmful − none", "high"] < 0

    stats = analysis.statistics(per_run, analysis.condition_table(per_run), analysis.difference_table(per_run))
    assert stats["task"] == "noisy_sentiment" and stats["seeds"] == 3 and stats["k"] == [2]
    node = stats["models"]["m"]["k"]["2"]
    assert node["harmful"]["eval_loss"] == pytest.approx(0.9)
    assert node["harmful_minus_none"]["mean"] == pytest.approx(-0.2)
    assert stats["models"]["m"]["none"]["eval_loss"] == pytest.approx(1.1)


def test_differences_are_paired_by_seed():
    # none varies a lot between seeds, harmful sits 0.1 below it in each: the paired difference is exactly -0.1
    runs = hand_runs(none=(1.0, 2.0, 3.0), harmful=(0.9, 1.9, 2.9), random_=(1.0, 2.0, 3.0))
    differences = analysis.difference_table(analysis.per_run_table(runs)).set_index("contrast")
    assert differences.loc["harmful − none", ["difference", "low", "high"]].tolist() == pytest.approx([-0.1] * 3)


def statistics_of(*runs):
    per_run = analysis.per_run_table(pd.concat(runs, ignore_index=True))
    return analysis.statistics(per_run, analysis.condition_table(per_run), analysis.difference_table(per_run))


def test_verdicts_follow_the_checks():
    replicated = analysis.verdicts(statistics_of(hand_runs()))[0]
    assert replicated.verdict == "replicated" and len(replicated.checks) == 2
    assert replicated.claim == analysis.CLAIM and replicated.paper == "qualitative (Kounavis et al.)"
    assert "flipped labels among the harmful removals 83%" in replicated.measured
    # harmful below none but above random: one check of two
    mixed = analysis.verdicts(statistics_of(hand_runs(harmful=(0.95, 1.15, 1.0), random_=(0.9, 1.0, 1.0))))[0]
    assert mixed.verdict == "mixed"
    assert mixed.checks == {"m, k=2: loss(harmful) < loss(random)": False, "m, k=2: loss(harmful) < loss(none)": True}
    # a second model and k where harmful is worst: checks per model and k
    two = statistics_of(hand_runs(), hand_runs(model="w", harmful=(2.0, 2.0, 2.0)))
    assert len(analysis.verdicts(two)[0].checks) == 4 and analysis.verdicts(two)[0].verdict == "mixed"
    worse = analysis.verdicts(statistics_of(hand_runs(harmful=(1.3, 1.4, 1.5))))[0]
    assert worse.verdict == "not replicated"
    assert analysis.verdicts({"models": {}})[0].verdict == "not measured"


def test_v2_replicates_a_clear_effect_and_not_equal_conditions():
    # positive control: harmful removal 0.2-0.3 below random and none in every seed
    found = analysis.verdicts(statistics_of(hand_runs()))[0]
    assert found.verdict_v2 == "replicated" and len(found.interval_checks) == 2
    assert all(c["side"] == "below" and c["bound"] == 0.0 and c["high"] < 0 for c in found.interval_checks)
    assert "3 seeds" in found.interval_checks[0]["name"] and "random" in found.baseline
    # negative control: the three conditions give the same loss in each seed (differences 0)
    equal = analysis.verdicts(statistics_of(hand_runs(harmful=(1.0, 1.2, 1.1), random_=(1.0, 1.2, 1.1))))[0]
    assert equal.verdict_v2 == "inconclusive"
    # harmful removal worse than random and none in every seed: contradicted
    worse = analysis.verdicts(statistics_of(hand_runs(harmful=(1.3, 1.4, 1.5))))[0]
    assert worse.verdict_v2 == "not replicated"
    assert analysis.verdicts({"models": {}})[0].verdict_v2 == "not measured"


def test_run_writes_tables_summary_figure_and_the_notebook_reads_them(tmp_path):
    from influence_study.plots.removal import figure

    runs = tmp_path / "finetune" / "m" / "removal.parquet"
    runs.parent.mkdir(parents=True)
    table = pd.concat([hand_runs(), hand_runs(k=4, harmful=(0.7, 0.8, 0.9))], ignore_index=True)
    table = table.drop_duplicates(["condition", "k", "seed"]).reset_index(drop=True)
    table.to_parquet(runs)
    out = tmp_path / "analyses"
    paths = {name: str(out / f"removal-{name}.parquet") for name in ("per_run", "conditions", "differences")}
    config = {"seed": 0}
    stage.run(config, [str(runs)], summary=str(out / "removal.json"), **paths)
    summary = json.loads((out / "removal.json").read_text())
    assert summary["statistics"]["k"] == [2, 4]
    assert summary["findings"][0]["verdict"] == "replicated"
    assert len(pd.read_parquet(paths["conditions"])) == 5  # none, and harmful and random at two k
    assert len(pd.read_parquet(paths["differences"])) == 6
    figure(paths["per_run"], paths["conditions"], str(tmp_path / "r.png"), str(tmp_path / "r.pdf"))
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.pdf").stat().st_size > 0

    # the notebook's code cells, run in-process on these outputs (the parameters cell overridden)
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "removal.ipynb", as_version=4)
    nbformat.validate(notebook)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "results_dir" in parameters[0].source
    namespace = {"results_dir": str(tmp_path), "seed": 0, "tiny": False}
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell not in parameters:
            exec(compile(cell.source, "removal.ipynb", "exec"), namespace)  # noqa: S102 (our own notebook)
    import matplotlib.pyplot as plt
    plt.close("all")


# ---------------------------------------------------------------------------------------------------------------
# The step on a tiny model
# ---------------------------------------------------------------------------------------------------------------

def test_the_step_end_to_end_on_a_tiny_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from influence_study.study.config import validate_config
    from influence_study.finetune.datasets import generate_tasks
    from influence_study.stages.finetune import finetune_and_score
    from influence_study.corpus.tokenizer import save_tokenizer, train_tokenizer

    config = validate_config({
        "seed": 0, "device": "cpu",
        "models": [{"name": "tiny", "architecture": "gpt2", "n_layer": 1, "d_model": 16, "n_head": 2}],
        "finetune": {"models": ["tiny"], "ranks": [1, 2], "methods": ["datainf", "exact"],
                     "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01},
                     "influence": {"batch_size": 16},
                     "removal": {"task": "noisy_sentiment", "method": "datainf", "k": [3, 7], "seeds": 2},
                     "tasks": {"noisy_sentiment": {"n_train": 20, "n_test": 6, "flip_fraction": 0.2}}}})
    table = generate_tasks(config["finetune"]["tasks"], config["seed"])
    tasks = tmp_path / "tasks.parquet"
    table.to_parquet(tasks)
    model_dir = tmp_path / "model"
    tokenizer = train_tokenizer((table["prompt"] + table["completion"]).tolist(), vocab_size=300, progress=False)
    save_tokenizer(tokenizer, model_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(model_dir)
    pairwise = tmp_path / "rank-2" / "pairwise.parquet"  # the detection rank: the largest of ranks
    finetune_and_score(config, "tiny", "noisy_sentiment", 2, str(model_dir), str(tasks), str(tmp_path / "i.parquet"),
                       str(pairwise), str(tmp_path / "s.json"), progress=False)
    runs = tmp_path / "removal.parquet"
    frame = stage.run_removal(config, "tiny", str(model_dir), str(tasks), str(pairwise), str(runs), progress=False)

    pd.testing.assert_frame_equal(pd.read_parquet(runs), frame, check_dtype=False)
    assert len(frame) == 2 * (1 + 2 * 2)  # seeds x (none + harmful and random at each k)
    counts = frame.groupby(["condition", "k"]).size().to_dict()
    assert counts == {("none", 0): 2, ("harmful", 3): 2, ("random", 3): 2, ("harmful", 7): 2, ("random", 7): 2}
    assert (frame["rank"] == 2).all() and (frame["method"] == "datainf").all()

    train = table[(table["task"] == "noisy_sentiment") & (table["split"] == "train")]
    flipped = dict(zip(train["example_id"], train["flipped"]))
    test_ids = table.loc[(table["task"] == "noisy_sentiment") & (table["split"] == "test"), "example_id"].tolist()
    selection, evaluation = step.split_test(test_ids, 0)
    assert set(frame["selection_examples"]) == {len(selection)} and set(frame["eval_examples"]) == {len(evaluation)}
    scores = pd.read_parquet(pairwise)
    scores = scores[scores["method"] == "datainf"]
    rows = list(scores[["test_id", "example_id", "score"]].itertuples(index=False, name=None))
    for row in frame.itertuples():
        removed = list(row.removed_ids)
        assert len(removed) == row.k == len(set(removed)) and set(removed) <= set(flipped)
        assert row.kept == 20 - row.k and row.train_size == 20 and row.train_flipped == 4
        assert row.removed_flipped == sum(bool(flipped[i]) for i in removed)
        if row.condition == "harmful":
            expected, _ = brute_force_most_harmful(rows, set(selection), row.k)
            assert removed == expected
        assert np.isfinite(row.eval_loss) and np.isfinite(row.selection_loss) and 0 <= row.eval_accuracy <= 1
    # one seed's conditions share the LoRA seed; the seeds differ
    assert frame.groupby("seed")["train_seed"].nunique().eq(1).all() and frame["train_seed"].nunique() == 2
    random_sets = frame[frame["condition"] == "random"].groupby("k")["removed_ids"].apply(
        lambda s: len({tuple(x) for x in s}))
    assert (random_sets == 2).all()  # drawn anew for each seed

    with pytest.raises(ValueError, match="expected 'other'"):
        stage.run_removal(config, "other", str(model_dir), str(tasks), str(pairwise), str(tmp_path / "x.parquet"),
                         progress=False)
