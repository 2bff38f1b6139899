"""Notebook execution: parameters reach the notebook, the HTML is rendered, a failing cell leaves no output."""

import nbformat
import papermill
import pytest

from influence_study.notebooks import execute_notebook


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
