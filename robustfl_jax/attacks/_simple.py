"""Own-update attacks: each Byzantine client transforms its own honest update.

These follow the semantics of the project's seed code (a scaling, an additive
Gaussian noise, a sign flip and a random replacement applied to each malicious
client's update) plus the zero, non-finite and model-replacement variants. None
of them needs the honest clients' updates, so an all-Byzantine input is handled
like any other.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import register_attack

Array = jax.Array


@register_attack()
def sign_flip(key: Optional[Array], updates: Array, byzantine_mask: Array) -> Array:
  """Sign-flipping attack: each Byzantine row sends ``-u``.

  References: the seed's ``_sign_flip_attack``; studied e.g. by Allen-Zhu et al.
  (2020) and Karimireddy et al. (2021).

  Args:
    key: unused (kept for the common attack signature).
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``, ``True`` for Byzantine rows.

  Returns:
    ``[n, d]`` updates with Byzantine rows negated, same dtype.

  Edge cases:
    No Byzantine rows: the input is returned unchanged. All rows Byzantine:
    every row is negated. A zero row stays zero; NaN stays NaN.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("sign_flip", updates, byzantine_mask)
  return _common.replace_rows(updates, byzantine_mask, -updates)


@register_attack()
def scaling(key: Optional[Array], updates: Array, byzantine_mask: Array,
            factor: Any = 100.0) -> Array:
  """Scaling attack: each Byzantine row sends ``factor * u``.

  References: the seed's ``_scaling_attack`` (default factor 100).

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    factor: multiplier (any real; negative values combine with a sign flip).

  Returns:
    ``[n, d]`` updates, Byzantine rows scaled, same dtype. In low-precision
    dtypes a large factor may overflow to Inf, exactly as the cast would.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: every row is scaled.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("scaling", updates, byzantine_mask)
  ct = _common.compute_dtype(updates.dtype)
  poisoned = updates.astype(ct) * jnp.asarray(factor, ct)
  return _common.replace_rows(updates, byzantine_mask, poisoned)


@register_attack()
def gaussian_noise(key: Array, updates: Array, byzantine_mask: Array,
                   std: Any = 10.0) -> Array:
  """Additive Gaussian noise attack: each Byzantine row sends ``u + N(0, std^2 I)``.

  References: the seed's ``_noise_attack`` (``update + normal(0, noise_std)``,
  default std 10).

  Args:
    key: PRNG key; the noise of row ``i`` depends only on ``key`` and the shape.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    std: noise standard deviation, >= 0.

  Returns:
    ``[n, d]`` updates with noise added to Byzantine rows, same dtype.

  Raises:
    ValueError: if ``std`` is a negative Python number.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: noise on every row.
    ``std=0`` returns the input.
  """
  updates, byzantine_mask = _common.check_inputs("gaussian_noise", updates, byzantine_mask)
  _common.check_positive("gaussian_noise", "std", std, strict=False)
  ct = _common.compute_dtype(updates.dtype)
  noise = jax.random.normal(key, updates.shape, ct) * jnp.asarray(std, ct)
  return _common.replace_rows(updates, byzantine_mask, updates.astype(ct) + noise)


@register_attack()
def random(key: Array, updates: Array, byzantine_mask: Array) -> Array:
  """Random replacement attack: each Byzantine row sends a fresh ``N(0, I)`` draw.

  References: the seed's ``random`` attack (``torch.randn_like(value)``).

  Args:
    key: PRNG key.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.

  Returns:
    ``[n, d]`` updates with Byzantine rows replaced by standard normal noise.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: every row is noise.
  """
  updates, byzantine_mask = _common.check_inputs("random", updates, byzantine_mask)
  noise = jax.random.normal(key, updates.shape, _common.compute_dtype(updates.dtype))
  return _common.replace_rows(updates, byzantine_mask, noise)


@register_attack()
def zero(key: Optional[Array], updates: Array, byzantine_mask: Array) -> Array:
  """Zero attack: each Byzantine row sends the zero update (a free rider).

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.

  Returns:
    ``[n, d]`` updates with Byzantine rows set to 0.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: all zeros.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("zero", updates, byzantine_mask)
  return _common.replace_rows(updates, byzantine_mask, jnp.zeros((), updates.dtype))


_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


@register_attack()
def non_finite(key: Optional[Array], updates: Array, byzantine_mask: Array,
               value: str = "nan") -> Array:
  """Non-finite attack: each Byzantine row is filled with NaN, +Inf or -Inf.

  The library treats any non-finite row as Byzantine; this attack checks that
  a rule ignores such rows and that nothing non-finite reaches the model.

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    value: ``"nan"``, ``"inf"`` or ``"-inf"`` (static).

  Returns:
    ``[n, d]`` updates with Byzantine rows filled with ``value``.

  Raises:
    ValueError: if ``value`` is not one of the three strings.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: every row non-finite.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("non_finite", updates, byzantine_mask)
  _common.check_choice("non_finite", "value", value, tuple(_NON_FINITE))
  return _common.replace_rows(
      updates, byzantine_mask, jnp.asarray(_NON_FINITE[value], updates.dtype))


@register_attack()
def model_replacement(key: Optional[Array], updates: Array, byzantine_mask: Array,
                      boost: Optional[float] = None, server_lr: Any = 1.0) -> Array:
  """Model-replacement boosting: each Byzantine row sends ``gamma * u``.

  Bagdasaryan et al. show that an attacker who wants the global model ``G`` to
  become its model ``X`` submits ``gamma * (X - G) + G`` with
  ``gamma = n / eta`` (``n`` participants, ``eta`` the server learning rate of
  ``G + eta / n * sum_i (L_i - G)``); the honest updates then roughly cancel.
  In update space (``u = X - G``) that is ``gamma * u``. Give the backdoored
  update as the Byzantine rows (e.g. after data poisoning) to reproduce the
  paper; on an honest update it is a scaling attack with ``gamma = n``.

  References:
    E. Bagdasaryan, A. Veit, Y. Hua, D. Estrin, V. Shmatikov. How To Backdoor
    Federated Learning. AISTATS 2020 (Section 3.2, "constrain-and-scale").

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    boost: ``gamma``; ``None`` means ``n / server_lr`` with ``n = updates.shape[0]``.
    server_lr: the server learning rate ``eta`` (> 0), used when ``boost`` is None.

  Returns:
    ``[n, d]`` updates with Byzantine rows boosted.

  Raises:
    ValueError: if ``server_lr`` is a non-positive Python number.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: all rows boosted. Several
    attackers each apply the full ``gamma`` (the paper's single-attacker
    formula); pass ``boost=n / (eta * num_attackers)`` to share it.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("model_replacement", updates, byzantine_mask)
  _common.check_positive("model_replacement", "server_lr", server_lr)
  ct = _common.compute_dtype(updates.dtype)
  gamma = (jnp.asarray(updates.shape[0], ct) / jnp.asarray(server_lr, ct)
           if boost is None else jnp.asarray(boost, ct))
  return _common.replace_rows(updates, byzantine_mask, updates.astype(ct) * gamma)
