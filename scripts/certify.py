r"""Certified L2 robustness of federated models by randomized smoothing.

For each sigma of ``config.certify.sigmas``: trains the federated model with
Gaussian-noise local training (``client.adversarial_training.method =
"gaussian"``) in ``<workdir>/sigma_<sigma>/`` (or loads it from that folder's
checkpoints when it is already trained), runs Cohen et al.'s CERTIFY on test
points and reports certified accuracy at the radii ``config.certify.radii``.

Example::

  python scripts/certify.py --config=configs/digits_certify.py
  python scripts/certify.py --config=configs/digits_certify.py \
      --config.certify.num_points=50 --workdir=runs/certify_quick

Outputs in ``--workdir`` (default ``runs/<config file name>``):
``certify.json`` (settings, per-sigma certified accuracy, abstention rate,
timings, and every point's prediction and radius), ``certify.md`` (the
table) and ``certify.png`` (certified accuracy against radius).
"""

import copy
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from robustfl_jax import adversarial  # pylint: disable=wrong-import-position
from robustfl_jax.checkpoint import Checkpointer  # pylint: disable=wrong-import-position
from robustfl_jax.fl import experiment as experiment_lib  # pylint: disable=wrong-import-position
from robustfl_jax.fl import runner  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Certification config (configs/digits_certify.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file name>.")


def _check(config) -> None:
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


def _trained_params(config, workdir, log):
  """Trains (or resumes / loads) the federated model; returns its params."""
  exp = experiment_lib.build_experiment(config)
  summary = runner.train(config, workdir, log=log, experiment=exp)
  # A fresh template: training donated the first experiment's initial buffers.
  template = experiment_lib.build_experiment(config).init_state()
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ckpt.restore_latest(template)
  ckpt.close()
  if state is None:
    raise RuntimeError(f"no readable checkpoint in {workdir} after training.")
  return exp, state.params, summary, int(step)


def _plot(results, radii, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  fine = np.linspace(0, max(radii), 201)
  for r in results:
    radius = np.asarray(r["radius"])
    correct = np.asarray(r["prediction"]) == np.asarray(r["label"])
    curve = [(correct & (radius >= t)).mean() for t in fine]
    ax.plot(fine, curve, label=f"sigma = {r['sigma']}")
  ax.set_xlabel("L2 radius")
  ax.set_ylabel("certified accuracy")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title("Randomized smoothing, federated digits")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _markdown(results, radii, settings):
  head = "| sigma | " + " | ".join(f"r={r:g}" for r in radii) + \
      " | abstain | base test acc | s / point |"
  lines = [f"Certified accuracy ({settings}):", "", head,
           "|" + " --- |" * (len(radii) + 4)]
  for r in results:
    cells = " | ".join(f"{a:.3f}" for a in r["certified_accuracy"])
    lines.append(f"| {r['sigma']} | {cells} | {r['abstain_rate']:.3f} | "
                 f"{r['base_test_accuracy']:.3f} | "
                 f"{r['seconds_per_point']:.3f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<name>.py is required.")
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(
        flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", name)
  log = lambda line: print(line, flush=True)
  try:
    _check(config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  os.makedirs(workdir, exist_ok=True)
  c = config.certify
  radii = [float(r) for r in c.radii]
  results = []
  t_all = time.time()
  for sigma in c.sigmas:
    sub = copy.deepcopy(config)
    sub.client.adversarial_training.method = "gaussian"
    sub.client.adversarial_training.sigma = float(sigma)
    sub_dir = os.path.join(workdir, f"sigma_{sigma:g}")
    log(f"== sigma {sigma}: federated Gaussian-noise training in {sub_dir}")
    t0 = time.time()
    try:
      exp, params, summary, step = _trained_params(sub, sub_dir, log)
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      return 2
    train_s = time.time() - t0
    x_test, y_test = exp.dataset.x_test, exp.dataset.y_test
    num = len(y_test) if int(c.num_points) == 0 else min(int(c.num_points),
                                                         len(y_test))
    idx = np.unique(np.linspace(0, len(y_test) - 1, num).round().astype(int))
    logits_fn = adversarial.eval_logits_fn(exp.model.apply)
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                             int(round(sigma * 1000)))
    log(f"certifying {len(idx)} test points (n0={c.n0}, n={c.n:,}, "
        f"alpha={c.alpha}) with the round-{step} model")
    t0 = time.time()
    chunk = 50
    parts = []
    for start in range(0, len(idx), chunk):
      sel = idx[start:start + chunk]
      parts.append(adversarial.certify(
          logits_fn, params, np.asarray(x_test[sel]),
          jax.random.fold_in(key, start), sigma=float(sigma), n0=int(c.n0),
          n=int(c.n), alpha=float(c.alpha), batch_size=int(c.batch_size)))
      done = min(start + chunk, len(idx))
      elapsed = time.time() - t0
      log(f"  {done}/{len(idx)} points | {elapsed:.1f} s | eta "
          f"{elapsed / done * (len(idx) - done):.0f} s")
    cert = adversarial.Certificate(*(np.concatenate(v) for v in zip(*parts)))
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
        "base_test_accuracy": summary["final_test_accuracy"],
        "num_points": int(len(idx)),
        "train_seconds": round(train_s, 2),
        "certify_seconds": round(cert_s, 2),
        "seconds_per_point": round(cert_s / len(idx), 4),
        "prediction": cert.prediction.tolist(),
        "radius": [round(float(r), 5) for r in cert.radius],
        "label": labels.tolist(),
        "indices": idx.tolist(),
    }
    results.append(row)
    log(f"sigma {sigma}: certified accuracy "
        + ", ".join(f"r={r:g}: {a:.3f}" for r, a in zip(radii, acc))
        + f" | abstain {row['abstain_rate']:.3f} | {cert_s:.1f} s")
  settings = (f"{results[0]['num_points']} digits test points, n0={c.n0}, "
              f"n={c.n:,}, alpha={c.alpha}; {config.num_clients} clients, "
              f"{config.attack.num_byzantine} Byzantine ({config.attack.name}), "
              f"{config.aggregator.name}, {config.num_rounds} rounds")
  table = _markdown(results, radii, settings)
  with open(os.path.join(workdir, "certify.json"), "w") as f:
    json.dump({"settings": settings, "device": jax.devices()[0].device_kind,
               "total_seconds": round(time.time() - t_all, 1),
               "results": results}, f, indent=1)
  with open(os.path.join(workdir, "certify.md"), "w") as f:
    f.write(table + "\n")
  _plot(results, radii, os.path.join(workdir, "certify.png"))
  print(table, flush=True)
  log(f"total {time.time() - t_all:.0f} s; outputs in {workdir}")
  return 0


if __name__ == "__main__":
  app.run(main)
