"""Server state of the federated simulation."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


@flax.struct.dataclass
class ServerState:
  """Everything a round reads and writes; checkpointed as one pytree.

  Attributes:
    params: global model parameters (pytree).
    opt_state: server optimizer (optax) state.
    aggregator_state: state of the aggregation rule (empty for stateless rules).
    client_state: per-client state kept across rounds; here the client
      momentum buffers ``f32[C, d]`` (None when disabled).
    round: ``int32`` scalar, rounds completed.
    key: ``uint32[2]`` base PRNG key; round ``t`` uses ``fold_in(key, t)``.
  """

  params: Any
  opt_state: Any
  aggregator_state: Any
  client_state: Any
  round: Array
  key: Array


class FederatedData(NamedTuple):
  """Client data as the round function sees it (device arrays).

  Attributes:
    x: ``[C', M, ...]`` inputs (``C' >= C`` when padded for sharding).
    y: ``int32[C', M]``.
    count: ``int32[C']`` real examples per client (0 for padding clients).
    byzantine: ``bool[C']`` the Byzantine clients (False for padding).
  """

  x: Array
  y: Array
  count: Array
  byzantine: Array


def init_server_state(params: Any, server_optimizer: optax.GradientTransformation,
                      aggregator: Any, num_clients: int, key: Array,
                      client_momentum: float = 0.0) -> ServerState:
  """The state before round 0.

  Args:
    params: initial global parameters.
    server_optimizer: the server optax transformation.
    aggregator: an ``Aggregator`` (``init(params)`` sizes its state).
    num_clients: ``C``.
    key: a raw ``uint32[2]`` PRNG key (``jax.random.PRNGKey(seed)``).
    client_momentum: > 0 allocates per-client momentum buffers.

  The state holds copies of ``params`` and ``key``: a jitted round donates
  its state, and the caller may start more runs from the same arguments.
  """
  params = jax.tree.map(jnp.copy, params)
  flat, _ = jax.flatten_util.ravel_pytree(params)
  client_state = None
  if client_momentum > 0:
    client_state = jnp.zeros((num_clients, flat.shape[0]), jnp.float32)
  return ServerState(
      params=params,
      opt_state=server_optimizer.init(params),
      aggregator_state=aggregator.init(flat),
      client_state=client_state,
      round=jnp.zeros((), jnp.int32),
      key=jnp.array(key, jnp.uint32))  # jnp.array copies


def params_sha256(params: Any) -> str:
  """SHA-256 of the parameters' bytes (leaves in tree order, host layout)."""
  import hashlib  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(params):
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()
