"""Executes every notebook in notebooks/ top to bottom; a cell that raises fails.

The notebooks are the tour of the library: each must run on the CPU with the
embedded data. New notebooks are picked up by the glob. Each runs in a fresh
kernel of this interpreter with ``notebooks/`` as its working directory, as
Jupyter would open it (:mod:`robustfl_jax.experiments.notebooks`). They are
stored with their outputs (``python scripts/run_notebooks.py``): the test
checks that the stored copy shows what a fresh run shows, cell by cell.
"""

import os
import sys

import nbclient
import nbformat
import pytest

from robustfl_jax.experiments import notebooks

NOTEBOOKS = notebooks.notebook_paths()


def test_notebooks_exist():
  assert NOTEBOOKS, f"no notebooks found in {notebooks.NOTEBOOK_DIR}"


def test_kernel_is_this_python(tmp_path):
  notebook = nbformat.v4.new_notebook(
      cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
  notebooks.execute(notebook, str(tmp_path))
  printed = notebook.cells[0].outputs[0]["text"].strip()
  assert os.path.realpath(printed) == os.path.realpath(sys.executable)


def test_output_kinds_sees_figures_and_text():
  cell = nbformat.v4.new_code_cell("x")
  cell.outputs = [nbformat.v4.new_output("display_data", data={
      "image/png": "", "text/plain": "<Figure>"}),
                  nbformat.v4.new_output("stream", text="hi")]
  notebook = nbformat.v4.new_notebook(cells=[cell,
                                             nbformat.v4.new_code_cell("y")])
  assert notebooks.output_kinds(notebook) == [
      ("image/png", "stream", "text/plain"), ()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_and_is_stored_with_its_outputs(path):
  stored = nbformat.read(path, as_version=4)
  fresh = nbformat.read(path, as_version=4)
  try:
    notebooks.execute(fresh)
  except nbclient.exceptions.CellExecutionError as error:
    pytest.fail(f"{os.path.basename(path)}: a cell raised\n{error}", pytrace=False)
  name = os.path.basename(path)
  code = [c for c in stored.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code), (
      f"{name} is stored unexecuted: run python scripts/run_notebooks.py")
  assert any("image/png" in kinds for kinds in notebooks.output_kinds(stored)), (
      f"{name} is stored without a figure")
  assert notebooks.output_kinds(stored) == notebooks.output_kinds(fresh), (
      f"{name}: the stored outputs differ in kind from a fresh run's; rerun "
      "python scripts/run_notebooks.py")
