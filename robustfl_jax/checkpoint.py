"""Checkpoints of the whole server state with orbax.

A thin wrapper over ``ocp.CheckpointManager`` with ``StandardSave`` /
``StandardRestore``. Orbax writes each step to a temporary folder and renames
it when complete, so a process killed mid-save leaves no visible half step;
a step that is visible but unreadable (a corrupt or truncated file) is
skipped for the previous good one with a warning and renamed
``unreadable_<step>_<time>`` so that the run can write that step again.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


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

  def save(self, step: int, state: Any) -> None:
    """Writes ``state`` as ``step`` (synchronously; durable on return)."""
    self._manager.save(int(step), args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore_latest(self, target: Any) -> tuple[Optional[Any], Optional[int]]:
    """Restores the newest readable step into the structure of ``target``.

    Args:
      target: a pytree with the same structure, shapes and dtypes (e.g. the
        freshly initialised state); its shardings are used for the result.

    Returns:
      ``(state, step)``, or ``(None, None)`` when no step is readable.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in reversed(self.all_steps()):
      try:
        state = self._manager.restore(
            step, args=ocp.args.StandardRestore(abstract))
        return state, step
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read a step means it is unusable; fall back.
        message = (f"checkpoint step {step} in {self.directory} is unreadable "
                   f"({type(e).__name__}: {str(e)[:200]}); skipping it for the "
                   "previous one.")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
        self._set_aside(step)
    return None, None

  def _set_aside(self, step: int) -> None:
    # Renamed, not deleted: the step may be fine for another config, and the
    # run must be free to write this step number again.
    src = os.path.join(self.directory, str(step))
    if os.path.isdir(src):
      dst = os.path.join(self.directory, f"unreadable_{step}_{time.time_ns()}")
      os.rename(src, dst)
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
