"""The workflow's steps: every rule's ``step`` is in the registry, and what the rule passes (its named inputs, outputs
and params) are parameters of the step's function, which gets every parameter it requires; the runner gives the
config to exactly the steps that take it and refuses an unknown step by name. Read from the rule files' text, so the
check runs without Snakemake. A rule's ``config_slice`` param (the config values its step reads, so that changing one
reruns the rule) is for Snakemake only: the runner never passes it, and the rules' slices name keys the config has."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from influence_study.analyses.validation import SETTINGS
from influence_study.models.toy import SETTINGS as TOY_SETTINGS
from influence_study.stages import runner
from influence_study.stages.config_slices import (FACTOR_KEYS, FIT_AND_SCORE_KEYS, SCORING_KEYS, config_value,
                                                  model_slice, select)
from influence_study.stages.registry import CONFIG_STEPS, FILE_STEPS, READS_CONFIG, STEPS, UnknownStep, step_function
from influence_study.stages.runner import RUNNER_PARAMS
from influence_study.stages.sharded_scores import ScoringSettings
from influence_study.study.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "workflow" / "rules").rglob("*.smk"))
SECTIONS = ("input", "output", "params")
# The keys of the dictionaries that rules unpack with ``**helper(...)`` (workflow/rules/common.smk).
HELPER_KEYS = {
    "corpus_outputs": ("documents", "queries", "relations", "probes"),
    "learning_table_outputs": ("table", "table_csv"),
    "loss_figure_outputs": ("png", "pdf"),
    "bm25_recall_outputs": ("table", "summary"),
    "figure_outputs": ("png", "pdf"),
    "report_figure": ("png", "pdf"),
    "notebook_outputs": ("executed", "html"),
}


def analysis_tables(text: str) -> dict[str, tuple[str, ...]]:
    """``{name: keys}`` of ``ANALYSES["name"] = analysis_outputs("name", "table", ...)`` in a rule file."""
    found = {}
    for name, tables in re.findall(r'ANALYSES\["(\w+)"\] = analysis_outputs\("\w+",?\s*([^)]*)\)', text):
        found[name] = ("summary", *re.findall(r'"(\w+)"', tables))
    return found


def unpacked(expression: str, text: str, analyses: dict) -> tuple[str, ...]:
    """The names a ``**expression`` or ``unpack(...)`` entry of a rule section passes."""
    match = re.fullmatch(r'ANALYSES\["(\w+)"\]', expression)
    if match:
        return analyses[match.group(1)]
    match = re.fullmatch(r"(\w+)\(.*\)", expression)
    if match and match.group(1) in HELPER_KEYS:
        return HELPER_KEYS[match.group(1)]
    match = (re.fullmatch(r"unpack\(lambda wildcards: (\w+) if .*", expression)
             or re.fullmatch(r"([A-Z_]+)", expression))
    if match:  # a dict of files defined in the same file: VALIDATION_LM_INPUTS = {"model_dirs": ..., ...}
        block = re.search(rf"^{match.group(1)} = \{{(.*?)\}}$", text, re.S | re.M)
        assert block, f"no definition of {match.group(1)}"
        return tuple(re.findall(r'"(\w+)":', block.group(1)))
    raise AssertionError(f"the test does not know what {expression!r} passes; add it to HELPER_KEYS")


def parse_rules(path: Path) -> list[dict]:
    """Every rule of a rule file: ``{"rule", "file", "step", "input", "output", "params"}`` (sets of names)."""
    text = path.read_text()
    analyses = {**analysis_tables(text), **ALL_ANALYSES}
    rules, current, section = [], None, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        level = len(line) - len(line.lstrip())
        match = re.fullmatch(r"rule (\w+):", stripped)
        if match:
            current = {"rule": match.group(1), "file": path.name, "step": None,
                       **{s: set() for s in SECTIONS}, "indent": level}
            rules.append(current)
            section = None
            continue
        if current is not None and level <= current["indent"]:
            current, section = None, None  # a statement after the rule ends it
        if current is None:
            continue
        match = re.fullmatch(r"(\w+):( .*)?", stripped)
        if match and level == current["indent"] + 4:
            section = match.group(1) if match.group(1) in SECTIONS else None
            continue
        if section is None or level != current["indent"] + 8:
            continue  # a continuation line, or a section this test does not read
        entry = stripped.rstrip(",")
        name = re.match(r"(\w+)=", entry)
        if name:
            current[section].add(name.group(1))
            if section == "params" and name.group(1) == "step":
                current["step"] = re.fullmatch(r'step="([^"]+)"', entry).group(1)
        elif entry.startswith("**"):
            current[section].update(unpacked(entry[2:], text, analyses))
        elif entry.startswith("unpack("):
            current[section].update(unpacked(entry, text, analyses))
    return rules


ALL_ANALYSES = {name: keys for path in RULE_FILES for name, keys in analysis_tables(path.read_text()).items()}
RULES = [rule for path in RULE_FILES for rule in parse_rules(path)]
STEP_RULES = [rule for rule in RULES if rule["step"] is not None]


def test_the_parser_reads_the_rule_files():
    names = {rule["rule"] for rule in RULES}
    assert {"corpus", "train_model", "score_shard", "analysis_lds", "fig_lds", "notebook", "findings",
            "validation_setting", "removal_finetunes"} <= names
    by_name = {rule["rule"]: rule for rule in RULES}
    assert by_name["analysis_lds"]["output"] == {"summary", "per_query", "families", "points"}
    assert by_name["validation_setting"]["input"] == {"model_dirs", "learning", "documents", "queries"}
    assert by_name["corpus"]["output"] == {"documents", "queries", "relations", "probes"}
    assert by_name["score_shard"]["params"] == {"step", "model_name", "strategy", "scatteritem", "config_slice"}
    assert by_name["fig_lds"]["output"] == {"png", "pdf"}
    assert "mem_mb" not in by_name["analysis_approximations"]["params"]  # resources are not params
    # every rule that runs the step script names a step
    for path in RULE_FILES:
        assert path.read_text().count("STEP_SCRIPT") - path.read_text().count("STEP_SCRIPT =") == sum(
            1 for rule in STEP_RULES if rule["file"] == path.name), path.name


@pytest.mark.parametrize("rule", STEP_RULES, ids=lambda rule: rule["rule"])
def test_every_rule_names_a_registered_step_with_matching_parameters(rule):
    assert rule["step"] in STEPS, f"rule {rule['rule']}: step {rule['step']!r} is not in the registry"
    function = STEPS[rule["step"]]
    signature = inspect.signature(function)
    parameters = signature.parameters
    takes_config = next(iter(parameters), None) == "config"
    assert takes_config == (rule["step"] in READS_CONFIG), rule["step"]
    passed = (rule["input"] | rule["output"] | rule["params"]) - RUNNER_PARAMS  # the runner keeps these
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = passed - set(parameters)
    assert accepts_any or not unknown, f"rule {rule['rule']} passes {sorted(unknown)}, which {rule['step']} lacks"
    required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)} - {"config"}
    missing = required - passed
    assert not missing, f"rule {rule['rule']} does not pass {sorted(missing)}, which {rule['step']} requires"


def test_every_registered_step_is_used_and_the_two_kinds_are_apart():
    used = {rule["step"] for rule in STEP_RULES}
    assert set(STEPS) == used, f"steps no rule runs: {sorted(set(STEPS) - used)}"
    assert not set(CONFIG_STEPS) & set(FILE_STEPS)
    for name in FILE_STEPS:
        assert "config" not in inspect.signature(STEPS[name]).parameters, name
    for name, function in STEPS.items():
        module = function.__module__
        assert module.startswith(("influence_study.stages.", "influence_study.plots.")), (name, module)


def test_a_step_imports_only_its_own_module():
    """Looking a step up imports its module and no other stage or figure module (a job's start-up cost)."""
    code = ("import sys; from influence_study.stages.registry import step_function; step_function('sparsity.figure');"
            "print(sorted(m for m in sys.modules if m.startswith(('influence_study.stages.', 'influence_study.plots.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "influence_study.plots.sparsity" in loaded
    for other in ("influence_study.stages.lds", "influence_study.stages.finetune", "influence_study.plots.lds"):
        assert other not in loaded, loaded


# Steps that read and write tables only: their jobs must not import torch (about 1.3 CPU-seconds each).
TORCH_FREE_STEPS = ("corpus.make_corpus", "sparsity.run", "abstraction.run", "layers.run", "math_code.run",
                    "cross_lingual.run", "roleplay.run", "memorisation.run", "keyword_overlap.run",
                    "fewer_parameters.run", "reports.run_notebook", "reports.findings_report")


def test_the_table_steps_and_the_figures_do_not_import_torch():
    names = [*TORCH_FREE_STEPS, *(name for name in STEPS if name.endswith(".figure") and name != "models.loss_figure")]
    code = ("import sys; from influence_study.stages.registry import step_function; from influence_study.study import "
            f"runtime; [step_function(n) for n in {names!r}]; print('torch' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False", f"one of {names} imports torch"


@pytest.mark.parametrize("torch_first", [True, False])
def test_a_jobs_threads_reach_torch_whether_it_is_imported_before_or_during_the_step(torch_first):
    """The rule's ``threads`` (the runner's ``logged_to``) limit torch imported before the step starts, and torch
    imported by the step itself (through OMP_NUM_THREADS, which torch reads when it starts)."""
    code = ("import os, sys; os.environ.pop('OMP_NUM_THREADS', None); "
            + ("import torch; " if torch_first else "")
            + "from influence_study.study.runtime import logged_to\n"
            "with logged_to(None, threads=1):\n    import torch; print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_an_unknown_step_is_refused_by_name():
    with pytest.raises(UnknownStep, match=r"step 'lds:run': no such step; the known steps are .*lds\.run"):
        step_function("lds:run")
    assert step_function("lds.run") is STEPS["lds.run"]


def test_the_runner_gives_the_config_only_to_the_steps_that_take_it(monkeypatch):
    calls = []
    monkeypatch.setitem(STEPS, "corpus.make_corpus", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setitem(STEPS, "lds.figure", lambda *args, **kwargs: calls.append((args, kwargs)))

    def smk(step, **files):
        params = {"step": step, "config_slice": {"seed": 3}} if step in READS_CONFIG else {"step": step}
        return SimpleNamespace(params=params, input={}, output=files, config={"seed": 3}, log=[], threads=1)

    runner.run_step(smk("corpus.make_corpus", documents="d.parquet"))
    runner.run_step(smk("lds.figure", png="a.png", pdf="a.pdf"))
    # neither `step` nor `config_slice` reaches the step
    assert calls == [(({"seed": 3},), {"documents": "d.parquet"}), ((), {"png": "a.png", "pdf": "a.pdf"})]
    assert RUNNER_PARAMS == {"step", "config_slice"}


def test_the_validation_settings_are_the_toy_settings():
    assert SETTINGS == TOY_SETTINGS


# The config slices (workflow/rules/common.smk: config_slice(*keys), model_config_slice(*keys)), read from the text.
SLICE = re.compile(r"^\s*config_slice=(model_config_slice|config_slice)\((.*?)\),$", re.S | re.M)
# Steps that read no config value (only the config hash their provenance records): their rules pass no slice.
READS_NO_CONFIG_VALUE = {"models.learning_table"}
SLICE_CONSTANTS = {"FACTOR_KEYS": FACTOR_KEYS, "SCORING_KEYS": SCORING_KEYS, "FIT_AND_SCORE_KEYS": FIT_AND_SCORE_KEYS}


def rule_slices() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{rule: (helper, keys)}`` of every rule that passes a ``config_slice``."""
    found = {}
    for path in RULE_FILES:
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*rule (\w+):", text, re.M)]
        for match in SLICE.finditer(text):
            rule = [name for start, name in starts if start < match.start()][-1]
            keys = []
            for argument in re.split(r",\s*", match.group(2).strip()):
                if argument.startswith("*"):
                    keys += SLICE_CONSTANTS[argument[1:]]
                else:
                    keys.append(re.fullmatch(r'"([\w.]+)"', argument).group(1))
            found[rule] = (match.group(1), tuple(keys))
    return found


SLICES = rule_slices()


def test_every_rule_whose_step_reads_the_config_passes_a_slice_and_no_other_rule_does():
    by_name = {rule["rule"]: rule for rule in STEP_RULES}
    assert set(SLICES) <= set(by_name), sorted(set(SLICES) - set(by_name))
    for name, rule in by_name.items():
        wanted = rule["step"] in READS_CONFIG and rule["step"] not in READS_NO_CONFIG_VALUE
        assert (name in SLICES) == wanted, f"rule {name} ({rule['step']}): {'no' if wanted else 'a'} config_slice"
        assert ("config_slice" in rule["params"]) == wanted, name
    # per-model slices exactly where the step builds or (re)trains the rule's {model}
    per_model = {name for name, (helper, _) in SLICES.items() if helper == "model_config_slice"}
    assert per_model == {"train_model", "factors", "lds_retrain", "calibration_retrain"}
    assert {"seed", "corpus"} <= set(SLICES["corpus"][1])
    assert "influence.damping" in SLICES["score_shard"][1] and "influence.damping" not in SLICES["factors"][1]
    assert "influence.token_documents" in SLICES["token_scores"][1]
    assert "analyses.sparsity" in SLICES["analysis_sparsity"][1]


@pytest.mark.parametrize("config_file", ["config.yaml", "configs/ci.yaml", "configs/gpu.yaml", "configs/hf.yaml"])
def test_every_key_of_the_slices_is_in_the_validated_config(config_file):
    config = load_config(ROOT / config_file)
    for rule, (_, keys) in SLICES.items():
        assert len(set(keys)) == len(keys), f"rule {rule} names a key twice"
        for key in keys:
            config_value(config, key)  # a KeyError names the key
    for name in (m["name"] for m in config["models"]):
        model_slice(config, name)


def test_the_scoring_keys_are_the_scoring_settings():
    assert SCORING_KEYS == tuple(f"influence.{field.name}" for field in dataclasses.fields(ScoringSettings))


def test_a_slice_changes_exactly_with_the_values_it_names():
    config = load_config(ROOT / "configs" / "ci.yaml")
    base = select(config, SLICES["score_shard"][1])
    assert base == select(json.loads(json.dumps(config)), SLICES["score_shard"][1])  # JSON values, comparable
    changed = json.loads(json.dumps(config))
    changed["influence"]["damping"] = 0.01
    assert select(changed, SLICES["score_shard"][1]) != base
    assert select(changed, SLICES["factors"][1]) == select(config, SLICES["factors"][1])
    # a model's training override changes its slice, not the other models'
    changed = json.loads(json.dumps(config))
    first, second = (m["name"] for m in config["models"][:2])
    changed["models"][1]["training"] = {"steps": 7}
    assert model_slice(changed, second) != model_slice(config, second)
    assert model_slice(changed, second)["training"]["steps"] == 7
    assert model_slice(changed, first) == model_slice(config, first)
    # the family's training settings reach every model trained from scratch; the seed position follows the order
    changed = json.loads(json.dumps(config))
    changed["training"]["steps"] = 7
    assert all(model_slice(changed, m["name"]) != model_slice(config, m["name"]) for m in config["models"])
    assert [model_slice(config, m["name"])["model_position"] for m in config["models"]] == list(
        range(len(config["models"])))
    # an imported checkpoint reads only its entry
    changed["models"].append({"name": "imported", "checkpoint": "some/dir"})
    assert model_slice(changed, "imported") == {"model": {"name": "imported", "checkpoint": "some/dir"}}
    with pytest.raises(KeyError, match="influence.dampin"):
        config_value(config, "influence.dampin")
