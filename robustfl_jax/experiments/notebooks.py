"""Executing the notebooks: for the tests, and to store them with outputs.

The notebooks in ``notebooks/`` are stored with their outputs, so that their
figures show when the repository is browsed; ``scripts/run_notebooks.py``
re-executes them and writes the outputs back, and the tests execute a copy
of each and compare it with what is stored.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "notebooks")
# Seconds per cell; the slowest cells compile a dozen rules (well under a
# minute on an idle 2-core CPU), the margin is for a loaded machine.
CELL_TIMEOUT_S = 900


def notebook_paths(directory: str = NOTEBOOK_DIR) -> list[str]:
  """Every ``*.ipynb`` of ``directory``, sorted."""
  return sorted(glob.glob(os.path.join(directory, "*.ipynb")))


def _kernel_manager():
  """A kernel manager whose ``python3`` kernel is this interpreter.

  With no kernel directories searched, jupyter_client falls back to
  ipykernel's native spec, whose command is ``sys.executable -m
  ipykernel_launcher``: a ``python3`` kernelspec installed elsewhere cannot
  redirect the notebooks to another Python.
  """
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=import-outside-toplevel
  from jupyter_client.manager import KernelManager  # pylint: disable=import-outside-toplevel
  specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
  return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute(notebook, cwd: str = NOTEBOOK_DIR,
            timeout: int = CELL_TIMEOUT_S):
  """Runs ``notebook`` (an ``nbformat`` node) top to bottom in a fresh kernel.

  The kernel is shut down at the end (nbclient leaves a kernel manager it
  was given running: each test's kernel, with its compiled programs, would
  stay alive until pytest exits).

  Raises:
    nbclient.exceptions.CellExecutionError: a cell raised.
  """
  import nbclient  # pylint: disable=import-outside-toplevel
  client = nbclient.NotebookClient(
      notebook, km=_kernel_manager(), kernel_name="python3", timeout=timeout,
      resources={"metadata": {"path": cwd}})
  return client.execute(cleanup_kc=True)


def store_outputs(path: str, cwd: Optional[str] = None) -> str:
  """Executes the notebook at ``path`` and writes it back with its outputs."""
  import nbformat  # pylint: disable=import-outside-toplevel
  notebook = nbformat.read(path, as_version=4)
  execute(notebook, cwd or os.path.dirname(os.path.abspath(path)))
  nbformat.write(notebook, path)
  return path


def output_kinds(notebook) -> list[tuple[str, ...]]:
  """Per code cell, the sorted kinds of its outputs (``image/png``,
  ``text/plain``, ``stream``, ...): what a stored copy must still show."""
  kinds = []
  for cell in notebook.cells:
    if cell.cell_type != "code":
      continue
    found = set()
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        found.add("stream")
      found.update(k for k in out.get("data", {}) if k in ("image/png",
                                                             "text/plain"))
    kinds.append(tuple(sorted(found)))
  return kinds
