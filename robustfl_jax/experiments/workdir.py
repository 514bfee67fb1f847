"""A work directory belongs to one experiment, and nothing in it is lost.

Every script that writes a work directory calls :func:`claim` first, before
anything is built:

* the directory must be writable (else a one-line error, at once);
* ``experiment.json`` records the resolved config and the fingerprint of the
  fields that change results (all of them but :data:`PROGRESS_FIELDS`, which
  say how far and how often); a directory that holds another experiment is
  refused with a sentence naming the fields that differ, unless ``fresh``;
* ``fresh`` moves everything the directory holds into
  ``previous/<date-time>/`` first: nothing is ever deleted.

:func:`set_aside` moves named outputs of an earlier run into the same kind of
dated folder before a run writes them again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import ml_collections

from robustfl_jax import distributed

EXPERIMENT_FILE = "experiment.json"
PREVIOUS = "previous"
# Fields that say how long a run goes and how often it reports, not what it
# computes: changing them continues the same experiment.
PROGRESS_FIELDS = ("num_rounds", "eval_every", "checkpoint_every")


class WorkdirError(ValueError):
  """The work directory cannot be used as asked (the message says why)."""


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{"a.b": value}`` of every leaf field, as JSON values."""
  out = {}

  def walk(node, prefix):
    for key in sorted(node.keys()):
      value = node[key]
      name = f"{prefix}{key}"
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        walk(value, name + ".")
      else:
        out[name] = json.loads(json.dumps(
            list(value) if isinstance(value, tuple) else value, default=str))
  walk(config, "")
  return out


def result_fields(config: ml_collections.ConfigDict,
                  ignore: Sequence[str] = PROGRESS_FIELDS) -> dict[str, Any]:
  """The flattened fields that decide results (``ignore`` and below left out)."""
  return {k: v for k, v in flatten(config).items()
          if not any(k == i or k.startswith(i + ".") for i in ignore)}


def fingerprint(fields: Mapping[str, Any]) -> str:
  """sha256 of the fields, order-independent."""
  text = json.dumps(dict(fields), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _stamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def ensure_writable(workdir: str) -> None:
  """Creates ``workdir`` and proves it can be written to.

  Raises:
    WorkdirError: it cannot be created or written (one sentence).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"work directory {workdir!r} cannot be written: "
                       f"{e.strerror or e}; choose another --workdir.") from e


def move_aside(workdir: str, names: Optional[Iterable[str]] = None) -> Optional[str]:
  """Moves ``names`` (default: everything but ``previous/``) of ``workdir``
  into ``workdir/previous/<date-time>/``; returns that folder (None if there
  was nothing to move)."""
  present = [n for n in (os.listdir(workdir) if names is None else names)
             if n != PREVIOUS and os.path.lexists(os.path.join(workdir, n))]
  if not present:
    return None
  target = os.path.join(workdir, PREVIOUS, _stamp())
  os.makedirs(target)
  for name in present:
    os.rename(os.path.join(workdir, name), os.path.join(target, name))
  return target


def set_aside(workdir: str, names: Sequence[str]) -> Optional[str]:
  """Keeps the earlier versions of outputs a run is about to write again."""
  return move_aside(workdir, names)


def _difference(old: Mapping[str, Any], new: Mapping[str, Any],
                limit: int = 4) -> str:
  keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  parts = [f"{k}: {old.get(k, '(absent)')!r} there, {new.get(k, '(absent)')!r} "
           "here" for k in keys[:limit]]
  if len(keys) > limit:
    parts.append(f"and {len(keys) - limit} more")
  return "; ".join(parts)


def read_record(workdir: str) -> Optional[dict]:
  """The ``experiment.json`` of ``workdir``, or None."""
  path = os.path.join(workdir, EXPERIMENT_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return {"fields": {}, "fingerprint": "unreadable"}


def claim(workdir: str, config: ml_collections.ConfigDict, *,
          kind: str = "train", fresh: bool = False,
          ignore: Sequence[str] = PROGRESS_FIELDS,
          log=lambda line: None) -> dict:
  """Makes ``workdir`` this experiment's, or refuses.

  In a multi-process run every process checks the directory as it found it
  (so all refuse together), then process 0 alone writes, and all wait for it.

  Args:
    workdir: the folder.
    config: the resolved config of the run.
    kind: what writes it ("train", "sweep", "conflict", ...): two kinds never
      share a directory.
    fresh: move whatever the directory holds to ``previous/<date-time>/``
      and start anew.
    ignore: fields that do not decide results.
    log: progress sink (one line when outputs are moved).

  Returns:
    The record written to ``experiment.json``.

  Raises:
    WorkdirError: not writable, or another experiment's directory (the
      message names the differing fields and how to proceed).
  """
  main = distributed.is_main_process()
  if main:
    ensure_writable(workdir)
  fields = {"kind": kind, **result_fields(config, ignore)}
  record = {"kind": kind, "fingerprint": fingerprint(fields),
            "fields": fields}
  old = read_record(workdir)
  holds_outputs = os.path.isdir(workdir) and any(
      n != PREVIOUS and not n.startswith(".write_test_")
      for n in os.listdir(workdir))
  moving_aside = fresh and holds_outputs
  if not moving_aside and old is None and holds_outputs:
    raise WorkdirError(
        f"{workdir} holds outputs of an unrecorded experiment; use another "
        "--workdir, or --fresh to move them to "
        f"{os.path.join(workdir, PREVIOUS)}/<date-time>/ and start anew.")
  if (not moving_aside and old is not None
      and old.get("fingerprint") != record["fingerprint"]):
    raise WorkdirError(
        f"{workdir} holds another experiment ("
        f"{_difference(old.get('fields', {}), fields)}); use another "
        "--workdir, or --fresh to move its outputs to "
        f"{os.path.join(workdir, PREVIOUS)}/<date-time>/ and start anew.")
  distributed.barrier("robustfl-claim-checked")
  if main:
    if moving_aside:
      moved = move_aside(workdir)
      log(f"moved the earlier outputs of {workdir} to {moved}")
    path = os.path.join(workdir, EXPERIMENT_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
      json.dump({**record, "config": flatten(config)}, f, indent=1,
                default=str)
    os.replace(tmp, path)
  distributed.barrier("robustfl-claimed")
  return record


def prepare(workdir: str, config: ml_collections.ConfigDict, *, kind: str,
            fresh: bool = False, log=lambda line: None) -> Optional[str]:
  """What a grid runner does first: :func:`claim` the directory, then keep the
  files an earlier run of the same experiment wrote (its tables, JSON,
  plots) in ``previous/<date-time>/`` before they are written again. Sub
  folders (the runs of cells, which resume) stay.

  Returns:
    The folder the earlier files went to, or None.
  """
  claim(workdir, config, kind=kind, fresh=fresh, log=log)
  if not distributed.is_main_process():
    return None
  files = [n for n in os.listdir(workdir) if n != EXPERIMENT_FILE
           and os.path.isfile(os.path.join(workdir, n))]
  kept = set_aside(workdir, files)
  if kept:
    log(f"kept the earlier outputs of {workdir} in {kept}")
  return kept
