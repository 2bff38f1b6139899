"""A corpus of one's own end to end: text files, a queries file and a locally saved checkpoint beside a model
trained from scratch. The workflow plans only the analyses whose inputs exist (no synthetic ground truth), and the
whole plan runs: score tables, the explorer, the generic analyses, their notebooks and the findings."""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from influence_study import cli
from influence_study.findings import load_findings
from influence_study.stages.plan import ANALYSES, SYNTHETIC_ONLY, analysis_plan, planned_analyses
from influence_study.study.config import validate_config
from tiny_models import save_tiny_neox

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
GENERIC = ["validation", "lds", "calibration", "approximations", "sparsity", "layers", "keyword_overlap", "datainf",
           "memorisation_sign", "fewer_parameters", "removal"]

PLACES = ["Arden", "Belmor", "Corvin", "Dunmere", "Elstow", "Fenwick", "Galloway", "Harrow"]
FOODS = ["bread", "soup", "cheese", "apples", "honey", "rice", "beans", "pie"]
ANIMALS = ["fox", "owl", "deer", "hare", "otter", "crow", "badger", "wolf"]


def write_corpus(folder: Path) -> Path:
    """Four dozen short documents in two .txt files (blank-line separated), about invented towns."""
    rng = random.Random(0)
    folder.mkdir()
    documents = []
    for i, place in enumerate(PLACES):
        food, animal = FOODS[i], ANIMALS[i]
        documents += [
            f"The town of {place} is known for its {food}. Every market day the bakers of {place} sell {food}.",
            f"In the woods near {place} lives a {animal}. Children of {place} watch the {animal} at dusk.",
            f"Travellers to {place} remember the {food} and the quiet river that runs past the old mill.",
            f"A {animal} crossed the road outside {place} this morning, and nobody was surprised at all.",
            f"The people of {place} cook {food} in winter, when the {animal} hides from the cold wind.",
            f"{place} has one school, one bridge and a festival of {rng.choice(FOODS)} every spring.",
        ]
    (folder / "a-towns.txt").write_text("\n\n".join(documents[:24]) + "\n", encoding="utf-8")
    (folder / "b-towns.txt").write_text("\n\n".join(documents[24:]) + "\n", encoding="utf-8")
    return folder


def write_queries(path: Path) -> Path:
    """Ten queries in two families (one without an id, to be numbered)."""
    rows = [{"query_id": f"food-{i}", "prompt": f"The town of {PLACES[i]} is known for its",
             "completion": f" {FOODS[i]}", "family": "food"} for i in range(5)]
    rows += [{"query_id": f"animal-{i}", "prompt": f"In the woods near {PLACES[i]} lives a",
              "completion": f" {ANIMALS[i]}", "label": "animal"} for i in range(4)]
    rows.append({"prompt": "Travellers to Harrow remember the", "completion": " pie"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-NeoX checkpoint with its own tokenizer, saved locally (as a user's model would be)."""
    return save_tiny_neox(tmp_path_factory.mktemp("checkpoint") / "tiny-neox",
                          ["The town of Arden is known for its bread.", "A fox lives in the woods."])


def user_config(work: Path, checkpoint: Path) -> dict:
    """configs/ci.yaml's settings on the user's corpus: one tiny model from scratch and the checkpoint."""
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(work / "results")
    config["corpus"] = {"name": "towns", "source": "text", "path": str(write_corpus(work / "corpus")),
                        "valid_fraction": 0.1}
    config["queries"] = {"source": str(write_queries(work / "queries.jsonl"))}
    config["models"] = [{"name": "scratch", "architecture": "gpt2", "n_layer": 2, "d_model": 16, "n_head": 2},
                        {"name": "imported", "checkpoint": str(checkpoint)}]
    config["tokenizer"] = {"vocab_size": 300, "min_frequency": 2}
    # One strategy and one validation setting: the generic plan is what is tested, and each job costs CI seconds
    # (keyword_overlap then says it is not measured: it needs the identity strategy).
    config["influence"]["strategies"] = ["ekfac"]
    analyses = config["analyses"]
    analyses["validation"]["settings"] = ["mlp_regression"]
    analyses["abstraction"] = {"top_k": 10}  # ci.yaml's matched-loss pair names models this config does not have
    analyses["calibration"].update(family="food", targets=1)
    analyses["memorisation_sign"]["models"] = None
    analyses["sparsity"]["bootstrap"] = 0
    config["influence"]["shards"] = 1
    config["finetune"].update(models=["scratch"], ranks=[1])
    config["finetune"]["tasks"] = {"noisy_sentiment": config["finetune"]["tasks"]["noisy_sentiment"]}
    return config


def test_the_plan_of_a_user_corpus_has_no_synthetic_analysis(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    config = validate_config(user_config(tmp_path, tmp_path / "ckpt"))
    plan = analysis_plan(config)
    assert list(plan) == list(ANALYSES)
    assert planned_analyses(config) == GENERIC
    for name in SYNTHETIC_ONLY:
        assert "synthetic world's ground truth" in plan[name] and "'text'" in plan[name]
    config["analyses"]["calibration"]["family"] = "facts"
    assert "calibration" not in planned_analyses(config)
    assert "'facts' is no family" in analysis_plan(config)["calibration"] and "animal, food, user" in \
        analysis_plan(config)["calibration"]
    config["models"] = config["models"][1:]  # checkpoints only: nothing to retrain, no measured memorisation
    assert planned_analyses(config) == ["validation", "approximations", "sparsity", "layers", "keyword_overlap",
                                        "datainf", "fewer_parameters", "removal"]


def test_a_text_corpus_without_queries_is_refused_by_check_config(tmp_path, capsys):
    config = user_config(tmp_path, tmp_path)
    del config["queries"]
    config["models"] = config["models"][:1]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["check-config", str(path)]) == 2
    assert "queries.source: required when corpus.source is 'text'" in capsys.readouterr().err


def test_a_bad_queries_file_stops_the_workflow_before_any_job(tmp_path):
    config = user_config(tmp_path, tmp_path)
    config["models"] = config["models"][:1]
    Path(config["queries"]["source"]).write_text('{"prompt": "In the woods near Arden lives a"}\n')
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "invalid configuration: queries.source:" in result.stderr and "missing field(s) completion" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()


def test_the_synthetic_world_plans_every_analysis():
    config = validate_config(yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text()))
    assert planned_analyses(config) == list(ANALYSES)


@pytest.fixture(scope="module")
def user_study(tmp_path_factory, checkpoint):
    work = tmp_path_factory.mktemp("user-study")
    config = user_config(work, checkpoint)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([*SNAKEMAKE, "--cores", "2", "--configfile", str(path)], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, f"snakemake failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return {"root": work / "results", "config": config, "path": path, "run": run}


@pytest.mark.slow
def test_a_user_corpus_runs_the_generic_analyses(user_study):
    root, config = user_study["root"], user_study["config"]
    queries = pd.read_parquet(root / "queries" / "towns.parquet")
    assert len(queries) == 10 and queries["query_id"].iloc[-1] == "q-00009"
    assert queries.set_index("query_id")["analysis"].to_dict()["animal-0"] == "animal"
    for name in ("-relations", "-probes"):
        assert pd.read_parquet(root / "queries" / f"towns{name}.parquet").empty
    n_train = int((pd.read_parquet(root / "corpus" / "towns.parquet")["split"] == "train").sum())
    for model in ("scratch", "imported"):
        for strategy in config["influence"]["strategies"]:
            pairwise = pd.read_parquet(root / "scores" / model / strategy / "pairwise.parquet")
            assert len(pairwise) == len(queries) * n_train
            assert (root / "scores" / model / strategy / "tokens.parquet").is_file()
        page = (root / "reports" / "explorer" / f"{model}.html").read_text()
        assert "animal-0" in page and "food" in page
    assert (root / "tables" / "bm25_recall.csv").is_file()
    for name in GENERIC:
        summary = json.loads((root / "analyses" / f"{name}.json").read_text())
        assert summary["analysis"] == name
        assert (root / "reports" / "notebooks" / f"{name}.html").is_file()
    for name in SYNTHETIC_ONLY:
        assert not (root / "analyses" / f"{name}.json").exists()
        assert not (root / "reports" / "notebooks" / f"{name}.html").exists()
    summaries = sorted((root / "analyses").glob("*.json"))
    assert sorted(p.stem for p in summaries) == sorted(GENERIC)
    assert load_findings(summaries) and "## Sparsity" in (root / "reports" / "findings.md").read_text()


@pytest.mark.slow
def test_the_notebooks_of_a_tiny_run_say_so_and_print_no_warning(user_study):
    notebooks = sorted((user_study["root"] / "reports" / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in notebooks] == sorted(GENERIC)
    for path in notebooks:
        cells = nbformat.read(path, as_version=4).cells
        outputs = [o for cell in cells for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o.get("name") == "stderr"], (path.name, outputs)
        shown = [str(o.get("data", {}).get("text/markdown", "")) for o in outputs]
        assert sum("verdicts mean nothing" in text for text in shown) == 2, path.name  # first and last
        n_train = int((pd.read_parquet(user_study["root"] / "corpus" / "towns.parquet")["split"] == "train").sum())
        assert f"{n_train} training documents" in shown[-1] and "10 queries (animal 4, food 5, user 1)" in shown[-1]
    assert "IPKernelApp" not in user_study["run"].stderr and "TqdmWarning" not in user_study["run"].stderr


@pytest.mark.slow
def test_the_summary_of_a_user_run(user_study, capsys):
    assert cli.main(["summary", str(user_study["path"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NOTE: This run is a tiny configuration") and "user " in out
    assert "completes nan" not in out


@pytest.mark.slow
def test_the_user_study_is_complete_and_plans_nothing_else(user_study):
    dry = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(user_study["path"])], cwd=ROOT,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr
    everything = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--cores", "1", "--configfile",
                                 str(user_study["path"])], cwd=ROOT, capture_output=True, text=True)
    planned = everything.stdout + everything.stderr
    assert everything.returncode == 0 and "analysis_sparsity" in planned
    assert not [name for name in SYNTHETIC_ONLY if re.search(rf"\b(analysis|fig)_{name}\b", planned)]
    assert "word_order_scores" not in planned
