# Paths shared by the rules. Every output lives under config["output_dir"].
from influence_study.study.devices import gpu_jobs

# Absolute paths, so that rule files in subdirectories (workflow/rules/analyses/) share them.
STEP_SCRIPT = f"{workflow.basedir}/workflow/scripts/step.py"
# The software of every rule: the study's one environment (used with `--software-deployment-method conda`).
STUDY_ENV = f"{workflow.basedir}/environment.yml"
CORPUS = config["corpus"]["name"]


def out(path):
    """A path under the study's output directory."""
    return f"{config['output_dir']}/{path}"


def corpus_outputs():
    return {
        "documents": out(f"corpus/{CORPUS}.parquet"),
        "queries": out(f"queries/{CORPUS}.parquet"),
        "relations": out(f"queries/{CORPUS}-relations.parquet"),
        "probes": out(f"queries/{CORPUS}-probes.parquet"),
    }


def model_names():
    return [m["name"] for m in config["models"]]


def model_dirs():
    return expand(out("models/{model}"), model=model_names())


def evaluation_summaries():
    return expand(out("evaluation/{model}/summary.json"), model=model_names())


def evaluation_tables():
    """Per model: each query's completion log-probability and top-1 correctness."""
    return expand(out("evaluation/{model}/queries.parquet"), model=model_names())


def learning_table_outputs():
    return {"table": out("tables/learning.parquet"), "table_csv": out("tables/learning.csv")}


def loss_figure_outputs():
    return {"png": out("figures/loss_curves.png"), "pdf": out("figures/loss_curves.pdf")}


# The influence stages.
INFLUENCE = config["influence"]
STRATEGIES = INFLUENCE["strategies"]
TOKEN_STRATEGIES = INFLUENCE["token_strategies"] or STRATEGIES
FACTOR_STRATEGY_PATTERN = "|".join(STRATEGIES)
EXPLORER_STRATEGY = config["explorer"]["strategy"]
CANDIDATES = out(f"candidates/{CORPUS}/bm25.parquet")
# jobs that run on the model's device declare one GPU when it is CUDA, so a local run serialises them
GPU = gpu_jobs(config)
INFLUENCE_RESOURCES = {"mem_mb": INFLUENCE["mem_mb"], "runtime": INFLUENCE["runtime"], "gpu": GPU}


def pairwise_tables():
    return expand(out("scores/{model}/{strategy}/pairwise.parquet"), model=model_names(), strategy=STRATEGIES)


def influence_outputs():
    return [
        *pairwise_tables(),
        *expand(out("scores/{model}/{strategy}/tokens.parquet"), model=model_names(), strategy=TOKEN_STRATEGIES),
        *bm25_recall_outputs().values(),
        *expand(out("reports/explorer/{model}.html"), model=model_names()),
    ]


def bm25_recall_outputs():
    return {"table": out("tables/bm25_recall.parquet"), "summary": out("tables/bm25_recall.csv")}


# The analyses (issue: the findings). Each workflow/rules/analyses/{name}.smk defines `analysis_{name}` (tables and
# analyses/{name}.json), `fig_{name}` (figures/{name}.png|pdf) and registers them below; notebooks.smk executes
# notebooks/{name}.ipynb on them and findings.smk gathers every analyses/{name}.json into reports/findings.md.
ANALYSIS_STRATEGY = config["analyses"]["strategy"]
ANALYSES = {}
FIGURES = {}
# PLANNED_ANALYSES (set in the Snakefile, from influence_study.stages.plan): the analyses this config plans; the
# targets, the notebooks and the findings report take only these.
LEARNING_TABLE = out("tables/learning.parquet")


def analysis_outputs(name, *tables):
    """The outputs of analysis `name`: its summary JSON and one parquet per table name."""
    return {"summary": out(f"analyses/{name}.json"), **{t: out(f"analyses/{name}-{t}.parquet") for t in tables}}


def figure_outputs(name):
    return {"png": out(f"figures/{name}.png"), "pdf": out(f"figures/{name}.pdf")}


def report_figure(name, category):
    """The figure outputs of `name`, the PNG marked for `snakemake --report` with workflow/report/{name}.rst."""
    paths = figure_outputs(name)
    paths["png"] = report(paths["png"], caption=f"{workflow.basedir}/workflow/report/{name}.rst", category=category)
    return paths


def strategy_tables(table, strategy=None):
    """One scores table (pairwise, tokens, candidates) per model for `strategy` (default: the analyses')."""
    return expand(out(f"scores/{{model}}/{strategy or ANALYSIS_STRATEGY}/{table}.parquet"), model=model_names())


def notebook_outputs(name):
    return {"executed": out(f"reports/notebooks/{name}.ipynb"), "html": out(f"reports/notebooks/{name}.html")}


def planned_outputs(registry=None):
    """{name: outputs} of each planned analysis in ANALYSES (or in `registry`, e.g. FIGURES), in PLANNED_ANALYSES'
    order."""
    registry = ANALYSES if registry is None else registry
    return {name: registry[name] for name in PLANNED_ANALYSES}


def analysis_targets():
    return [
        *[path for outputs in planned_outputs().values() for path in outputs.values()],
        *[path for outputs in planned_outputs(FIGURES).values() for path in outputs.values()],
        *[notebook_outputs(name)["html"] for name in PLANNED_ANALYSES],
        out("reports/findings.md"),
    ]


# What of the config each rule's step reads, passed as the rule's `config_slice` param: Snakemake reruns a job whose
# params changed (its params rerun trigger, on by default), and the jobs below it because their inputs are newer, so
# editing a config value reruns exactly the steps that read it. The runner never passes `config_slice` to the step
# (influence_study.stages.runner.RUNNER_PARAMS); keys are dotted ("influence.damping", "analyses.sparsity").
# A rule whose step reads no config value (beyond the config hash of its provenance) passes no slice.
from influence_study.stages.config_slices import FACTOR_KEYS, FIT_AND_SCORE_KEYS, SCORING_KEYS, model_slice, select


def config_slice(*keys):
    """{key: config value} of each dotted key."""
    return select(config, keys)


def model_config_slice(*keys):
    """config_slice(*keys) plus, per job, the entry, position (its seeds) and effective training settings of the
    job's {model} wildcard (influence_study.stages.config_slices.model_slice)."""
    return lambda wildcards: {**select(config, keys), **model_slice(config, wildcards.model)}


# Memory (mem_mb) and wall time (runtime, minutes), which every rule declares in its own resources, so nothing is
# left to default-resources (a cluster profile's, or `--default-resources` on the command line, which replaces
# them). The influence rules take `influence.mem_mb`/`influence.runtime` (INFLUENCE_RESOURCES above); the others:
# corpus, tokenizer, candidates, explorer, figures, the learning table, the findings report
SMALL_JOB = {"mem_mb": 2000, "runtime": 30}
# the analyses, their notebooks, the evaluations and the tables that read every model's scores
TABLE_JOB = {"mem_mb": 4000, "runtime": 60}
# a model trained, retrained or fine-tuned (add gpu=GPU)
TRAINING_JOB = {"mem_mb": 4000, "runtime": 240}
# Scheduling: of the jobs ready to run, Snakemake starts those of the highest priority first (default 0; a job's
# priority does not pass to the jobs it waits for, so every rule of the chain has one). The chain to the study's last
# analyses (corpus, tokenizer, training, evaluation, BM25 candidates, factors, scores, the matched-loss retrain: its
# longest single job) goes first; the independent fine-tunes, retrains and validation settings fill the other cores.
# Without it a local run on 2 cores evaluated the largest model 26 min after training it and ended on one core for
# 9 min.
CHAIN_PRIORITY = {"training": 30, "matched_loss": 25, "influence": 20}
