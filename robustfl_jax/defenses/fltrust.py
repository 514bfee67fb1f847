"""FLTrust (Cao et al., NDSS 2021): trust bootstrapped from a server root set.

Each round the server trains the global model on its small clean root data set
exactly as a client would, giving the server update ``g0``. Client ``i`` gets
the trust score ``TS_i = ReLU(cos(g_i, g0))``, its update is rescaled to the
server update's norm, ``gbar_i = g_i |g0| / |g_i|``, and the aggregate is
``sum_i TS_i gbar_i / sum_i TS_i`` (Algorithm 1, step III).

Guarantees: every accepted row enters with norm exactly ``|g0|`` and a weight
in [0, 1] of the total, so the aggregate's norm is at most ``|g0|`` whatever
the Byzantine rows send; rows pointing away from ``g0`` (cosine <= 0) get no
weight at all.

Edge cases (the paper leaves them open; chosen here and tested): a zero row
(or a zero server update) has cosine 0, hence trust 0; non-finite and masked
rows have trust 0; when every trust score is 0 the aggregate is zeros (the
model is left unchanged).

References:
  Cao, X., Fang, M., Liu, J., Gong, N. Z.: FLTrust: Byzantine-robust
  federated learning via trust bootstrapping. NDSS (2021).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from robustfl_jax.aggregators import base
from robustfl_jax.aggregators.base import Aggregator, EmptyState, row_norms
from robustfl_jax.defenses._probe import BehaviourProbe, finite_rows, round_context
from robustfl_jax.defenses._registry import Defense, register
from robustfl_jax.fl.local import make_local_train

Array = jax.Array


def trust_scores(updates: Array, server_update: Array) -> Array:
  """``ReLU(cos(g_i, g0))`` per row; 0 for zero, non-finite rows or zero ``g0``."""
  finite = jnp.all(jnp.isfinite(updates), axis=1)
  rows = jnp.where(finite[:, None], updates, 0).astype(jnp.float32)
  g0 = jnp.where(jnp.isfinite(server_update), server_update, 0).astype(jnp.float32)
  norms = row_norms(rows)
  g0_norm = jnp.linalg.norm(g0)
  denom = norms * g0_norm
  cos = jnp.where(denom > 0, rows @ g0 / jnp.where(denom > 0, denom, 1), 0.0)
  return jnp.where(finite, jax.nn.relu(cos), 0.0)


def fltrust_aggregate(updates: Array, server_update: Array,
                      mask: Optional[Array] = None) -> tuple[Array, dict]:
  """The FLTrust combination of client updates given the server update.

  Args:
    updates: ``[n, d]`` client updates.
    server_update: ``[d]`` the server's update ``g0`` on its root set.
    mask: optional ``bool[n]``; False rows get trust 0.

  Returns:
    ``(aggregate [d], info)`` with ``info`` holding ``trust`` (``TS_i``),
    ``weights`` (``TS_i / sum TS``), ``selected`` (``TS_i > 0``),
    ``rejected`` (masked or non-finite rows) and the counts.
  """
  finite, valid = finite_rows(updates, mask)
  trust = jnp.where(valid, trust_scores(updates, server_update), 0.0)
  rows = jnp.where(valid[:, None], updates, 0).astype(jnp.float32)
  g0_norm = jnp.linalg.norm(jnp.where(jnp.isfinite(server_update),
                                      server_update, 0).astype(jnp.float32))
  norms = row_norms(rows)
  scale = jnp.where(norms > 0, g0_norm / jnp.where(norms > 0, norms, 1), 0.0)
  total = jnp.sum(trust)
  weights = jnp.where(total > 0, trust / jnp.where(total > 0, total, 1), 0.0)
  aggregate = (weights * scale) @ rows
  info = base.with_exclusion({"trust": trust, "weights": weights,
                              "selected": trust > 0,
                              **base.base_info(finite, valid)}, valid)
  return aggregate.astype(updates.dtype), info


def fltrust_probe(apply_fn: Callable, params_template: Any, root_x: Any,
                  root_y: Any, *, optimizer: optax.GradientTransformation,
                  batch_size: int, local_epochs: int = 1,
                  mode: str = "fedavg") -> BehaviourProbe:
  """The server update on the root set and the trust scores, as a probe.

  ``reference(global_params, key)`` is the server update ``g0`` (local
  training on the root set, as the clients train); ``score`` is the trust
  score; ``accept`` keeps rows with trust > 0.
  """
  root_x = jnp.asarray(root_x, jnp.float32)
  root_y = jnp.asarray(root_y, jnp.int32)
  if root_x.shape[0] < 1:
    raise ValueError("aggregator.root_size must be >= 1: FLTrust needs a root set.")
  local_train = make_local_train(apply_fn, optimizer,
                                 max_examples=int(root_x.shape[0]),
                                 batch_size=batch_size,
                                 local_epochs=local_epochs, mode=mode)
  _, unravel = jax.flatten_util.ravel_pytree(params_template)
  count = jnp.asarray(root_x.shape[0], jnp.int32)

  def reference(global_params, key):
    return local_train(unravel(global_params), root_x, root_y, count, key).delta

  def score(server_update, global_params, updates):
    del global_params
    return trust_scores(updates, server_update)

  def accept(ref, scores, valid):
    del ref
    return valid & (scores > 0)

  return BehaviourProbe(reference, score, accept)


def fltrust(apply_fn: Callable, params_template: Any, root_x: Any, root_y: Any,
            *, optimizer: optax.GradientTransformation, batch_size: int,
            local_epochs: int = 1, mode: str = "fedavg") -> Aggregator:
  """FLTrust as an ``Aggregator`` that reads ``global_params`` from the context.

  Args:
    apply_fn: the model's flax ``apply``.
    params_template: example parameters (fixes the flattening).
    root_x: ``[R, ...]`` the server's root inputs (100 samples in the paper).
    root_y: ``int[R]`` their labels.
    optimizer: the clients' optax optimizer (the server trains as they do).
    batch_size: local minibatch size.
    local_epochs: local epochs.
    mode: ``"fedavg"`` or ``"fedsgd"``.

  Returns:
    ``Aggregator(init, update)``; ``update(updates, state, *, key, mask=None,
    global_params, **context)`` (``key`` drives the server's minibatch order;
    ``weights`` in the context is ignored: trust replaces data-size weights).

  Raises:
    ValueError: an empty root set; at round time, a missing
      ``global_params``.

  Example::

    agg = fltrust(model.apply, params, x_root, y_root,
                  optimizer=optax.sgd(0.1), batch_size=32)
    out, state, info = agg.update(updates, agg.init(flat), key=key,
                                  global_params=flat)
  """
  probe = fltrust_probe(apply_fn, params_template, root_x, root_y,
                        optimizer=optimizer, batch_size=batch_size,
                        local_epochs=local_epochs, mode=mode)

  def init(params):
    del params
    return EmptyState()

  def update(updates, state, *, key=None, mask=None, global_params=None,
             **context):
    del context
    key = round_context("fltrust", global_params, key)
    server_update = probe.reference(global_params, key)
    aggregate, info = fltrust_aggregate(updates, server_update, mask)
    info["server_update_norm"] = jnp.linalg.norm(server_update)
    return aggregate, state, info

  return Aggregator(init, update)


def root_set(x: Any, y: Any, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``size`` training samples drawn uniformly without replacement (host numpy).

  Cao et al. draw the root set uniformly from the training data (their
  default bias 0); the caller decides whether it comes from the clients' data.

  Raises:
    ValueError: ``size`` outside [1, N].
  """
  x, y = np.asarray(x), np.asarray(y)
  if not 1 <= int(size) <= len(y):
    raise ValueError(f"root_size={size} must be in [1, {len(y)}] (the number "
                     "of training samples).")
  idx = np.sort(np.random.default_rng([seed, 0x7257]).choice(len(y), int(size),
                                                              replace=False))
  return x[idx], y[idx]


def _check_fltrust(root_size: int = 100) -> None:
  if int(root_size) < 1:
    raise ValueError(f"root_size must be >= 1; got {root_size}.")


@register("fltrust", check=_check_fltrust)
def fltrust_defense(*, apply_fn: Callable, params: Any, dataset: Any,
                    client_optimizer: optax.GradientTransformation,
                    batch_size: int, local_epochs: int = 1,
                    mode: str = "fedavg", seed: int = 0,
                    root_size: int = 100) -> Defense:
  """FLTrust for an experiment: a root set of ``root_size`` training samples
  (Cao et al.: 100) drawn with ``seed``; the server trains as the clients do.
  """
  x_root, y_root = root_set(dataset.x_train, dataset.y_train, root_size, seed)
  hp = dict(optimizer=client_optimizer, batch_size=int(batch_size),
            local_epochs=int(local_epochs), mode=mode)
  return Defense(fltrust(apply_fn, params, x_root, y_root, **hp),
                 fltrust_probe(apply_fn, params, x_root, y_root, **hp))
