"""Notebook execution: parameters reach the notebook, the HTML is rendered, a failing cell leaves no output."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from influence_study.notebooks import execute_notebook
from influence_study.run_notes import TINY_CAVEAT, scale_note, study_scale, tiny_note


def make_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('results_dir = "nowhere"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_parameters_reach_the_notebook_and_html_is_rendered(tmp_path):
    notebook = make_notebook(tmp_path / "a.ipynb", "print('value:', results_dir * 2)")
    execute_notebook(notebook, tmp_path / "out" / "a.ipynb", tmp_path / "out" / "a.html", {"results_dir": "xy"})
    executed = nbformat.read(tmp_path / "out" / "a.ipynb", as_version=4)
    outputs = [o.get("text", "") for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert "value: xyxy\n" in outputs
    html = (tmp_path / "out" / "a.html").read_text()
    assert "value: xyxy" in html and "<html" in html


@pytest.mark.slow
def test_a_failing_cell_raises_and_writes_nothing(tmp_path):
    notebook = make_notebook(tmp_path / "b.ipynb", "raise RuntimeError('broken analysis')")
    with pytest.raises(papermill.PapermillExecutionError, match="broken analysis"):
        execute_notebook(notebook, tmp_path / "b-run.ipynb", tmp_path / "b.html", {"results_dir": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.ipynb"]


def test_a_missing_notebook_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        execute_notebook(tmp_path / "missing.ipynb", tmp_path / "x.ipynb", tmp_path / "x.html", {})


# --- the analysis notebooks: honest about the run's scale -----------------------------------------------------

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# sizes of one configuration that the closing caveats used to state as facts of every run
HARD_CODED = ("default study", "default scale", "few thousand documents", "N = 100 points", "48 documents",
              "2 to 4 transformer blocks", "two to four transformer layers", "d_model 32 to 192", "with 20 retrains",
              "about 1% of the documents", "well under a million", "millions of parameters", "~5000 documents",
              "a few tens of subsets", "fewer in the CI study")


def cell_text(path):
    return [cell.source for cell in nbformat.read(path, as_version=4).cells]


def test_every_analysis_notebook_is_checked():
    assert len(NOTEBOOKS) == 17


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_states_the_sizes_of_one_configuration(path):
    text = "\n".join(cell_text(path))
    assert not [phrase for phrase in HARD_CODED if phrase in text]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_says_when_the_run_is_tiny_and_ends_with_the_run_s_scale(path):
    notebook = nbformat.read(path, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "tiny = False" in parameters[0].source
    assert any("if tiny:" in c.source and "tiny_note()" in c.source for c in notebook.cells[:5])
    last = notebook.cells[-1]
    assert last.cell_type == "code" and "scale_note(results, tiny)" in last.source


def write_run(root):
    """The tables scale_note reads, for a run of 30 + 3 documents, 4 queries and two models."""
    (root / "corpus").mkdir(parents=True)
    pd.DataFrame({"split": ["train"] * 30 + ["valid"] * 3}).to_parquet(root / "corpus" / "c.parquet")
    (root / "queries").mkdir()
    pd.DataFrame({"analysis": ["facts", "facts", "math", "code"]}).to_parquet(root / "queries" / "c.parquet")
    pd.DataFrame({"query_id": ["q"], "doc_id": ["d"]}).to_parquet(root / "queries" / "c-relations.parquet")
    (root / "tables").mkdir()
    pd.DataFrame({"model": ["big", "small"], "parameters": [2_500_000, 12_000]}).to_parquet(
        root / "tables" / "learning.parquet")
    for name, layers, width in (("big", 4, 128), ("small", 2, 16)):
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "config.json").write_text(json.dumps({"n_layer": layers, "n_embd": width}))
    return root


def test_the_scale_note_reads_the_run_s_tables(tmp_path):
    root = write_run(tmp_path / "results")
    assert study_scale(root)["models"] == [{"model": "small", "parameters": 12_000, "layers": 2, "width": 16},
                                           {"model": "big", "parameters": 2_500_000, "layers": 4, "width": 128}]
    note = scale_note(root)
    assert "30 training documents (3 held out)" in note and "4 queries (code 1, facts 2, math 1)" in note
    assert "12,000 to 2.5 million parameters" in note and "2 to 4 transformer layers" in note
    assert "hidden size 16 to 128" in note and TINY_CAVEAT not in note
    assert scale_note(root, tiny=True).endswith(tiny_note()) and "verdicts mean nothing" in tiny_note()
    assert "its tables are not there" in scale_note(tmp_path / "nothing")


@pytest.mark.slow
def test_a_notebook_importing_the_package_prints_no_warning_and_says_tiny(tmp_path):
    root = write_run(tmp_path / "results")
    notebook = make_notebook(tmp_path / "c.ipynb", "import influence_study.plots.sparsity\n"
                             "from IPython.display import Markdown, display\n"
                             "from influence_study.run_notes import scale_note\n"
                             "display(Markdown(scale_note(results_dir, True)))")
    execute_notebook(notebook, tmp_path / "out.ipynb", tmp_path / "out.html", {"results_dir": str(root)})
    outputs = [o for cell in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs  # e.g. tqdm's IProgress warning
    assert "verdicts mean nothing" in (tmp_path / "out.html").read_text()
