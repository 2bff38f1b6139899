"""The workflow end to end on configs/ci.yaml (plus an imported checkpoint), lint, and bad configs at start."""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from influence_study.run_notes import TINY_CAVEAT
from tiny_models import save_tiny_neox

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args, cwd=ROOT, check=True):
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-NeoX checkpoint with its own tokenizer, saved locally (as a user's model would be)."""
    return save_tiny_neox(tmp_path_factory.mktemp("checkpoint") / "tiny-neox",
                          ["The capital of Astrobia is Vell.", "Human: hello Assistant: hi"])


@pytest.fixture(scope="module")
def study(tmp_path_factory, checkpoint):
    """Run the CI study once (with one imported checkpoint added to its family)."""
    work = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(work / "results")
    config["models"].append({"name": "imported", "checkpoint": str(checkpoint)})
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run = snakemake("--cores", "2", "--configfile", str(config_path))
    return {"root": work / "results", "config": config, "config_path": config_path, "run": run}


@pytest.mark.slow
def test_study_produces_every_output(study):
    root, config = study["root"], study["config"]
    corpus = config["corpus"]["name"]
    docs = pd.read_parquet(root / "corpus" / f"{corpus}.parquet")
    assert set(docs["split"]) == {"train", "valid"}
    assert {"facts", "math", "code", "roleplay", "quotes", "translation", "distractors"} <= set(docs["family"])
    for name in ("", "-relations", "-probes"):
        assert len(pd.read_parquet(root / "queries" / f"{corpus}{name}.parquet")) > 0
    assert (root / "tokenizer" / corpus / "tokenizer.json").is_file()
    names = [m["name"] for m in config["models"]]
    for name in names:
        model_dir = root / "models" / name
        assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
        assert (model_dir / "provenance.json").is_file()
        assert (root / "logs" / "train_model" / f"{name}.log").stat().st_size > 0
    table = pd.read_csv(root / "tables" / "learning.csv")
    assert list(table["model"]) == names
    assert table.loc[table.model == "imported", "source"].item() == "checkpoint"
    assert table["heldout_loss"].notna().all() and (table["heldout_loss"] > 0).all()
    scratch = table[table["source"] == "scratch"]
    assert scratch["parameters"].max() >= 10 * scratch["parameters"].min()
    assert (root / "figures" / "loss_curves.png").stat().st_size > 10_000
    assert (root / "figures" / "loss_curves.pdf").is_file()
    provenance = json.loads((root / "tables" / "learning.parquet.provenance.json").read_text())
    assert provenance["package"] == "influence_study" and len(provenance["config_hash"]) == 16
    for log in ("corpus.log", "tokenizer.log", "learning_table.log", "fig_loss_curves.log"):
        assert (root / "logs" / log).is_file(), log
    assert not list(root.rglob(".*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_influence_tables(study):
    from influence_study.study.io import read_parquet_metadata

    root, config = study["root"], study["config"]
    corpus = config["corpus"]["name"]
    docs = pd.read_parquet(root / "corpus" / f"{corpus}.parquet")
    train = docs[docs["split"] == "train"]
    queries = pd.read_parquet(root / "queries" / f"{corpus}.parquet")
    relations = pd.read_parquet(root / "queries" / f"{corpus}-relations.parquet")
    influence = config["influence"]
    for model in [m["name"] for m in config["models"]]:
        for strategy in influence["strategies"]:
            where = root / "scores" / model / strategy
            table = pd.read_parquet(where / "pairwise.parquet")
            # every query against every training document, once
            assert len(table) == len(queries) * len(train)
            assert not table.duplicated(["query_id", "doc_id"]).any()
            assert set(table["doc_id"].astype(str)) == set(train["doc_id"])
            np.testing.assert_allclose(table["score_norm"], table["score"] / len(train), rtol=1e-6)
            layers = table.filter(regex=r"^layer_\d+$")
            assert layers.shape[1] >= 1
            scale = float(table["score"].abs().max())
            np.testing.assert_allclose(layers.sum(axis=1), table["score"], rtol=1e-4, atol=1e-5 * scale)
            # each query's top-k re-scored at full rank (the paper's practice with query batching)
            assert (table.groupby("query_id", observed=True)["rescored"].sum() == influence["rescore_top_k"]).all()
            record = read_parquet_metadata(where / "pairwise.parquet")
            for key in ("config_hash", "model_fingerprint", "factor_fingerprint", "version", "sign", "normalisation"):
                assert record[key], key
            assert record["model"] == model and record["strategy"] == strategy
            factors = json.loads((root / "factors" / model / strategy / "metadata.json").read_text())
            assert record["model_fingerprint"] == factors["model_fingerprint"]
            assert factors["fit_documents"]["count"] == min(influence["fit_documents"], len(train))
            # candidate-restricted scores: the BM25 candidates of each query, nothing else
            restricted = pd.read_parquet(where / "candidates.parquet")
            bm25 = pd.read_parquet(root / "candidates" / corpus / "bm25.parquet")
            assert len(restricted) == len(bm25)
            # token scores of each query's top documents; re-scored pairs sum to their full-rank score
            tokens = pd.read_parquet(where / "tokens.parquet")
            assert tokens.groupby("query_id")["doc_id"].nunique().max() == influence["token_documents"]
            sums = tokens.groupby(["query_id", "doc_id"])["score"].sum().rename("token_sum").reset_index()
            joined = sums.merge(table.astype({"query_id": str, "doc_id": str}), on=["query_id", "doc_id"])
            joined = joined[joined["rescored"]]
            assert len(joined) > 0
            np.testing.assert_allclose(joined["token_sum"], joined["score"], rtol=1e-3, atol=1e-4 * scale)
    recall = pd.read_csv(root / "tables" / "bm25_recall.csv")
    assert set(recall["k"]) == set(config["candidates"]["recall_k"])
    assert recall["mean"].between(0, 1).all()
    assert recall.groupby(["model", "strategy"])["mean"].apply(lambda s: s.is_monotonic_increasing).all()
    page = (root / "reports" / "explorer" / f"{config['models'][0]['name']}.html").read_text()
    first = queries.iloc[0]
    assert first["query_id"] in page and "http://" not in page and "https://" not in page
    assert len(relations) > 0 and "same_fact" in page
    for stage in ("factors", "score_shard", "gather_scores", "token_scores", "explorer"):
        assert list((root / "benchmarks" / stage).rglob("*.tsv")), stage


@pytest.mark.slow
def test_finetune_and_memorisation_tables(study):
    """The DataInf jobs: every method scores every training example once (and every test example, except the
    summed-only LiSSA), with the sign in the provenance; the memorisation jobs and the LDS document losses."""
    from influence_study.study.io import read_parquet_metadata

    root, section = study["root"], study["config"]["finetune"]
    tasks = pd.read_parquet(root / "finetune" / "tasks.parquet")
    for model in section["models"]:
        for task in section["tasks"]:
            rows = tasks[tasks["task"] == task]
            train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
            for rank in section["ranks"]:
                where = root / "finetune" / model / task / f"rank-{rank}"
                influence = pd.read_parquet(where / "influence.parquet")
                assert set(influence["method"]) == {"identity", "datainf", "ekfac", "lissa", "exact"}
                for _, part in influence.groupby("method"):
                    assert sorted(part["example_id"]) == sorted(train["example_id"])
                assert np.isfinite(influence["score"]).all()
                pairwise = pd.read_parquet(where / "pairwise.parquet")
                assert "lissa" not in set(pairwise["method"])
                assert len(pairwise) == 4 * len(train) * len(test)
                meta = read_parquet_metadata(where / "influence.parquet")
                assert meta["rank"] == rank and "positive" in meta["sign"]
                summary = json.loads((where / "summary.json").read_text())
                assert set(summary["seconds"]) == set(influence["method"])
    removal = pd.read_parquet(root / "finetune" / section["models"][0] / "removal.parquet")
    assert len(removal) > 0
    lds_losses = sorted((root / "lds").glob("*/subset-*/documents.parquet"))
    assert len(lds_losses) == study["config"]["analyses"]["lds"]["subsets"]
    docs = pd.read_parquet(root / "corpus" / f"{study['config']['corpus']['name']}.parquet")
    n_train = int((docs["split"] == "train").sum())
    assert all(len(pd.read_parquet(p)) == n_train for p in lds_losses)
    for model in study["config"]["analyses"]["memorisation_sign"]["models"]:
        table = pd.read_parquet(root / "analyses" / "memorisation_sign" / f"{model}.parquet")
        assert len(table) == n_train and (table["self_influence"] > 0).all()
        assert "canaries" in set(table["family"])


@pytest.mark.slow
def test_the_matched_loss_checkpoint_is_the_original_run_stopped_early_and_is_scored(study):
    root, config = study["root"], study["config"]
    section = config["analyses"]["abstraction"]["matched_loss"]
    where = root / "analyses" / "abstraction" / "matched_loss"
    record = json.loads((where / "checkpoint.json").read_text())
    assert record["measured"] and (record["reference"], record["model"]) == (section["reference"], section["model"])
    original = pd.read_csv(root / "models" / record["model"] / "history.csv")
    reference = pd.read_csv(root / "models" / record["reference"] / "history.csv")
    assert record["target_loss"] == reference["valid_loss"].iloc[-1]
    # the retrain is the original run up to where it stopped (same seed, data order and schedule), measured more
    # often (analyses.abstraction.matched_loss.eval_every): equal losses at every step both measured
    history = pd.DataFrame(record["history"])
    assert list(history["step"]) == list(range(section["eval_every"], record["step"] + 1, section["eval_every"]))
    common = history.merge(original, on="step", suffixes=("", "_original"))
    assert len(common) == int((original["step"] <= record["step"]).sum()) > 0
    np.testing.assert_array_equal(common["valid_loss"], common["valid_loss_original"])
    assert record["trajectory_difference"] == 0.0
    # stopped at the first measurement at or below the reference's final loss (the end if none is)
    below = history[history["valid_loss"] <= record["target_loss"]]
    assert record["reached"] == (len(below) > 0)
    assert record["step"] == (int(below["step"].iloc[0]) if len(below) else int(original["step"].max()))
    # the abstraction analysis's queries against every training document, and its finding at matched loss
    docs = pd.read_parquet(root / "corpus" / f"{config['corpus']['name']}.parquet")
    pairwise = pd.read_parquet(where / "pairwise.parquet")
    assert record["queries"] > 0 and len(pairwise) == record["queries"] * int((docs["split"] == "train").sum())
    assert len(pd.read_parquet(where / "answers.parquet")) == record["queries"]
    summary = json.loads((root / "analyses" / "abstraction.json").read_text())
    matched = [f for f in summary["findings"] if "held-out loss" in f["claim"]]
    assert len(matched) == 1 and f"stopped at step {record['step']}" in matched[0]["statistic"]
    assert summary["statistics"]["matched_loss"]["numbers"]["model"] == section["model"]


def copy_upstream(study, root: Path, **influence) -> Path:
    """A new output directory holding the study's corpus, models and factors (mtimes kept), and its config
    with ``influence`` overrides: only the scoring stages have anything to do there."""
    source = study["root"]
    for sub in ("corpus", "queries", "tokenizer", "models", "factors", "candidates"):
        shutil.copytree(source / sub, root / "results" / sub, symlinks=True)
    config = json.loads(json.dumps(study["config"]))
    config["output_dir"] = str(root / "results")
    config["influence"].update(influence)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def scored_models(config: dict) -> list[str]:
    """The two models the scoring tests rerun: the first trained GPT-2 and the imported checkpoint (two
    architectures, one trained here and one loaded), so that each rerun costs a few jobs, not the family's."""
    names = [m["name"] for m in config["models"]]
    return [names[0], names[-1]]


def scores_targets(config_path: Path, strategy: str = "ekfac") -> list[str]:
    config = yaml.safe_load(config_path.read_text())
    return [f"{config['output_dir']}/scores/{name}/{strategy}/pairwise.parquet" for name in scored_models(config)]


def assert_same_scores(first: Path, second: Path) -> None:
    a, b = pd.read_parquet(first), pd.read_parquet(second)
    assert list(a.columns) == list(b.columns)
    assert (a["query_id"].astype(str) == b["query_id"].astype(str)).all()
    assert (a["doc_id"].astype(str) == b["doc_id"].astype(str)).all()
    assert (a["rescored"] == b["rescored"]).all()
    scale = float(a["score"].abs().max())
    for column in a.columns:
        if column.startswith(("score", "layer_")):
            np.testing.assert_allclose(b[column], a[column], rtol=1e-4, atol=1e-5 * scale, err_msg=column)


@pytest.mark.slow
def test_sharding_is_exact(study, tmp_path):
    """The CI study's scores with 3 shards (an uneven split of its training documents) equal its 2-shard tables
    (for the two models of :func:`scored_models`).
    One shard is not run: it is the unsharded pass that every shard is a slice of."""
    for shards in (3,):
        config_path = copy_upstream(study, tmp_path / f"shards-{shards}", shards=shards)
        run = snakemake(*scores_targets(config_path), "--cores", "2", "--configfile", str(config_path))
        assert "rule train_model" not in run.stdout + run.stderr  # only the scoring stages ran
        root = tmp_path / f"shards-{shards}" / "results"
        for model in scored_models(study["config"]):
            shard_files = sorted((root / "scores" / model / "ekfac").glob("shard-*.parquet"))
            assert [p.name for p in shard_files] == [f"shard-{i}-of-{shards}.parquet" for i in range(1, shards + 1)]
            assert_same_scores(study["root"] / "scores" / model / "ekfac" / "pairwise.parquet",
                               root / "scores" / model / "ekfac" / "pairwise.parquet")


@pytest.mark.slow
def test_killed_scoring_resumes_to_the_uninterrupted_tables(study, tmp_path):
    from influence_study.study.io import read_parquet_metadata

    config_path = copy_upstream(study, tmp_path)
    root = tmp_path / "results"
    log = open(tmp_path / "killed.log", "w")
    # run in tmp_path: Snakemake keeps its lock and incomplete-job markers in .snakemake/ of the working directory
    process = subprocess.Popen([*SNAKEMAKE, *scores_targets(config_path), "--cores", "1", "--configfile",
                                str(config_path)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.time() + 600
    while not list(root.glob("scores/*/ekfac/shard-*.parquet")):
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "no shard was written in 10 minutes"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the whole workflow, mid-scoring, with no chance to clean up
    process.wait()
    log.close()
    gathered = list(root.glob("scores/*/ekfac/pairwise.parquet"))
    assert len(gathered) < len(scored_models(study["config"])), "the kill came after scoring had finished"
    for shard in root.glob("scores/*/ekfac/shard-*.parquet"):  # what exists under a final name is complete
        assert read_parquet_metadata(shard)["shard"] and len(pd.read_parquet(shard)) > 0
    # what a user does after a crash: release the killed run's lock, rerun what it left incomplete
    snakemake("--unlock", "--configfile", str(config_path), cwd=tmp_path)
    rerun = snakemake(*scores_targets(config_path), "--cores", "2", "--rerun-incomplete", "--configfile",
                      str(config_path), cwd=tmp_path)
    assert "score_shard" in rerun.stdout + rerun.stderr
    for model in scored_models(study["config"]):
        assert_same_scores(study["root"] / "scores" / model / "ekfac" / "pairwise.parquet",
                           root / "scores" / model / "ekfac" / "pairwise.parquet")
    assert not list(root.rglob(".*.tmp")), "temporary files of the killed jobs are left behind"


def readme_slurm_command() -> list[str]:
    """The words after ``.venv/bin/snakemake`` of the command in the README's "On a SLURM cluster" section."""
    section = (ROOT / "README.md").read_text().split("## On a SLURM cluster", 1)[1].split("\n## ", 1)[0]
    words = shlex.split(re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " "))
    assert words[0] == ".venv/bin/snakemake", words
    return words[1:]


def test_slurm_profile_dry_run(tmp_path):
    """The README's SLURM command plans the whole study with every job's memory and time (the rules declare
    them; the command's --default-resources replaces default-resources, which then only add account and
    partition), per-rule cluster sizes, a GPU per model job on CUDA, and no "Shell command: None" lines."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    config["device"] = "cuda"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    words = readme_slurm_command()
    assert "--default-resources" in words and "--profile" in words
    words[words.index("--configfile") + 1] = str(path)  # the README's configs/gpu.yaml: here the CI study on CUDA
    words = [w.replace("<account>", "test").replace("<partition>", "gpu") for w in words]
    result = snakemake("-n", *words)
    text = result.stdout + result.stderr
    jobs = job_blocks(text)
    assert Counter(job["rule"] for job in jobs) == job_counts(text)
    blocks = {}
    for job in jobs:
        blocks.setdefault(job["rule"], job["resources"])
    for rule, mem_mb, runtime in (("score_shard", 16000, 240), ("factors", 16000, 120), ("train_model", 8000, 240)):
        assert blocks[rule]["mem_mb"] == str(mem_mb) and blocks[rule]["runtime"] == str(runtime), blocks[rule]
        assert blocks[rule]["gpu"] == "1" and blocks[rule]["slurm_partition"] == "gpu", blocks[rule]
    assert blocks["candidates"].get("gpu", "0") == "0"
    # every job but the target rule `all` (which runs nothing) has its memory and time, numbers, not <TBD>
    unsized = [(job["rule"], job["resources"].get("mem_mb"), job["resources"].get("runtime")) for job in jobs
               if job["rule"] != "all" and not (job["resources"].get("mem_mb", "").isdigit()
                                                and job["resources"].get("runtime", "").isdigit())]
    assert not unsized, unsized
    assert all(job["resources"]["slurm_account"] == "test" for job in jobs if job["rule"] != "all")
    assert {"score_shard", "gather_scores", "notebook", "corpus"} <= set(blocks) and "This was a dry-run" in text
    assert "Shell command" not in text  # the profile does not print the (absent) shell command of script rules


@pytest.mark.slow
def test_rerun_has_nothing_to_do_and_outputs_are_deterministic(study, tmp_path):
    dry = snakemake("--cores", "1", "-n", "--configfile", str(study["config_path"]))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # the same config in another output directory gives the same corpus and the same trained weights
    config = dict(study["config"], output_dir=str(tmp_path / "again"))
    config["models"] = config["models"][:1]
    # sections that name other models take every (that is, the one) model
    config["finetune"] = dict(config["finetune"], models=None)
    config["analyses"] = dict(config["analyses"], memorisation_sign=dict(config["analyses"]["memorisation_sign"],
                                                                        models=None),
                              abstraction=dict(config["analyses"]["abstraction"],
                                               matched_loss={"reference": None, "model": None}))
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    target = tmp_path / "again" / "models" / config["models"][0]["name"]
    snakemake(str(target), "--cores", "2", "--configfile", str(path))  # --configfile takes every later word
    corpus = config["corpus"]["name"]
    pd.testing.assert_frame_equal(pd.read_parquet(study["root"] / "corpus" / f"{corpus}.parquet"),
                                  pd.read_parquet(tmp_path / "again" / "corpus" / f"{corpus}.parquet"))
    from safetensors.torch import load_file

    name = config["models"][0]["name"]
    first = load_file(study["root"] / "models" / name / "model.safetensors")
    second = load_file(tmp_path / "again" / "models" / name / "model.safetensors")
    assert all((first[k] == second[k]).all() for k in first)


ANALYSES = sorted(p.stem for p in (ROOT / "workflow" / "rules" / "analyses").glob("*.smk"))


def _notebook_outputs(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.slow
@pytest.mark.parametrize("name", ANALYSES)
def test_analysis_has_tables_a_figure_an_executed_notebook_and_findings(study, name):
    from influence_study.findings import VERDICTS

    root = study["root"]
    summary = json.loads((root / "analyses" / f"{name}.json").read_text())
    assert summary["analysis"] == name and summary["provenance"]["config_hash"]
    assert summary["findings"], f"{name}: no findings"
    assert all(f["verdict"] in VERDICTS for f in summary["findings"])
    report = (root / "reports" / "findings.md").read_text()
    assert all(f["claim"].replace("|", "\\|") in report for f in summary["findings"])
    assert TINY_CAVEAT in report.split("\n## ")[0]  # configs/ci.yaml is tiny: the report opens by saying so
    assert (root / "figures" / f"{name}.png").stat().st_size > 5_000
    assert (root / "figures" / f"{name}.pdf").is_file()
    # the notebook ran on the CI outputs: no error output, at least one figure, rendered to HTML
    outputs = _notebook_outputs(root / "reports" / "notebooks" / f"{name}.ipynb")
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: the notebook shows no figure"
    assert "<html" in (root / "reports" / "notebooks" / f"{name}.html").read_text()[:2000].lower()
    assert (root / "benchmarks" / "notebooks" / f"{name}.tsv").is_file()


@pytest.mark.slow
def test_snakemake_report_has_every_figure_with_its_caption(study, tmp_path):
    report = tmp_path / "report.zip"
    snakemake("--report", str(report), "--configfile", str(study["config_path"]))
    import zipfile

    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        text = "".join(archive.read(n).decode("utf-8", "ignore") for n in names if n.endswith((".html", ".js")))
    for name in ANALYSES:
        assert any(n.endswith(f"/{name}.png") for n in names), f"{name}: figure not in the report"
    assert "power-law exponent" in text  # the sparsity caption


@pytest.mark.slow
def test_summary_command(study):
    result = subprocess.run([sys.executable, "-m", "influence_study.cli", "summary", str(study["config_path"])],
                            capture_output=True, text=True, check=True)
    assert "Learning table" in result.stdout and "held-out loss falls with size" in result.stdout
    assert "Findings (" in result.stdout and "Sparsity:" in result.stdout


def test_lint_is_clean():
    result = snakemake("--lint", "--configfile", str(ROOT / "configs" / "ci.yaml"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_bad_config_stops_the_workflow_with_one_clear_message(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["models"][1]["n_layer"] = "two"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "models[1].n_layer: expected an integer, got 'two'" in result.stderr
    assert str(path) in result.stderr


def test_the_workflow_prints_a_config_warning_once_before_any_job(tmp_path):
    """A valid config with a setting that does nothing (a query rank above every gradient's rank): the dry run
    plans as usual and says so once, from the main process, not once per job."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    config["influence"]["query_rank"] = 100_000
    path = tmp_path / "rank.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("influence_study: warning: ") == 1, result.stderr[-3000:]
    assert f"{path}: influence.query_rank: 100000 is at least the rank of every tracked gradient" in result.stderr


def test_check_config_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "influence_study.cli", "check-config", str(ROOT / "config.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, architecture: gpt5}]\n")
    result = subprocess.run([sys.executable, "-m", "influence_study.cli", "check-config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "models[0].architecture" in result.stderr


RECORDED_TABLES = ROOT / "tests" / "data" / "ci_study_tables.json"


@pytest.mark.slow
def test_tables_match_the_recorded_hashes(study):
    """Every table of the CI study is bit-identical to the one recorded before the package was reorganised
    (``RECORD_TABLE_HASHES=1`` rewrites the record). Float results depend on the CPU and the torch build, so
    on another machine only the tables that hold no computed float (corpus, queries, relations) are compared."""
    from study_tables import machine_fingerprint, study_table_hashes

    hashes, machine = study_table_hashes(study["root"]), machine_fingerprint()
    if os.environ.get("RECORD_TABLE_HASHES"):
        RECORDED_TABLES.write_text(json.dumps({"machine": machine, "tables": hashes}, indent=1) + "\n")
    recorded = json.loads(RECORDED_TABLES.read_text())
    assert sorted(hashes) == sorted(recorded["tables"]), "the study writes other tables than it did"
    same_machine = recorded["machine"] == machine
    exact = [name for name in recorded["tables"] if same_machine or name.startswith(("corpus/", "queries/"))]
    changed = [name for name in exact if hashes[name] != recorded["tables"][name]]
    assert not changed, f"tables changed ({len(changed)} of {len(exact)} compared): {changed}"


# Config changes rerun exactly what they change (issue #18): dry runs read as their job blocks.
def job_blocks(text: str) -> list[dict]:
    """Every job of a dry run's output (its "rule X:" blocks): ``rule``, ``wildcards`` and ``resources`` (name ->
    value as printed) and ``reason``."""
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        pairs = {key: dict(item.split("=", 1) for item in fields[key].split(", ")) if key in fields else {}
                 for key in ("wildcards", "resources")}
        jobs.append({"rule": re.match(r"(?:local)?rule (\w+):", block).group(1), **pairs,
                     "reason": fields.get("reason", "")})
    return jobs


def job_counts(text: str) -> dict[str, int]:
    """The dry run's "Job stats" table: jobs per rule."""
    table = text.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its modification time and size: what a dry run must leave as it was."""
    return {str(p): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}


def planned(config: dict, path: Path, *targets: str, cwd: Path = ROOT) -> tuple[list[dict], str]:
    """The jobs that a dry run of ``config`` (written to ``path``) plans, and its output; the output directory is
    checked to be unchanged by the dry run."""
    path.write_text(yaml.safe_dump(config))
    before = tree_state(Path(config["output_dir"]))
    result = snakemake("-n", *targets, "--cores", "1", "--configfile", str(path), cwd=cwd, check=False)
    text = result.stdout + result.stderr
    assert tree_state(Path(config["output_dir"])) == before, "the dry run changed files"
    if result.returncode != 0:
        return None, text
    jobs = job_blocks(text)
    assert not jobs or Counter(job["rule"] for job in jobs) == job_counts(text)
    return jobs, text


def test_editing_a_config_value_reruns_the_rules_whose_step_reads_it(tmp_path):
    """Each rule's params carry the config values its step reads (``config_slice``), so Snakemake's params trigger
    replans exactly those rules: after the corpus and the tokenizer ran, a new ``tokenizer.vocab_size`` replans
    the tokenizer alone, a new seed the corpus (and the tokenizer, whose input it rewrites), and a value neither
    reads nothing. The run goes through the default profile, which prints no "Shell command: None" per job."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    target = f"{config['output_dir']}/tokenizer/{config['corpus']['name']}"
    # in tmp_path: Snakemake keeps what it recorded of each job (its params) in .snakemake/ of the working directory
    run = snakemake(target, "--cores", "1", "--profile", str(ROOT / "workflow" / "profiles" / "default"),
                    "--configfile", str(path), cwd=tmp_path)
    assert "Shell command" not in run.stdout + run.stderr
    for changes, expected in (({"tokenizer": {"vocab_size": 400}}, {"tokenizer"}),
                              ({"seed": 1}, {"corpus", "tokenizer"}), ({"influence": {"damping": 0.01}}, set())):
        edited = json.loads(json.dumps(config))
        for section, value in changes.items():
            edited[section] = {**edited[section], **value} if isinstance(value, dict) else value
        jobs, text = planned(edited, tmp_path / "edited.yaml", target, cwd=tmp_path)
        assert jobs is not None, text[-3000:]
        assert {job["rule"] for job in jobs} == expected, (changes, text[-3000:])
        if expected:
            assert "Params have changed since last execution" in text
        else:
            assert "Nothing to be done" in text


def rules_of(jobs: list[dict], rule: str, wildcard: str = "model") -> set[str]:
    return {job["wildcards"][wildcard] for job in jobs if job["rule"] == rule}


@pytest.mark.slow
def test_a_new_damping_replans_the_scores_and_what_reads_them_but_nothing_upstream(study, tmp_path):
    """The CI study's config with ``influence.damping`` changed, on its own output directory: the dry run plans
    every scoring job and the analyses below them, never the corpus, the tokenizer, the models or the factors."""
    config = json.loads(json.dumps(study["config"]))
    config["influence"]["damping"] = 0.01
    jobs, text = planned(config, tmp_path / "damping.yaml")
    assert jobs is not None, text[-3000:]
    rules = {job["rule"] for job in jobs}
    names, strategies = [m["name"] for m in config["models"]], config["influence"]["strategies"]
    shards = {(job["wildcards"]["model"], job["wildcards"]["strategy"]) for job in jobs
              if job["rule"] == "score_shard"}
    assert shards == {(model, strategy) for model in names for strategy in strategies}
    assert rules_of(jobs, "gather_scores") == rules_of(jobs, "token_scores") == set(names)
    assert {"bm25_recall", "explorer", "word_order_scores", "memorisation_influence", "analysis_approximations",
            "analysis_sparsity", "analysis_abstraction", "analysis_lds", "calibration_plan", "notebook",
            "findings"} <= rules
    assert not rules & {"corpus", "tokenizer", "train_model", "evaluate_model", "factors", "candidates",
                        "learning_table", "lds_subsets", "lds_retrain", "validation_setting", "finetune_tasks",
                        "datainf_finetune", "removal_finetunes"}, sorted(rules)
    assert "Params have changed since last execution" in text


@pytest.mark.slow
def test_a_models_training_override_replans_that_model_and_what_reads_it_only(study, tmp_path):
    """One model's ``training.steps`` override (a model entry may override any training setting): its
    train_model job and the jobs below it are planned, no other model's training, factors or scores."""
    from influence_study.stages.lds import lds_model
    from influence_study.study.config import validate_config

    config = json.loads(json.dumps(study["config"]))
    entry = config["models"][1]
    entry["training"] = {**entry.get("training", {}), "steps": config["training"]["steps"] + 10}
    name = entry["name"]
    jobs, text = planned(config, tmp_path / "steps.yaml")
    assert jobs is not None, text[-3000:]
    assert rules_of(jobs, "train_model") == {name}
    for rule in ("evaluate_model", "factors", "score_shard", "gather_scores", "token_scores", "explorer",
                 "word_order_scores"):
        assert rules_of(jobs, rule) == {name}, rule
    rules = {job["rule"] for job in jobs}
    assert {"learning_table", "fig_loss_curves", "bm25_recall", "analysis_sparsity", "findings"} <= rules
    # the LDS and calibration retrains, the fine-tunes and the memorisation scores are of other models
    validated = validate_config(config)
    assert lds_model(validated) != name and name not in validated["finetune"]["models"]
    assert not rules & {"corpus", "tokenizer", "lds_retrain", "calibration_retrain", "datainf_finetune",
                        "memorisation_influence"}, sorted(rules)
    assert "Params have changed since last execution" in text


@pytest.mark.slow
def test_factor_directories_stay_replaceable_and_their_files_read_only(study):
    """Each factors directory keeps its owner's write bit, so Snakemake (which counts a non-writable output as
    protected, for any user but root) can delete and refit it after a config edit; the files in it are read-only
    and not executable, and their content hashes catch an edit in place. A ``protected()`` output fails this."""
    directories = sorted((study["root"] / "factors").glob("*/*"))
    assert directories
    for directory in directories:
        assert directory.stat().st_mode & 0o200, directory
        # Snakemake's own marker of a directory output (.snakemake_timestamp) is not a factor file
        files = [path for path in directory.iterdir() if path.is_file() and not path.name.startswith(".snakemake")]
        assert files and all(stat.S_IMODE(path.stat().st_mode) == 0o444 for path in files), directory


def test_make_clean_ci_removes_the_ci_study_outputs(tmp_path):
    """``make clean-ci`` removes the CI study's output directory (``output_dir`` of configs/ci.yaml by default),
    write-protected factors included."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    ci_output = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())["output_dir"]
    assert re.search(r"^CI_OUTPUT \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1) == ci_output
    output = tmp_path / ci_output
    (output / "factors" / "m" / "ekfac").mkdir(parents=True)
    (output / "factors" / "m" / "ekfac" / "factors.safetensors").write_text("x")
    for path in (output / "factors" / "m" / "ekfac" / "factors.safetensors", output / "factors" / "m" / "ekfac"):
        path.chmod(0o444 if path.is_file() else 0o555)
    result = subprocess.run([make, "-C", str(ROOT), "clean-ci", f"CI_OUTPUT={output}"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not output.exists() and f"removed {output}/" in result.stdout


def test_token_scores_are_planned_for_the_token_strategies_only(tmp_path):
    """``influence.token_strategies`` limits the token-score jobs (and the targets) to its strategies; null plans
    them for every scored strategy; scores, factors and the explorer are planned as before."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    every = planned(dict(config, influence=dict(config["influence"], token_strategies=None)), tmp_path / "all.yaml")[0]
    explorer = planned(dict(config, influence=dict(config["influence"], token_strategies=["ekfac"])),
                       tmp_path / "ekfac.yaml")[0]
    token_jobs = {name: sorted(job["wildcards"]["strategy"] for job in jobs if job["rule"] == "token_scores")
                  for name, jobs in (("every", every), ("explorer", explorer))}
    n_models = len(config["models"])
    assert token_jobs["every"] == sorted(config["influence"]["strategies"] * n_models)
    assert token_jobs["explorer"] == ["ekfac"] * n_models
    others = [Counter(job["rule"] for job in jobs if job["rule"] not in ("token_scores", "all"))
              for jobs in (every, explorer)]
    assert others[0] == others[1]


def test_every_rule_the_scheduling_chain_waits_for_has_a_priority_too(tmp_path):
    """Snakemake starts the ready job of highest priority first, but a rule's priority does not pass to the rules
    it waits for: a prioritised rule whose input comes from an unprioritised one (as the BM25 candidates were) waits
    behind every other job. So each rule that a prioritised rule depends on is prioritised, and the chain holds the
    training, the scores and the matched-loss retrain."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    path = tmp_path / "ci.yaml"
    text = planned(config, path)[1]
    priority = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        found = re.search(r"^    priority: (\d+)$", block, re.M)
        priority[rule] = int(found.group(1)) if found else 0
    assert {"corpus", "train_model", "candidates", "factors", "score_shard", "matched_loss_scores"} <= {
        rule for rule, value in priority.items() if value > 0}, priority
    graph = snakemake("--rulegraph", "--cores", "1", "--configfile", str(path)).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', graph, re.M))
    edges = [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", graph, re.M)]
    assert edges, graph[:500]
    waiting = sorted({(needed, rule) for needed, rule in edges if priority.get(rule, 0) > 0
                      and priority.get(needed, 0) == 0})
    assert not waiting, f"prioritised rules wait for unprioritised ones (needed, rule): {waiting}"
