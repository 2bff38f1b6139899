"""The workflow end to end on configs/ci.yaml (plus an imported checkpoint), lint, and bad configs at start."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

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
    from influence_study.models.build import build_model, build_model_config
    from influence_study.corpus.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("checkpoint") / "tiny-neox"
    tokenizer = train_tokenizer(["The capital of Astrobia is Vell.", "Human: hello Assistant: hi"] * 10,
                                vocab_size=280, progress=False)
    entry = {"architecture": "gpt_neox", "n_layer": 1, "d_model": 16, "n_head": 2}
    build_model(build_model_config(entry, len(tokenizer), 256, tokenizer.eos_token_id), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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


def scores_targets(config_path: Path, strategy: str = "ekfac") -> list[str]:
    config = yaml.safe_load(config_path.read_text())
    return [f"{config['output_dir']}/scores/{m['name']}/{strategy}/pairwise.parquet" for m in config["models"]]


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
    """The CI study's scores with 1 and with 3 shards equal its 2-shard tables."""
    for shards in (1, 3):
        config_path = copy_upstream(study, tmp_path / f"shards-{shards}", shards=shards)
        run = snakemake(*scores_targets(config_path), "--cores", "2", "--configfile", str(config_path))
        assert "rule train_model" not in run.stdout + run.stderr  # only the scoring stages ran
        root = tmp_path / f"shards-{shards}" / "results"
        for model in [m["name"] for m in study["config"]["models"]]:
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
    assert len(gathered) < len(study["config"]["models"]), "the kill came after scoring had finished"
    for shard in root.glob("scores/*/ekfac/shard-*.parquet"):  # what exists under a final name is complete
        assert read_parquet_metadata(shard)["shard"] and len(pd.read_parquet(shard)) > 0
    # what a user does after a crash: release the killed run's lock, rerun what it left incomplete
    snakemake("--unlock", "--configfile", str(config_path), cwd=tmp_path)
    rerun = snakemake(*scores_targets(config_path), "--cores", "2", "--rerun-incomplete", "--configfile",
                      str(config_path), cwd=tmp_path)
    assert "score_shard" in rerun.stdout + rerun.stderr
    for model in [m["name"] for m in study["config"]["models"]]:
        assert_same_scores(study["root"] / "scores" / model / "ekfac" / "pairwise.parquet",
                           root / "scores" / model / "ekfac" / "pairwise.parquet")
    assert not list(root.rglob(".*.tmp")), "temporary files of the killed jobs are left behind"


def test_slurm_profile_dry_run(tmp_path):
    """The SLURM profile plans the whole study with per-rule resources, and a GPU per model job on CUDA."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(tmp_path / "results")
    config["device"] = "cuda"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--configfile", str(path),
                       "--default-resources", "slurm_account=test", "slurm_partition=gpu")
    text = result.stdout + result.stderr
    blocks = {}
    for block in text.split("rule ")[1:]:
        name = block.split(":", 1)[0].strip()
        blocks.setdefault(name, block)
    for rule, mem_mb, runtime in (("score_shard", 16000, 240), ("factors", 16000, 120), ("train_model", 8000, 240)):
        assert f"mem_mb={mem_mb}" in blocks[rule] and f"runtime={runtime}" in blocks[rule], blocks[rule]
        assert "gpu=1" in blocks[rule] and "slurm_partition=gpu" in blocks[rule], blocks[rule]
    assert "gpu=1" not in blocks["candidates"]
    assert "score_shard" in text and "gather_scores" in text and "This was a dry-run" in text


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
                                                                        models=None))
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
