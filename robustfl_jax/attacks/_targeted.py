"""Targeted model poisoning (TPA) of Bhagoji et al., as used by Romoa.

The adversary wants samples of a ``source`` class classified as ``target``
(Romoa: digit 6 -> 3). It holds an auxiliary set ``x_aux`` of source-class
samples (Bhagoji et al.'s auxiliary data; here taken from the training set),
labelled ``target``. Two variants:

* *explicit boosting* (:func:`targeted_objective` + :func:`boost`): the
  Byzantine client trains on the malicious objective, cross-entropy of
  ``(x_aux, target)`` (plus ``benign_weight`` times the loss on its own data),
  and uploads its update scaled by ``boost`` = the number of clients, so that
  averaging with ``1/n`` weights does not dilute it;
* *alternating minimisation* (:func:`make_alternating_minimization`): every
  local epoch the malicious objective is minimised and its update boosted,
  then the *stealth* objective -- the loss on the client's own (benign) data
  plus ``rho * ||theta - (theta_0 + delta_ben)||^2``, the distance to the
  estimated benign model -- is minimised from the boosted point.

The estimate ``delta_ben`` of the benign update is the adversary's own
benign training update from the same start (Bhagoji et al. use the previous
global update; the own-data estimate needs no server state and is a
documented choice).

Romoa's stealth factor ``alpha`` (Sec. 2.2: the goal ``A_t = theta^a_{t-1}
- alpha (theta^a_{t-1} - O^b_t)``, a mixture of the start and the poisoned
model) scales the uploaded update by ``alpha``: ``tpa`` uploads
``alpha * boost * u``. The paper omits the boost "combined with our stealth
factor" and gives neither value; both are parameters here.

References:
  Bhagoji, A. N., Chakraborty, S., Mittal, P., Calo, S.: Analyzing federated
  learning through an adversarial lens. ICML (2019), Sec. 3-4.
  Mao, Y. et al.: Romoa. ESORICS (2021), Sec. 2.2 (TPA, eq. 3).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import Attack, register_factory

Array = jax.Array


def _masked_ce(logits, labels, mask):
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  w = mask.astype(logits.dtype)
  return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)


def auxiliary_set(x_train: np.ndarray, y_train: np.ndarray, source: int,
                  size: int = 10, seed: int = 0) -> np.ndarray:
  """``size`` training samples of class ``source`` (the adversary's aux data).

  Raises:
    ValueError: if the class has no sample or ``size < 1``.
  """
  if size < 1:
    raise ValueError(f"attack.aux_size must be >= 1; got {size}.")
  idx = np.flatnonzero(np.asarray(y_train) == source)
  if idx.size == 0:
    raise ValueError(f"attack.source={source} has no training sample.")
  rng = np.random.default_rng([seed, 0x7A9])
  idx = rng.permutation(idx)[:size]
  return np.asarray(x_train)[np.sort(idx)]


def targeted_objective(x_aux: Any, target: int, *, benign_weight: float = 0.0
                       ) -> Callable[..., Array]:
  """The TPA local objective, a ``train_loss`` for local training.

  ``aux`` is the client's Byzantine flag: honest clients minimise the usual
  cross-entropy on their data; Byzantine ones minimise
  ``CE(x_aux, target) + benign_weight * CE(own data)``.

  Args:
    x_aux: ``[r, ...]`` auxiliary source-class inputs.
    target: the label they should receive.
    benign_weight: >= 0, weight of the benign loss (0: Bhagoji's explicit
      boosting objective).

  Returns:
    ``train_loss(logits_fn, params, x, y, mask, key, aux) -> scalar``.
  """
  if not benign_weight >= 0:
    raise ValueError(f"attack.benign_weight must be >= 0; got {benign_weight}.")
  x_aux = jnp.asarray(x_aux, jnp.float32)
  y_aux = jnp.full((x_aux.shape[0],), target, jnp.int32)

  def loss(logits_fn, params, x, y, mask, key, aux=None):
    del key
    benign = _masked_ce(logits_fn(params, x), y, mask)
    if aux is None:
      return benign
    malicious = _masked_ce(logits_fn(params, x_aux), y_aux,
                           jnp.ones(y_aux.shape, bool))
    return jnp.where(aux, malicious + benign_weight * benign, benign)

  return loss


def boost(key: Array, updates: Array, byzantine_mask: Array,
          factor: Any = 10.0) -> Array:
  """Explicit boosting: Byzantine rows become ``factor * u`` (factor = n).

  The update-side half of TPA (Bhagoji et al.'s ``lambda = 1 / alpha_m``,
  the number of clients for equal weights).
  """
  del key
  updates, byzantine_mask = _common.check_inputs("boost", updates,
                                                 byzantine_mask)
  ct = _common.compute_dtype(updates.dtype)
  return _common.replace_rows(updates, byzantine_mask,
                              updates.astype(ct) * jnp.asarray(factor, ct))


# The update half of TPA under another name: tpa's ``boost`` argument shadows it.
_boost_rows = boost


def make_alternating_minimization(local_train_factory: Callable, *,
                                  x_aux: Any, target: int, boost_factor: float,
                                  rho: float = 1e-2, epochs: int = 1,
                                  malicious_steps: int = 1) -> Callable:
  """Bhagoji et al.'s alternating-minimisation TPA as a local-train function.

  Args:
    local_train_factory: ``factory(train_loss, max_examples, batch_size,
      local_epochs) -> local_train`` building
      :func:`robustfl_jax.fl.local.make_local_train` with the run's model and
      optimizer (the caller binds those).
    x_aux: ``[r, ...]`` auxiliary source-class inputs.
    target: their adversarial label.
    boost_factor: ``lambda`` applied to each malicious step's update.
    rho: weight of the distance-to-benign term (> 0).
    epochs: static number of alternations.
    malicious_steps: static local epochs on the malicious objective per
      alternation (full-batch on ``x_aux``).

  Returns:
    ``local_train(params, x, y, count, key, aux=None) -> LocalResult`` whose
    ``delta`` already contains the boosted malicious part.

  Raises:
    ValueError: bad ``rho``, ``epochs`` or ``malicious_steps``.
  """
  if not rho > 0:
    raise ValueError(f"attack.rho must be > 0; got {rho}.")
  epochs = _common.static_int("tpa_am", "epochs", epochs, minimum=1)
  malicious_steps = _common.static_int("tpa_am", "malicious_steps",
                                       malicious_steps, minimum=1)
  x_aux = jnp.asarray(x_aux, jnp.float32)
  r = x_aux.shape[0]
  y_aux = jnp.full((r,), target, jnp.int32)
  malicious_train = local_train_factory(None, r, r, malicious_steps)
  benign_train = local_train_factory(None, None, None, None)

  def stealth_loss(logits_fn, params, x, y, mask, key, aux):
    del key
    flat, _ = jax.flatten_util.ravel_pytree(params)
    return (_masked_ce(logits_fn(params, x), y, mask)
            + rho * jnp.sum(jnp.square(flat - aux)))

  stealth_train = local_train_factory(stealth_loss, None, None, None)

  def local_train(params, x, y, count, key, aux=None):
    del aux
    start, unravel = jax.flatten_util.ravel_pytree(params)
    keys = jax.random.split(key, 2 * epochs + 1)
    benign = benign_train(params, x, y, count, keys[0])
    anchor = start + benign.delta
    p = start
    loss = jnp.zeros(())
    steps = jnp.zeros((), jnp.int32)
    for e in range(epochs):
      mal = malicious_train(unravel(p), x_aux, y_aux, r, keys[1 + 2 * e])
      p = p + boost_factor * mal.delta
      stealth = stealth_train(unravel(p), x, y, count, keys[2 + 2 * e], anchor)
      p = p + stealth.delta
      loss = stealth.loss
      steps = steps + mal.num_steps + stealth.num_steps
    return benign._replace(delta=p - start, loss=loss, num_steps=steps)

  return local_train


def _check_labels(source: int, target: int, num_classes: int = 10) -> None:
  if not (0 <= source < num_classes and 0 <= target < num_classes
          and source != target):
    raise ValueError(f"source={source} and target={target} must be distinct "
                     f"labels in [0, {num_classes}).")


def _check_tpa(source: int = 6, target: int = 3, aux_size: int = 10,
               benign_weight: float = 0.0, boost: Optional[float] = None,
               rho: float = 1e-2, alpha: float = 1.0) -> None:
  _check_labels(source, target)
  if int(aux_size) < 1:
    raise ValueError(f"aux_size must be >= 1; got {aux_size}.")
  if not benign_weight >= 0:
    raise ValueError(f"benign_weight must be >= 0; got {benign_weight}.")
  if boost is not None and not boost > 0:
    raise ValueError(f"boost must be > 0; got {boost}.")
  if not rho > 0:
    raise ValueError(f"rho must be > 0; got {rho}.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha (the stealth factor) must be in [0, 1]; got "
                     f"{alpha}.")


@register_factory("tpa", check=_check_tpa)
def tpa(*, dataset: Any, num_clients: int, seed: int = 0, source: int = 6,
        target: int = 3, aux_size: int = 10, benign_weight: float = 0.0,
        boost: Optional[float] = None, alpha: float = 1.0) -> Attack:
  """TPA with explicit boosting (Bhagoji et al.), as Romoa's Table 1 runs it.

  The Byzantine clients train on :func:`targeted_objective` with
  ``aux_size`` training samples of class ``source`` labelled ``target``, and
  upload their update times ``alpha * boost`` (``boost`` default:
  ``num_clients``; ``alpha``: Romoa's stealth factor, 1 = full dose).

  Returns:
    An :class:`~robustfl_jax.attacks.Attack` with ``train_loss`` and an
    ``update`` that boosts; its ``evaluation`` measures the ``source ->
    target`` flip.
  """
  _check_tpa(source, target, aux_size, benign_weight, boost, alpha=alpha)
  x_aux = auxiliary_set(dataset.x_train, dataset.y_train, source, aux_size,
                        seed)
  factor = float(alpha) * float(num_clients if boost is None else boost)
  return Attack("tpa", update=functools.partial(_boost_rows, factor=factor),
                train_loss=targeted_objective(x_aux, target,
                                              benign_weight=benign_weight),
                evaluation={"targeted": (source, target)})


@register_factory("tpa_am", check=_check_tpa)
def tpa_am(*, dataset: Any, num_clients: int, seed: int = 0, source: int = 6,
           target: int = 3, aux_size: int = 10, boost: Optional[float] = None,
           rho: float = 1e-2) -> Attack:
  """TPA by alternating minimisation (Bhagoji et al.): see
  :func:`make_alternating_minimization`; one alternation per local epoch.

  Returns:
    An :class:`~robustfl_jax.attacks.Attack` whose ``local_train`` replaces
    the Byzantine clients' training (the boost is inside it).
  """
  _check_tpa(source, target, aux_size, boost=boost, rho=rho)
  x_aux = auxiliary_set(dataset.x_train, dataset.y_train, source, aux_size,
                        seed)
  factor = float(num_clients if boost is None else boost)

  def local_train(factory, local_epochs):
    return make_alternating_minimization(
        factory, x_aux=x_aux, target=target, boost_factor=factor, rho=rho,
        epochs=local_epochs)

  return Attack("tpa_am", local_train=local_train,
                evaluation={"targeted": (source, target)})

