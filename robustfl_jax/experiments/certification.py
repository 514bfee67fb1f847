"""Certified L2 robustness of federated models by randomized smoothing.

For each sigma of ``config.certify.sigmas``: trains the federated model with
Gaussian-noise local training (``client.adversarial_training.method =
"gaussian"``) in ``<workdir>/sigma_<sigma>/`` (rerunning resumes from, or
simply loads, that folder's checkpoints), runs Cohen et al.'s CERTIFY on
evenly spaced test points and reports certified accuracy at the radii
``config.certify.radii``.

Outputs in the work directory:

* ``certify.json``: ``{settings, device, total_seconds, results}``; each
  result has ``sigma``, ``radii``, ``certified_accuracy``, ``abstain_rate``,
  ``mean_radius_of_correct``, ``base_test_accuracy``, ``num_points``,
  ``train_seconds``, ``certify_seconds``, ``seconds_per_point`` and every
  point's ``prediction``, ``radius``, ``label`` and test-set ``indices``;
* ``certify.md``: the table; ``certify.png``: certified accuracy against
  radius.

The certified model is the final state that training returns. It is the
state of the last checkpoint, bit for bit (the checkpoint is written from
it, and a finished run's rerun restores it), so nothing is restored a second
time.

References:
  Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via
  Randomized Smoothing", ICML 2019.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from robustfl_jax import adversarial
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.experiments.runner import RunResult, train

# Test points certified per call (and per progress line).
CHUNK = 50


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the ``certify`` section; the message names the field.

  Raises:
    ValueError: no ``certify`` section, or a field out of range.
  """
  if "certify" not in config:
    raise ValueError("the config has no 'certify' section; use "
                     "configs/digits_certify.py.")
  c = config.certify
  if not c.sigmas or any(not s > 0 for s in c.sigmas):
    raise ValueError(f"certify.sigmas must be positive; got {c.sigmas}.")
  if int(c.n0) < 1 or int(c.n) < 1:
    raise ValueError(f"certify.n0 and certify.n must be >= 1; got {c.n0}, "
                     f"{c.n}.")
  if not 0 < c.alpha < 1:
    raise ValueError(f"certify.alpha must be in (0, 1); got {c.alpha}.")
  if int(c.num_points) < 0:
    raise ValueError(f"certify.num_points must be >= 0; got {c.num_points}.")
  if int(c.batch_size) < 1:
    raise ValueError(f"certify.batch_size must be >= 1; got {c.batch_size}.")


def sigma_config(config: ml_collections.ConfigDict, sigma: float
                 ) -> ml_collections.ConfigDict:
  """``config`` with Gaussian-noise local training at ``sigma``."""
  sub = copy.deepcopy(config)
  sub.client.adversarial_training.method = "gaussian"
  sub.client.adversarial_training.sigma = float(sigma)
  return sub


def point_indices(num_test: int, num_points: int) -> np.ndarray:
  """``num_points`` evenly spaced test indices (0: all of them)."""
  num = num_test if num_points == 0 else min(num_points, num_test)
  return np.unique(np.linspace(0, num_test - 1, num).round().astype(int))


def certify_points(logits_fn: Callable, params: Any, x: np.ndarray,
                   key: jax.Array, *, sigma: float, n0: int, n: int,
                   alpha: float, batch_size: int,
                   log: Callable[[str], None] = print
                   ) -> adversarial.Certificate:
  """CERTIFY on ``x`` in chunks of :data:`CHUNK` points, with progress.

  Chunk ``i`` (starting at point ``start``) uses ``fold_in(key, start)``.
  """
  parts, t0 = [], time.time()
  for start in range(0, len(x), CHUNK):
    parts.append(adversarial.certify(
        logits_fn, params, np.asarray(x[start:start + CHUNK]),
        jax.random.fold_in(key, start), sigma=sigma, n0=n0, n=n, alpha=alpha,
        batch_size=batch_size))
    done = min(start + CHUNK, len(x))
    elapsed = time.time() - t0
    log(f"  {done}/{len(x)} points | {elapsed:.1f} s | eta "
        f"{elapsed / done * (len(x) - done):.0f} s")
  return adversarial.Certificate(*(np.concatenate(v) for v in zip(*parts)))


def certify_sigma(config: ml_collections.ConfigDict, sigma: float,
                  workdir: str, *, log: Callable[[str], None] = print
                  ) -> dict:
  """Trains (or loads) the model for ``sigma`` in ``workdir`` and certifies it.

  Returns:
    The result row of ``certify.json`` for ``sigma``.
  """
  c = config.certify
  radii = [float(r) for r in c.radii]
  log(f"== sigma {sigma}: federated Gaussian-noise training in {workdir}")
  t0 = time.time()
  # The trained model does not depend on the certify.* settings: changing
  # them certifies the same models again.
  result: RunResult = train(sigma_config(config, sigma), workdir, log=log,
                            ignore=workdir_lib.PROGRESS_FIELDS + ("certify",))
  train_s = time.time() - t0
  exp = result.experiment
  x_test, y_test = exp.dataset.x_test, exp.dataset.y_test
  idx = point_indices(len(y_test), int(c.num_points))
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                           int(round(sigma * 1000)))
  log(f"certifying {len(idx)} test points (n0={c.n0}, n={c.n:,}, "
      f"alpha={c.alpha}) with the round-{result.summary['rounds_completed']} "
      "model")
  t0 = time.time()
  cert = certify_points(
      adversarial.eval_logits_fn(exp.model.apply), result.state.params,
      np.asarray(x_test)[idx], key, sigma=float(sigma), n0=int(c.n0),
      n=int(c.n), alpha=float(c.alpha), batch_size=int(c.batch_size), log=log)
  cert_s = time.time() - t0
  labels = np.asarray(y_test)[idx]
  acc = np.asarray(adversarial.certified_accuracy(cert, labels, radii))
  row = {
      "sigma": float(sigma),
      "radii": radii,
      "certified_accuracy": [round(float(a), 4) for a in acc],
      "abstain_rate": float(np.mean(cert.prediction == adversarial.ABSTAIN)),
      "mean_radius_of_correct": float(np.mean(np.where(
          cert.prediction == labels, cert.radius, 0.0))),
      "base_test_accuracy": result.summary["final_test_accuracy"],
      "num_points": int(len(idx)),
      "train_seconds": round(train_s, 2),
      "certify_seconds": round(cert_s, 2),
      "seconds_per_point": round(cert_s / len(idx), 4),
      "prediction": cert.prediction.tolist(),
      "radius": [round(float(r), 5) for r in cert.radius],
      "label": labels.tolist(),
      "indices": idx.tolist(),
  }
  log(f"sigma {sigma}: certified accuracy "
      + ", ".join(f"r={r:g}: {a:.3f}" for r, a in zip(radii, acc))
      + f" | abstain {row['abstain_rate']:.3f} | {cert_s:.1f} s")
  return row


def run_certification(config: ml_collections.ConfigDict, workdir: str, *,
                      log: Callable[[str], None] = print,
                      fresh: bool = False) -> dict:
  """Trains and certifies one model per sigma; writes the outputs.

  Args:
    config: a certification config (``configs/digits_certify.py``).
    workdir: output folder (created); one training folder per sigma inside.
    log: progress sink.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).

  Returns:
    The content of ``certify.json``.

  Raises:
    ValueError: the config cannot work (the message names the field).
    FileNotFoundError: the data set's files are missing.
  """
  validate(config)
  workdir_lib.prepare(workdir, config, kind="certify", fresh=fresh, log=log)
  t_all = time.time()
  results = [certify_sigma(config, sigma,
                           os.path.join(workdir, f"sigma_{sigma:g}"), log=log)
             for sigma in config.certify.sigmas]
  c = config.certify
  settings = (f"{results[0]['num_points']} digits test points, n0={c.n0}, "
              f"n={c.n:,}, alpha={c.alpha}; {config.num_clients} clients, "
              f"{config.attack.num_byzantine} Byzantine ({config.attack.name}), "
              f"{config.aggregator.name}, {config.num_rounds} rounds")
  report = {"settings": settings, "device": jax.devices()[0].device_kind,
            "total_seconds": round(time.time() - t_all, 1),
            "results": results}
  reporting.write_json(os.path.join(workdir, "certify.json"), report)
  table = markdown(report)
  reporting.write_text(os.path.join(workdir, "certify.md"), table + "\n")
  plot(results, os.path.join(workdir, "certify.png"))
  log(table)
  log(f"total {time.time() - t_all:.0f} s; outputs in {workdir}")
  return report


def markdown(report: dict) -> str:
  """``certify.md``: certified accuracy per sigma (rows) and radius."""
  results = report["results"]
  radii = results[0]["radii"]
  header = (["sigma"] + [f"r={r:g}" for r in radii]
            + ["abstain", "base test acc", "s / point"])
  rows = [[r["sigma"], *(f"{a:.3f}" for a in r["certified_accuracy"]),
           f"{r['abstain_rate']:.3f}", reporting.fmt(r["base_test_accuracy"]),
           f"{r['seconds_per_point']:.3f}"] for r in results]
  return (f"Certified accuracy ({report['settings']}):\n\n"
          + reporting.markdown_table(header, rows))


def headline(report: dict) -> str:
  """One line for the README: certified accuracy at r=0.5 per sigma."""
  results = report["results"]
  radii = results[0]["radii"]
  radius = 0.5 if 0.5 in radii else radii[len(radii) // 2]
  j = radii.index(radius)
  return (f"certified accuracy at L2 radius {radius:g}: " + ", ".join(
      f"sigma {r['sigma']:g} {r['certified_accuracy'][j]:.3f}"
      for r in results))


def plot(results: list[dict], path: str) -> str:
  """Certified accuracy against the L2 radius, one curve per sigma."""
  radii = results[0]["radii"]
  fig = reporting.new_figure((6, 4))
  ax = fig.subplots()
  fine = np.linspace(0, max(radii), 201)
  for r in results:
    radius = np.asarray(r["radius"])
    correct = np.asarray(r["prediction"]) == np.asarray(r["label"])
    ax.plot(fine, [(correct & (radius >= t)).mean() for t in fine],
            label=f"sigma = {r['sigma']}")
  ax.set_xlabel("L2 radius")
  ax.set_ylabel("certified accuracy")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title("Randomized smoothing, federated digits")
  fig.tight_layout()
  return reporting.save_figure(fig, path, dpi=100)


__all__ = ["CHUNK", "certify_points", "certify_sigma", "headline", "markdown",
           "plot", "run_certification", "sigma_config", "point_indices",
           "validate"]
