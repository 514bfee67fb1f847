"""Placing the client axis on a ``jax.sharding.Mesh`` axis ``clients``.

Client data is split over devices along its first axis; the server state is
replicated. ``jit`` then partitions the vmapped local training by client.
When ``C`` is not a multiple of the device count, padding clients with no
data are appended; the round function drops their rows before the attack, so
results equal one device.

**Aggregation sharded along the parameters.** After local training the
``[C, d]`` update matrix is resharded from client-split to parameter-split
(:func:`params_sharding`, the same mesh axis now over ``d``; XLA inserts an
all-to-all), one column chunk at a time (:class:`ChunkedResharding`, which
sets a :func:`robustfl_jax.aggregators.columns.column_plan`): only the
client-split input and one ``[C, d / (k D)]`` chunk with its working
buffers are in flight, about ``1.3 x C x d x 4 / D`` bytes per device for
``k`` = :data:`NUM_CHUNKS` (measured: tests/fl/test_param_sharding.py).
Within a chunk the rules run under GSPMD with every device holding
``[C, d / (k D)]``: coordinate-wise rules (mean, median, trimmed mean, Meamed,
Bulyan's coordinate phase) are shard-local, and the distance-based ones
(Krum, Multi-Krum, Bulyan's selection, NNM, geometric median, centered
clipping, clipping) reduce their ``[C, C]`` Gram or per-row norms over ``d``
as partial sums combined by an all-reduce (a ``psum``). No device ever holds
the full ``[C, d]`` matrix; only the ``[d]`` aggregate is gathered for the
server step. :data:`SHARDED_RULES` lists the rules checked to compile without
an all-gather of the update matrix (tests/fl/test_param_sharding.py); any
other rule (Romoa, whose top-|theta| selection sorts along ``d``) gets the
gathered ``[C, d]`` as before, with a warning (:func:`aggregation_sharding`).

**Several processes.** Each process builds only the client rows its own
devices hold (:func:`local_client_rows`) and :func:`federated_data_from_local`
makes the global arrays with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from robustfl_jax.aggregators import columns
from robustfl_jax.fl.server import FederatedData

CLIENT_AXIS = "clients"

# Rules (and pre-aggregators) whose compiled aggregation over a parameter-
# sharded [C, d] holds no all-gather of it (tests/fl/test_param_sharding.py).
SHARDED_RULES = frozenset({
    "mean", "coordinate_median", "median", "trimmed_mean", "meamed", "krum",
    "multi_krum", "bulyan", "geometric_median", "rfa", "centered_clipping"})
SHARDED_PRE_AGGREGATORS = frozenset({"nnm", "bucketing", "clip_by_norm", "arc"})
# Column chunks of the chunked reshard: the rules' working buffers per chunk
# measure up to ~20 chunk copies (trimmed mean's sorting network), so 64
# chunks keep them under half of the input (tests/fl/test_param_sharding.py).
NUM_CHUNKS = 64


class ChunkedResharding(NamedTuple):
  """The updates stay client-split; the rule reshards them chunk by chunk.

  Attributes:
    mesh: the mesh whose ``clients`` axis splits the clients, then each
      chunk's parameters.
    num_chunks: column chunks (the largest divisor of ``d`` up to it).
  """

  mesh: Mesh
  num_chunks: int = NUM_CHUNKS

  def plan(self):
    """The :func:`columns.column_plan` to trace the aggregation under."""
    target = params_sharding(self.mesh)
    return columns.column_plan(
        self.num_chunks,
        place=lambda chunk: jax.lax.with_sharding_constraint(chunk, target))


def client_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh with axis ``clients`` over ``devices`` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axes: jit (GSPMD) propagates the client sharding through the vmapped
  # local training and inserts the gather before aggregation.
  return jax.make_mesh((len(devices),), (CLIENT_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def _grow(a, rows: int) -> np.ndarray:
  a = np.asarray(a)
  if a.shape[0] >= rows:
    return a
  return np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:],
                                     a.dtype)])


def pad_clients(data: FederatedData, multiple: int) -> FederatedData:
  """Appends empty, honest clients so that ``C`` is a multiple of ``multiple``
  (any NamedTuple of client-major arrays: FederatedData, ClientData)."""
  num = data.y.shape[0]
  pad = (-num) % multiple
  if pad == 0:
    return data
  return type(data)(*(_grow(a, num + pad) for a in data))


def rows_of(a: Any, rows: range) -> np.ndarray:
  """Rows ``rows`` of a client-major array; rows past its end are zeros
  (empty, honest padding clients)."""
  return _grow(a, rows.stop)[rows.start:rows.stop]


def take_rows(data: Any, rows: range) -> Any:
  """:func:`rows_of` of every array of a NamedTuple (FederatedData,
  ClientData)."""
  return type(data)(*(rows_of(a, rows) for a in data))


def padded_clients(num_clients: int, mesh: Optional[Mesh]) -> int:
  """``C`` rounded up to a multiple of the mesh's ``clients`` axis."""
  if mesh is None:
    return num_clients
  size = mesh.shape[CLIENT_AXIS]
  return -(-num_clients // size) * size


def client_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Split along the first (client) axis, the rest whole."""
  return NamedSharding(mesh, P(CLIENT_AXIS, *([None] * (ndim - 1))))


def local_client_rows(num_clients: int, mesh: Optional[Mesh]) -> range:
  """The rows of the padded client axis that this process's devices hold.

  With one process (or no mesh) that is every row. The rows are contiguous
  (the mesh lists each process's devices together); rows at or past
  ``num_clients`` are padding.

  Raises:
    ValueError: the process's rows are not contiguous (a mesh whose devices
      interleave processes).
  """
  total = padded_clients(num_clients, mesh)
  if mesh is None:
    return range(total)
  index_map = client_sharding(mesh, 1).addressable_devices_indices_map(
      (total,))
  rows = sorted({i for idx in index_map.values()
                 for i in range(*idx[0].indices(total))})
  if rows != list(range(rows[0], rows[-1] + 1)):
    raise ValueError("this process's devices hold non-contiguous client rows; "
                     "order the mesh's devices by process.")
  return range(rows[0], rows[-1] + 1)


def federated_data_from_local(local: FederatedData, num_clients: int,
                              mesh: Optional[Mesh]) -> FederatedData:
  """Global client-split arrays from this process's rows.

  Args:
    local: the rows :func:`local_client_rows` names, padding rows included
      (NumPy arrays).
    num_clients: the real ``C``.
    mesh: the mesh; None returns plain device arrays of ``local``.

  Returns:
    :class:`FederatedData` of global arrays of ``padded_clients`` rows.
  """
  if mesh is None:
    return FederatedData(*(jnp.asarray(a) for a in local))
  total = padded_clients(num_clients, mesh)
  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_process_local_data(
        client_sharding(mesh, a.ndim), a, (total,) + a.shape[1:])
  return FederatedData(*(put(a) for a in local))


def shard_federated_data(data: FederatedData, mesh: Optional[Mesh]
                         ) -> FederatedData:
  """Device arrays from every client's data; with a mesh, padded and split
  along ``clients`` (each process keeps only its own rows)."""
  if mesh is None:
    return FederatedData(*(jnp.asarray(a) for a in data))
  num_clients = data.y.shape[0]
  local = take_rows(data, local_client_rows(num_clients, mesh))
  return federated_data_from_local(local, num_clients, mesh)


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
  """Places every leaf of ``tree`` on all devices of ``mesh`` (or leaves it).

  Every process must pass the same values (true of the server state, which
  is built from the seed).
  """
  if mesh is None:
    return tree
  sharding = NamedSharding(mesh, P())
  def put(leaf):
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, sharding,
                                        lambda idx: leaf[idx])
  return jax.tree.map(put, tree)


def replicated(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
  """The whole array on every device of ``mesh`` (None without one)."""
  return None if mesh is None else NamedSharding(mesh, P())


def params_sharding(mesh: Mesh) -> NamedSharding:
  """``[C, d]`` split along ``d`` over the mesh's ``clients`` axis."""
  return NamedSharding(mesh, P(None, CLIENT_AXIS))


def aggregation_sharding(mesh: Optional[Mesh], rule: str,
                         pre_aggregators: tuple = (), *,
                         warn: Callable[[str], None] = lambda line: None
                         ) -> Any:
  """Where the round puts the ``[C, d]`` updates before the rule.

  Args:
    mesh: the mesh (None: one device, nothing to place).
    rule: the aggregator's name.
    pre_aggregators: names of the pre-aggregators before it.
    warn: receives one line when the rule cannot shard.

  Returns:
    :class:`ChunkedResharding` for the rules of :data:`SHARDED_RULES`;
    :func:`params_sharding` (the whole matrix resharded at once) when
    pre-aggregators come first (their output is a new ``[C', d]`` matrix,
    not chunked); replicated (the gather) for the other rules; None without
    a mesh or with a single device.
  """
  if mesh is None or mesh.devices.size == 1:
    return None
  unshardable = [n for n in pre_aggregators
                 if n not in SHARDED_PRE_AGGREGATORS]
  if rule not in SHARDED_RULES:
    unshardable.insert(0, rule)
  if unshardable:
    warn(f"aggregation by {', '.join(unshardable)} is not sharded along the "
         "parameters; each device gathers the full [C, d] update matrix.")
    return NamedSharding(mesh, P())
  if pre_aggregators:
    return params_sharding(mesh)
  return ChunkedResharding(mesh)
