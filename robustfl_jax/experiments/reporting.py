"""Writing results: JSON, markdown tables, plots, and the published results docs.

Every experiment writes its outputs through these functions, so that tables,
JSON files and figures look alike and a published figure can only come from
the run that measured it. Plots use ``matplotlib.figure.Figure`` with the Agg
canvas directly: the library never changes matplotlib's global backend.

:func:`publish` is how a result reaches ``docs/results/<name>.md`` and the
README: it writes the document from the run's own markdown and replaces the
README line marked ``<!-- result:<name> -->`` with the run's headline figure.

In a multi-process run (:mod:`robustfl_jax.distributed`) only process 0
writes files, figures and published results; the other processes' calls
return the same path and write nothing.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from robustfl_jax import distributed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DOCS_RESULTS = os.path.join(REPO_ROOT, "docs", "results")
README = os.path.join(REPO_ROOT, "README.md")


def to_json(value: Any) -> Any:
  """Arrays and numpy scalars as JSON values; NaN and Inf as None."""
  if isinstance(value, dict):
    return {str(k): to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json(v) for v in value]
  if isinstance(value, str) or value is None:
    return value
  arr = np.asarray(value)
  if arr.ndim == 0:
    item = arr.item()
    if isinstance(item, float) and not math.isfinite(item):
      return None
    return item
  return [to_json(v) for v in arr]


def write_json(path: str, obj: Any, indent: Optional[int] = 1) -> str:
  """Writes ``obj`` (arrays converted) to ``path`` atomically; returns it."""
  return write_text(path, json.dumps(to_json(obj), indent=indent) + "\n")


def write_text(path: str, text: str) -> str:
  """Writes ``text`` to ``path`` through a temporary file and a rename
  (process 0 only)."""
  if not distributed.is_main_process():
    return path
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
  return path


def append_json_line(path: str, obj: Any) -> str:
  """Appends ``obj`` (arrays converted) as one JSON line (process 0 only)."""
  if distributed.is_main_process():
    with open(path, "a") as out:
      out.write(json.dumps(to_json(obj)) + "\n")
  return path


def fmt(value: Any, spec: str = ".3f", missing: str = "n/a") -> str:
  """``format(value, spec)``, or ``missing`` for None and NaN."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return missing
  return format(value, spec)


def mean_sd(values: Sequence[Optional[float]], spec: str = ".3f") -> str:
  """``"m +- sd (k seeds)"`` over the finite values; diverged runs named.

  A None or non-finite value is a diverged run: it is left out of the mean
  and counted beside it, never averaged in.
  """
  finite = [float(v) for v in values
            if v is not None and math.isfinite(float(v))]
  diverged = len(values) - len(finite)
  if not finite:
    return f"diverged ({diverged})"
  text = format(np.mean(finite), spec)
  if len(finite) > 1:
    text += " +- " + format(np.std(finite, ddof=1), spec)
  if diverged:
    text += f" ({diverged} diverged)"
  return text


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A GitHub markdown table; cells are converted with ``str``."""
  lines = ["| " + " | ".join(str(h) for h in header) + " |",
           "|" + "---|" * len(header)]
  for row in rows:
    lines.append("| " + " | ".join(str(c) for c in row) + " |")
  return "\n".join(lines)


def new_figure(figsize=(6.0, 4.0)):
  """A matplotlib ``Figure`` on its own Agg canvas (no global backend)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path: str, dpi: int = 110, **kwargs) -> str:
  """Saves ``fig`` as PNG to ``path`` (folders created; process 0 only);
  returns ``path``."""
  if not distributed.is_main_process():
    return path
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi, **kwargs)
  return path


def plot_metrics(rows: list[dict], path: str, title: str = "") -> str:
  """Test accuracy and loss against rounds, from ``metrics.jsonl`` rows."""
  rounds = [r["round"] for r in rows]
  acc = [np.nan if r.get("test_accuracy") is None else r["test_accuracy"]
         for r in rows]
  loss = [np.nan if r.get("test_loss") is None else r["test_loss"]
          for r in rows]
  fig = new_figure((10, 3.8))
  ax_acc, ax_loss = fig.subplots(1, 2)
  ax_acc.plot(rounds, acc, marker="o", ms=3)
  ax_acc.set_xlabel("round")
  ax_acc.set_ylabel("test accuracy")
  ax_acc.set_ylim(0, 1)
  ax_acc.grid(alpha=0.3)
  ax_loss.plot(rounds, loss, marker="o", ms=3, color="tab:red")
  ax_loss.set_xlabel("round")
  ax_loss.set_ylabel("test loss")
  ax_loss.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path, dpi=100)


def heatmap(ax, values: np.ndarray, row_labels: Sequence[str],
            col_labels: Sequence[str], *, text: Optional[Callable] = None,
            vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis"):
  """Draws a labelled heatmap of ``values [rows, cols]`` on ``ax``.

  ``text(i, j) -> str`` writes each cell (default: the value, 2 decimals;
  NaN cells say n/a). Returns the image (for a colorbar).
  """
  im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
  ax.set_xticks(range(len(col_labels)), col_labels, rotation=40, ha="right",
                fontsize=8)
  ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
  mid = (vmin + vmax) / 2
  for i in range(values.shape[0]):
    for j in range(values.shape[1]):
      v = values[i, j]
      label = (text(i, j) if text is not None
               else ("n/a" if np.isnan(v) else f"{v:.2f}"))
      ax.text(j, i, label, ha="center", va="center", fontsize=7,
              color="white" if not v > mid else "black")
  return im


def machine_line() -> str:
  """Where and when a result was measured: platform, cores, load, JAX device."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
  except OSError:
    load = "n/a"
  device = jax.devices()[0]
  return (f"{datetime.date.today().isoformat()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load}, JAX "
          f"{jax.__version__} on {device.platform} ({device.device_kind})")


def publish(name: str, markdown: str, *, command: str,
            headline: Optional[str] = None, docs_dir: str = DOCS_RESULTS,
            readme: str = README, files: Sequence[str] = ()) -> str:
  """Writes ``docs/results/<name>.md`` from a run and updates the README.

  Args:
    name: the result's name (the config's file name, usually).
    markdown: the run's own report (tables, notes), as written to its
      work directory.
    command: the command that produced it (shown at the top).
    headline: one short figure for the README's commands table; it replaces
      the text after the marker ``<!-- result:<name> -->`` on its line.
    docs_dir: where the document goes.
    readme: the README whose marked line is updated (skipped when absent or
      when no line carries the marker).
    files: further files of the run (plots) to copy next to the document,
      as ``<name>_<basename>``.

  Returns:
    The path of the document.
  """
  import shutil  # pylint: disable=import-outside-toplevel
  path = os.path.join(docs_dir, f"{name}.md")
  if not distributed.is_main_process():
    return path
  os.makedirs(docs_dir, exist_ok=True)
  links = []
  for source in files:
    target = os.path.join(docs_dir, f"{name}_{os.path.basename(source)}")
    shutil.copyfile(source, target)
    if target.endswith(".png"):
      links.append(f"![{os.path.basename(source)}]({os.path.basename(target)})")
  doc = (f"# {name}\n\nWritten by `{command}` ({machine_line()}); do not edit "
         "by hand: rerun the command.\n\n" + markdown.strip() + "\n")
  if links:
    doc += "\n" + "\n\n".join(links) + "\n"
  write_text(path, doc)
  if headline is not None and os.path.exists(readme):
    update_readme_result(readme, name, headline)
  return path


def update_readme_result(readme: str, name: str, headline: str) -> bool:
  """Replaces the text after ``<!-- result:name -->`` up to the line's end
  (or the next `` |``, in a table row) with ``headline``; True if found."""
  with open(readme) as f:
    text = f.read()
  marker = re.escape(f"<!-- result:{name} -->")
  pattern = re.compile(marker + r"[^|\n]*")
  if not pattern.search(text):
    return False
  text = pattern.sub(lambda m: f"<!-- result:{name} --> {headline} ", text)
  write_text(readme, text)
  return True
