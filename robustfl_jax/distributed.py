"""Multi-process runs: initialisation, barriers, host copies and a local launcher.

A multi-process (multi-controller) run starts one Python process per host (or
per GPU); each calls :func:`initialize` before touching a device, after which
``jax.devices()`` lists the devices of every process and the 1-D mesh of
:func:`robustfl_jax.fl.sharding.client_mesh` spans them, the client axis
split across processes. Each process then builds only the rows of the client
data its own devices hold (:func:`robustfl_jax.fl.sharding.local_client_rows`)
and the global arrays come from process-local data
(``jax.make_array_from_process_local_data``).

On CPU the cross-process collectives use gloo, which :func:`initialize` sets
(``jax_cpu_collectives_implementation``) before ``jax.distributed.initialize``;
the option only concerns the CPU backend, so it is harmless on GPU and TPU.

A process that dies is noticed by the coordination service after
``heartbeat_timeout_s``; the survivors are then terminated with an error
(not left waiting in a collective forever).

References:
  JAX documentation, "Multi-process environments" (``jax.distributed``,
  ``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from robustfl_jax.fl.sharding import (CLIENT_AXIS, client_mesh, replicate,
                                      shard_federated_data)

__all__ = ["CLIENT_AXIS", "barrier", "client_mesh", "cluster_detected",
           "free_port",
           "initialize", "is_main_process", "is_multi_process",
           "launch_local", "replicate", "shard_federated_data", "to_host"]

_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
                    "MEGASCALE_COORDINATOR_ADDRESS")


def cluster_detected(env: Optional[dict] = None) -> bool:
  """Whether the environment describes a run of several processes that
  ``jax.distributed.initialize()`` can join without arguments: a
  coordinator address, a SLURM step of more than one task, or a TPU slice
  of more than one host. (A single-task SLURM allocation is one process.)"""
  env = os.environ if env is None else env
  if any(k in env for k in _COORDINATOR_ENV):
    return True
  try:
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env
  except ValueError:
    slurm = False
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  return slurm or len(hosts) > 1


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, force: bool = False,
               heartbeat_timeout_s: int = 100,
               initialization_timeout_s: int = 300) -> bool:
  """Calls ``jax.distributed.initialize`` when a multi-process run is set up.

  With no arguments it initialises only when :func:`cluster_detected` (a
  coordinator address, a multi-task SLURM step or a multi-host TPU slice),
  so single-process scripts may call it unconditionally. A run of one process (``num_processes=1``) is not
  initialised.

  Args:
    coordinator_address: ``host:port`` of process 0 (else auto-detected).
    num_processes: total processes (else auto-detected).
    process_id: this process's index (else auto-detected).
    force: initialise even without cluster hints.
    heartbeat_timeout_s: seconds after which a silent process counts as dead
      and the others stop with an error.
    initialization_timeout_s: seconds to wait for all processes to connect.

  Returns:
    True if ``jax.distributed.initialize`` was called.

  Raises:
    ValueError: ``process_id`` outside ``[0, num_processes)``, or only some of
      the three values given where auto-detection cannot fill the rest.
  """
  if num_processes is not None and int(num_processes) < 1:
    raise ValueError(f"--num_processes must be >= 1; got {num_processes}.")
  if process_id is not None and num_processes is not None and not (
      0 <= int(process_id) < int(num_processes)):
    raise ValueError(f"--process_id must be in [0, {num_processes}); got "
                     f"{process_id}.")
  if num_processes == 1:
    return False
  explicit = coordinator_address is not None or num_processes is not None
  if not (force or explicit or cluster_detected()):
    return False
  if explicit and not cluster_detected() and (
      coordinator_address is None or num_processes is None
      or process_id is None):
    raise ValueError("--coordinator_address, --num_processes and --process_id "
                     "go together outside a cluster (SLURM, TPU pod); got "
                     f"{coordinator_address!r}, {num_processes!r}, "
                     f"{process_id!r}.")
  # Gloo gives the CPU backend cross-process collectives; GPU and TPU ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, heartbeat_timeout_seconds=int(heartbeat_timeout_s),
      initialization_timeout=int(initialization_timeout_s))
  return True


def is_multi_process() -> bool:
  """True when this is one of several JAX processes."""
  return jax.process_count() > 1


def is_main_process() -> bool:
  """True in process 0, the one that writes logs, metrics and plots."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op alone)."""
  if is_multi_process():
    multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
  """``jax.device_get`` that also takes arrays spread over processes.

  Fully replicated arrays are read from a local copy; an array split across
  processes is gathered (every process must call this together).
  """
  def get(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and (
        not leaf.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return jax.device_get(leaf)
  return jax.tree.map(get, tree)


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (for a local coordinator)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch_local(argv: Sequence[str], *, num_processes: int = 2,
                 devices_per_process: int = 2, timeout_s: float = 300.0,
                 env: Optional[dict] = None, cwd: Optional[str] = None,
                 port: Optional[int] = None
                 ) -> list[subprocess.CompletedProcess]:
  """Runs ``argv`` as ``num_processes`` local CPU processes of one run.

  Each process gets ``--coordinator_address=127.0.0.1:<free port>
  --num_processes=N --process_id=i`` appended and ``devices_per_process``
  forced CPU devices. If any process fails or the time runs out, the others
  are killed, so a launch never hangs.

  Args:
    argv: the command, e.g. ``[sys.executable, "scripts/train.py", ...]``.
    num_processes: processes to start.
    devices_per_process: forced CPU devices in each.
    timeout_s: wall-clock limit for the whole run.
    env: environment (default: this process's).
    cwd: working directory.
    port: coordinator port (default: a free one).

  Returns:
    One ``CompletedProcess`` per process (stdout and stderr as text); a
    process killed for the time limit or another's failure has a negative
    return code.
  """
  port = free_port() if port is None else port
  base = dict(os.environ if env is None else env)
  base["JAX_PLATFORMS"] = "cpu"
  base["XLA_FLAGS"] = (base.get("XLA_FLAGS", "") + " --xla_force_host_platform"
                       f"_device_count={int(devices_per_process)}").strip()
  procs = []
  for i in range(num_processes):
    cmd = list(argv) + [f"--coordinator_address=127.0.0.1:{port}",
                        f"--num_processes={num_processes}",
                        f"--process_id={i}"]
    procs.append(subprocess.Popen(cmd, env=base, cwd=cwd, text=True,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE))
  return _wait_all(procs, timeout_s)


def _wait_all(procs: list, timeout_s: float) -> list:
  deadline = time.monotonic() + timeout_s
  outputs: dict[int, tuple[str, str]] = {}
  # communicate() one at a time could block on a full pipe of another
  # process, so read each in a thread.
  def reader(i, p):
    outputs[i] = p.communicate()
  threads = [threading.Thread(target=reader, args=(i, p), daemon=True)
             for i, p in enumerate(procs)]
  for t in threads:
    t.start()
  while any(p.poll() is None for p in procs):
    failed = any(p.poll() not in (None, 0) for p in procs)
    if failed or time.monotonic() > deadline:
      # A failed process: give the others a moment to report it, then stop.
      grace = time.monotonic() + (30.0 if failed else 0.0)
      while failed and time.monotonic() < min(grace, deadline) and any(
          p.poll() is None for p in procs):
        time.sleep(0.2)
      for p in procs:
        if p.poll() is None:
          p.kill()
      break
    time.sleep(0.2)
  for t in threads:
    t.join(timeout=30)
  return [subprocess.CompletedProcess(p.args, p.wait(),
                                      *outputs.get(i, ("", "")))
          for i, p in enumerate(procs)]
