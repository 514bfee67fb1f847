"""Executes every notebook in notebooks/ top to bottom; a cell that raises fails.

The notebooks are the tour of the library (issue 8): each must run on the CPU
with the embedded data. New notebooks are picked up by the glob. Each runs in
a fresh kernel, started from this interpreter (the native ``python3`` kernel
of ipykernel, so the library under test is the one pytest imports), with
``notebooks/`` as its working directory, as Jupyter would open it.
"""

import glob
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
# Seconds per cell; the slowest cells compile a dozen rules (well under a minute
# on an idle 2-core CPU), the margin is for a loaded machine.
CELL_TIMEOUT_S = 900


def _kernel_manager() -> KernelManager:
  """A kernel manager whose ``python3`` kernel is this interpreter.

  With no kernel directories searched, jupyter_client falls back to
  ipykernel's native spec, whose command is ``sys.executable -m
  ipykernel_launcher``: a ``python3`` kernelspec installed elsewhere (a user's
  ~/.local/share/jupyter, another environment) cannot redirect the notebooks
  to another Python.
  """
  specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
  return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _execute(notebook, cwd):
  client = nbclient.NotebookClient(
      notebook, km=_kernel_manager(), kernel_name="python3", timeout=CELL_TIMEOUT_S,
      resources={"metadata": {"path": cwd}})
  return client.execute()


def test_notebooks_exist():
  assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_kernel_is_this_python(tmp_path):
  notebook = nbformat.v4.new_notebook(
      cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
  _execute(notebook, str(tmp_path))
  printed = notebook.cells[0].outputs[0]["text"].strip()
  assert os.path.realpath(printed) == os.path.realpath(sys.executable)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path):
  notebook = nbformat.read(path, as_version=4)
  try:
    _execute(notebook, NOTEBOOK_DIR)
  except nbclient.exceptions.CellExecutionError as error:
    pytest.fail(f"{os.path.basename(path)}: a cell raised\n{error}", pytrace=False)
  # Stored without outputs, so that diffs stay small and no stale result is shown.
  stored = nbformat.read(path, as_version=4)
  for cell in stored.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{os.path.basename(path)} is stored with outputs; clear them before committing")
