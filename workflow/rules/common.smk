# Paths shared by the rules. Every output lives under config["output_dir"].
from influence_study.runtime import gpu_jobs

STEP_SCRIPT = "../scripts/step.py"
# The software of every rule: the study's one environment (used with `--software-deployment-method conda`).
STUDY_ENV = "../../environment.yml"
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
