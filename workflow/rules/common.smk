# Paths shared by the rules. Every output lives under config["output_dir"].
from influence_study.study.runtime import gpu_jobs

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
        *expand(out("scores/{model}/{strategy}/tokens.parquet"), model=model_names(), strategy=STRATEGIES),
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


def analysis_targets():
    return [
        *[path for outputs in ANALYSES.values() for path in outputs.values()],
        *[path for outputs in FIGURES.values() for path in outputs.values()],
        *[notebook_outputs(name)["html"] for name in ANALYSES],
        out("reports/findings.md"),
    ]
