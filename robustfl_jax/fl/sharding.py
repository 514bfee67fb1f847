"""Placing the client axis on a ``jax.sharding.Mesh`` axis ``clients``.

Client data is split over devices along its first axis; the server state is
replicated. ``jit`` then partitions the vmapped local training by client and
gathers the ``[C, d]`` updates for aggregation. When ``C`` is not a multiple
of the device count, padding clients with no data are appended; the round
function drops their rows before the attack, so results equal one device.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from robustfl_jax.fl.server import FederatedData

CLIENT_AXIS = "clients"


def client_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh with axis ``clients`` over ``devices`` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axes: jit (GSPMD) propagates the client sharding through the vmapped
  # local training and inserts the gather before aggregation.
  return jax.make_mesh((len(devices),), (CLIENT_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def pad_clients(data: FederatedData, multiple: int) -> FederatedData:
  """Appends empty, honest clients so that ``C`` is a multiple of ``multiple``."""
  num = data.y.shape[0]
  pad = (-num) % multiple
  if pad == 0:
    return data
  def grow(a):
    a = np.asarray(a)
    return np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
  return FederatedData(*(grow(a) for a in data))


def shard_federated_data(data: FederatedData, mesh: Optional[Mesh]
                         ) -> FederatedData:
  """Device arrays; with a mesh, padded and split along ``clients``."""
  if mesh is None:
    return FederatedData(*(jnp.asarray(a) for a in data))
  data = pad_clients(data, mesh.shape[CLIENT_AXIS])
  def put(a):
    spec = P(CLIENT_AXIS, *([None] * (np.ndim(a) - 1)))
    return jax.device_put(np.asarray(a), NamedSharding(mesh, spec))
  return FederatedData(*(put(a) for a in data))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
  """Places every leaf of ``tree`` on all devices of ``mesh`` (or leaves it)."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))
