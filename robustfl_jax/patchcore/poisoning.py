"""Memory-bank poisoning: a malicious client injects defect features into its coreset.

PatchCore scores a test patch by its distance to the nearest memory-bank
patch (Roth et al. 2022, Eq. 6). The attacks that matter to a nearest-
neighbour detector are therefore not the far-away vectors of gradient
attacks (scaling, noise, sign flip: no test patch is near them) but patches
that *look like defects*: once such a patch is in the global bank, a real
defect of the same kind finds a close neighbour and scores as normal.

`defect_injection` replaces a fraction of each Byzantine client's submitted
coreset with defect-patch features. The attacker holds defective images
(real ones from a pool disjoint from the test set, or synthetic defects drawn
on its own cells) and keeps their *defect* patches: those that stand out of
their own cell when scored against its own honest coreset (the attacker runs
PatchCore on its defect images with its own bank, as any client can), spread out by a greedy k-center
selection so that they cover many defect appearances. It replaces the tail
of its coreset, the patches its own greedy selection took last (the least
needed for coverage), so its bank's norms and bulk stay those of an honest
client. Greedy global selection then favours the injected patches: they are
far from every honest patch, which is exactly what k-center picks first.

How strong it is depends on how much of the defect space the injected
patches cover. Measured on ELPV (configs/patchcore_elpv.py's features, one
Byzantine client of 5, undefended `federated_coreset`, one run each, change
of image AUROC from clean), split by cell type: 400 pool cells, half the
bank poisoned -0.022; all 816 pool cells outside the test set, half -0.034,
three quarters -0.075, all of it -0.049 (a client that keeps no honest
patches is itself a narrower cover); IID split, all 816 cells: three
quarters -0.060, all -0.078. Drawing the injected patches at random from
the candidates instead of by k-center was weaker (-0.016 and -0.020): the
server's greedy selection keeps only the spread-out ones. The experiment
default is three quarters of the bank and the whole pool.

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR
  2022; the attack is ours (the seed only has scaling, noise and sign flip).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax.patchcore.coreset import greedy_coreset
from robustfl_jax.patchcore.nearest_neighbor import nearest_neighbor_scores


def select_defect_patches(key: jax.Array, defect_features: jax.Array, reference_bank: jax.Array,
                          num_patches: int, candidate_fraction: float = 0.01,
                          block_size: int = 1024) -> jax.Array:
  """The `num_patches` defect patches an attacker injects.

  Each patch of a defective image is scored by its nearest-neighbour distance
  to the attacker's own honest bank, then standardised *within its image*
  (minus the image's median score, over 1.4826 times its MAD): a defect is
  what stands out of its own cell, so cells of another type than the
  attacker's (all far from its bank) do not crowd out the defects.

  Args:
    key: PRNG key (the greedy selection's start).
    defect_features: f32[K, h, w, d] patch features of defective images.
    reference_bank: f32[m, d] the attacker's own honest coreset.
    num_patches: patches returned, >= 1.
    candidate_fraction: share of all defect patches, the most outstanding,
      kept as candidates (at least `num_patches`), in (0, 1].
    block_size: scoring block (memory only).

  Returns:
    f32[num_patches, d]: a greedy k-center coreset (exact rule) of the candidates.

  Raises:
    ValueError: a bad shape, `num_patches` outside [1, K * h * w], or a bad fraction.
  """
  feats = jnp.asarray(defect_features, jnp.float32)
  if feats.ndim != 4:
    raise ValueError(f"defect_features must be [K, h, w, d]; got shape {feats.shape}")
  num_images = feats.shape[0]
  feats = feats.reshape(-1, feats.shape[-1])
  if not 1 <= num_patches <= feats.shape[0]:
    raise ValueError(f"num_patches must be in [1, {feats.shape[0]}] (defect patches); "
                     f"got {num_patches}")
  if not 0.0 < candidate_fraction <= 1.0:
    raise ValueError(f"candidate_fraction must be in (0, 1]; got {candidate_fraction}")
  scores = np.asarray(nearest_neighbor_scores(feats, jnp.asarray(reference_bank, jnp.float32),
                                              1, block_size), np.float64).reshape(num_images, -1)
  center = np.median(scores, axis=1, keepdims=True)
  spread = 1.4826 * np.median(np.abs(scores - center), axis=1, keepdims=True)
  standing_out = ((scores - center) / np.maximum(spread, 1e-12)).ravel()
  num_candidates = max(num_patches, int(round(candidate_fraction * feats.shape[0])))
  candidates = feats[np.argsort(-standing_out, kind="stable")[:num_candidates]]
  if num_candidates == num_patches:
    return candidates
  return candidates[greedy_coreset(key, candidates, num_patches, None)]


def defect_injection(key: jax.Array, coresets: jax.Array, byzantine_mask: jax.Array,
                     defect_features: jax.Array, fraction: float = 0.5,
                     candidate_fraction: float = 0.01) -> jax.Array:
  """Each Byzantine client replaces the last `fraction` of its coreset by defect patches.

  Args:
    key: PRNG key, folded with the client index.
    coresets: f32[n, m, d] submitted coresets, each in its greedy order.
    byzantine_mask: bool[n].
    defect_features: f32[K, h, w, d] patch features of the attacker's
      defective images (shared by all Byzantine clients).
    fraction: share of its m rows a Byzantine client poisons, in (0, 1].
    candidate_fraction: see `select_defect_patches`.

  Returns:
    f32[n, m, d]: honest coresets unchanged; a Byzantine client keeps its
    first m - round(fraction * m) rows and ends with defect patches.

  Raises:
    ValueError: `fraction` outside (0, 1] or a mask of the wrong length.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
  coresets = jnp.asarray(coresets, jnp.float32)
  mask = np.asarray(byzantine_mask, bool)
  n, m, _ = coresets.shape
  if mask.shape != (n,):
    raise ValueError(f"byzantine_mask must have shape ({n},); got {mask.shape}")
  num = max(1, int(round(fraction * m)))
  out = coresets
  for i in np.flatnonzero(mask):
    poison = select_defect_patches(jax.random.fold_in(key, int(i)), defect_features,
                                   coresets[i], num, candidate_fraction)
    out = out.at[i, m - num:].set(poison)
  return out
