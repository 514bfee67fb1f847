"""Multi-device and multi-host helpers.

On one host, :func:`client_mesh` spans all local devices. Multi-host runs
(one process per host, e.g. a TPU pod slice or a SLURM job) call
:func:`initialize` first; ``jax.devices()`` then lists every host's devices
and the same mesh spans them, with the client axis split across hosts.
"""

from __future__ import annotations

import os
from typing import Optional

import jax

from robustfl_jax.fl.sharding import CLIENT_AXIS, client_mesh, replicate, shard_federated_data

__all__ = ["CLIENT_AXIS", "client_mesh", "initialize", "is_multi_process",
           "replicate", "shard_federated_data"]

_ENV_HINTS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
              "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, force: bool = False) -> bool:
  """Calls ``jax.distributed.initialize`` when a multi-process run is set up.

  With no arguments it initialises only when the environment shows a cluster
  (a coordinator address, SLURM or a TPU pod), so single-host scripts may call
  it unconditionally.

  Args:
    coordinator_address: ``host:port`` of process 0 (else auto-detected).
    num_processes: total processes (else auto-detected).
    process_id: this process's index (else auto-detected).
    force: initialise even without cluster hints.

  Returns:
    True if ``jax.distributed.initialize`` was called.
  """
  explicit = coordinator_address is not None or num_processes is not None
  if not (force or explicit or any(k in os.environ for k in _ENV_HINTS)):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True


def is_multi_process() -> bool:
  """True when this is one of several JAX processes."""
  return jax.process_count() > 1
