"""Verified checkpoints of the whole server state with orbax.

A thin wrapper over ``ocp.CheckpointManager`` with ``StandardSave`` /
``StandardRestore``. Orbax writes each step to a temporary folder and renames
it when complete, so a process killed mid-save leaves no visible half step.
Beside every step, ``checksums/<step>.json`` holds the sha256 of every file
of the step and of the state's leaves (their bytes, shapes and dtypes),
written after the step itself. Restoring verifies the files before orbax
reads them (a garbled, truncated, missing or added file), then the restored
leaves: a step that fails, cannot be read, or has no checksum (a save cut
short) is skipped for the previous verified one with one warning line, and
is kept on disk renamed ``corrupt_<step>_<time>`` so that the run can write
that step again. A garbled byte inside an array file therefore never reaches
a resumed run.

In a multi-process run every process calls :meth:`Checkpointer.save` and
:meth:`Checkpointer.restore_latest` together (orbax writes and reads the
global arrays collectively); process 0 alone writes the checksums and sets
aside a failed step, and every process reaches the same verdict on each step
(they check the same files before any is renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

CHECKSUMS = "checksums"


def files_sha256(directory: str) -> dict[str, str]:
  """``{relative path: sha256}`` of every file under ``directory``."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      out[os.path.relpath(path, directory)] = digest.hexdigest()
  return out


def _file_problem(expected: dict[str, str], found: dict[str, str]) -> Optional[str]:
  for name in sorted(set(expected) | set(found)):
    if name not in found:
      return f"is missing its file {name}"
    if name not in expected:
      return f"has an unexpected file {name}"
    if found[name] != expected[name]:
      return f"has a changed file {name} (its bytes differ from the save)"
  return None


def state_sha256(state: Any) -> str:
  """sha256 over every leaf's dtype, shape and bytes, in tree order."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    arr = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
  return digest.hexdigest()


def placed_like(restored: Any, target: Any) -> Any:
  """``restored`` with each leaf uncommitted where ``target``'s is.

  Orbax returns committed arrays, while a state built on one device without
  a sharding (``init_state``, and every round's output from it) is
  uncommitted; ``jit`` keys its cache on commitment, so a resumed run would
  compile its round and its evaluation again (5.9 s for the digits round of
  tests/fl/test_multiprocess.py on a loaded 2-core CPU). Such leaves are put
  back uncommitted, on the default device; sharded (committed) targets and
  extended dtypes (typed keys) are returned as restored.
  """
  def like(leaf, ref):
    if (isinstance(leaf, jax.Array) and isinstance(ref, jax.Array)
        and not ref.committed and leaf.is_fully_addressable
        and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended)):
      return jax.numpy.asarray(np.asarray(leaf))
    return leaf
  return jax.tree.map(like, restored, target)


class Checkpointer:
  """Saves and restores a pytree (the server state) by step.

  Example:
    >>> ckpt = Checkpointer("/tmp/run/checkpoints", max_to_keep=3)
    >>> ckpt.save(10, state)
    >>> state, step = ckpt.restore_latest(state)  # (None, None) if none
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    """Opens (or creates) the checkpoint folder.

    Args:
      directory: folder of the checkpoints (made absolute).
      max_to_keep: how many recent steps to keep; at least 2 so that a corrupt
        latest step has a predecessor.
    """
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max(2, int(max_to_keep)), create=True,
        enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _checksum_path(self, step: int) -> str:
    return os.path.join(self.directory, CHECKSUMS, f"{int(step)}.json")

  def save(self, step: int, state: Any) -> None:
    """Writes ``state`` as ``step``, then its checksum (durable on return)."""
    self._manager.save(int(step), args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    if jax.process_index() != 0:
      return
    path = self._checksum_path(step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    files = files_sha256(os.path.join(self.directory, str(int(step))))
    with open(tmp, "w") as f:
      json.dump({"step": int(step), "sha256": state_sha256(state),
                 "files": files}, f)
    os.replace(tmp, path)
    self._prune_checksums()

  def _prune_checksums(self) -> None:
    # Orbax deletes steps beyond max_to_keep; their checksums go with them.
    folder = os.path.join(self.directory, CHECKSUMS)
    kept = {str(s) for s in self.all_steps()}
    for name in os.listdir(folder):
      stem = name[:-len(".json")]
      if name.endswith(".json") and stem.isdigit() and stem not in kept:
        os.remove(os.path.join(folder, name))

  def _expected(self, step: int) -> Optional[dict]:
    try:
      with open(self._checksum_path(step)) as f:
        record = json.load(f)
      return record if "sha256" in record and "files" in record else None
    except (OSError, ValueError):
      return None

  def restore_latest(self, target: Any, *,
                     warn: Optional[Callable[[str], None]] = None
                     ) -> tuple[Optional[Any], Optional[int]]:
    """Restores the newest verified step into the structure of ``target``.

    Args:
      target: a pytree with the same structure, shapes and dtypes (e.g. the
        freshly initialised state); its shardings are used for the result,
        and its uncommitted leaves come back uncommitted
        (:func:`placed_like`).
      warn: where the one line about a skipped step goes (default: a
        ``RuntimeWarning``).

    Returns:
      ``(state, step)``, or ``(None, None)`` when no step passes.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in reversed(self.all_steps()):
      expected = self._expected(step)
      problem = None
      if expected is None:
        problem = "has no checksum (its save was cut short)"
      else:
        problem = _file_problem(
            expected["files"],
            files_sha256(os.path.join(self.directory, str(step))))
      if problem is None:
        try:
          state = self._manager.restore(
              step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # pylint: disable=broad-except
          # Any failure to read a step means it is unusable; fall back.
          problem = f"is unreadable ({type(e).__name__}: {str(e)[:120]})"
        else:
          if state_sha256(state) == expected["sha256"]:
            return placed_like(state, target), step
          problem = "fails its checksum (its bytes changed on disk)"
      kept = self._set_aside_everywhere(step)
      message = (f"checkpoint step {step} in {self.directory} {problem}; "
                 f"skipped and kept as {kept}.")
      if warn is None:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
      else:
        warn(message)
    return None, None

  def _set_aside_everywhere(self, step: int) -> str:
    """Process 0 renames the step; every process then sees it gone."""
    name = f"corrupt_{step}"
    multi = jax.process_count() > 1
    if multi:
      multihost_utils.sync_global_devices(f"checkpoint-verdict-{step}")
    if jax.process_index() == 0:
      name = self._set_aside(step)
    if multi:
      multihost_utils.sync_global_devices(f"checkpoint-set-aside-{step}")
      self._manager.reload()
    return name

  def _set_aside(self, step: int) -> str:
    # Renamed, not deleted: the bytes may be wanted for a post-mortem, and the
    # run must be free to write this step number again.
    name = f"corrupt_{step}_{time.time_ns()}"
    src = os.path.join(self.directory, str(step))
    if os.path.isdir(src):
      os.rename(src, os.path.join(self.directory, name))
    checksum = self._checksum_path(step)
    if os.path.exists(checksum):
      os.rename(checksum, os.path.join(os.path.dirname(checksum),
                                       f"{name}.json"))
    self._manager.reload()
    return name

  def close(self) -> None:
    self._manager.close()
