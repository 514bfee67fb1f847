r"""Robustness vs learning (arXiv:2402.13700): defences x adversaries x data.

Example::

  python scripts/conflict.py --config=configs/conflict.py
  python scripts/conflict.py --config=configs/conflict.py \
      --config.grid.defences=mean,gan_filter --config.grid.partitions=iid

For every defence one program is compiled and reused for all adversaries:
the whole run (``num_rounds`` rounds as one ``lax.scan``, then the test
evaluation) is vmapped over the data partitions, which are padded to one
shape, and the adversary is a ``lax.switch`` on a traced index. Before the grid the server trains the GAN filter's conditional WGAN-GP
and, for the mode-collapse comparison, a plain GAN on the same shared sample.

Writes to ``--workdir`` (default ``runs/conflict``):

* ``results.json``: one row per cell with ``defense``, ``adversary``,
  ``data``, ``accuracy`` (final test accuracy), ``target_accuracy`` (test
  accuracy on the class the validation-evading adversary poisons),
  ``honest_excluded`` (mean over rounds of the fraction of honest clients the
  rule rejected or did not select), ``byzantine_excluded``, per-class
  accuracy, per-round exclusion rates and, for the behaviour-based defences,
  the clients filtered in each round;
* ``conflict.md``: the table of the same; ``conflict.png``: heatmaps;
* ``gan.json`` and ``gan_samples.png``: sample diversity (mean within-class
  pairwise distance, relative to real test images) and label fidelity of the
  WGAN-GP and the plain GAN, and a grid of their samples per class.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from robustfl_jax import attacks
from robustfl_jax import data as data_lib
from robustfl_jax import defenses
from robustfl_jax import models as models_lib
from robustfl_jax.fl import experiment
from robustfl_jax.fl.local import make_optimizer
from robustfl_jax.fl.metrics import make_eval_fn
from robustfl_jax.fl.round import make_round_fn
from robustfl_jax.fl.server import FederatedData, init_server_state
# pylint: enable=wrong-import-position

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "conflict.py"),
    "Conflict experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", os.path.join("runs", "conflict"),
                               "Output folder.")

DISTANCE_DEFENCES = ("mean", "median", "trimmed_mean", "krum",
                     "geometric_median", "centered_clipping")
BEHAVIOUR_DEFENCES = ("fltrust", "gan_filter")
ADVERSARIES = ("none", "alie", "min_max", "distance_bounded",
               "validation_evading")
PARTITION_LABELS = {"iid": "iid", "dirichlet": "dirichlet_{alpha}",
                    "one_label": "one_label", "shards": "shards"}


def _names(values):
  """A tuple of names from a tuple or a comma-separated command-line string."""
  if isinstance(values, str):
    values = (values,)
  return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _check_grid(config):
  """Returns ``(defences, adversaries, partitions)``; raises on unknown names."""
  out = []
  for field, values, known in (
      ("grid.defences", config.grid.defences,
       DISTANCE_DEFENCES + BEHAVIOUR_DEFENCES),
      ("grid.adversaries", config.grid.adversaries, ADVERSARIES),
      ("grid.partitions", config.grid.partitions, data_lib.PARTITIONS)):
    values = _names(values)
    for v in values:
      if v not in known:
        raise ValueError(f"{field}: {v!r} is not known; choose from {known}.")
    out.append(values)
  return out


def _stratified(x, y, per_class, num_classes, seed):
  rng = np.random.default_rng(seed)
  idx = np.concatenate([
      rng.choice(np.flatnonzero(y == c), min(per_class, int(np.sum(y == c))),
                 replace=False) for c in range(num_classes)])
  return x[np.sort(idx)], y[np.sort(idx)]


def _client_data(config, partitions, dataset, byzantine):
  """Every partition padded to one ``M`` and stacked on a leading axis."""
  parts = [data_lib.partition(p, dataset.y_train, config.num_clients,
                              seed=config.seed, alpha=config.data.alpha,
                              classes_per_client=config.data.classes_per_client)
           for p in partitions]
  m = max(max(len(i) for i in p) for p in parts)
  datas = [data_lib.to_client_data(dataset.x_train, dataset.y_train, p,
                                   max_examples=m) for p in parts]
  fed = FederatedData(np.stack([d.x for d in datas]),
                      np.stack([d.y for d in datas]),
                      np.stack([d.count for d in datas]),
                      np.stack([byzantine] * len(datas)))
  classes = [[sorted(set(np.asarray(dataset.y_train)[i].tolist())) for i in p]
             for p in parts]
  return jax.tree.map(jnp.asarray, fed), m, classes


def _gan_report(config, dataset, workdir):
  """Trains the WGAN-GP and a plain GAN; writes gan.json and gan_samples.png."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  k = dataset.num_classes
  xs, ys = defenses.shared_sample(dataset.x_train, dataset.y_train,
                                  float(config.aggregator.shared_fraction), k,
                                  config.seed)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x6A7)
  reference = LogisticRegression(max_iter=2000).fit(
      dataset.x_train.reshape(len(dataset.y_train), -1), dataset.y_train)
  labels = defenses.balanced_labels(k, int(config.grid.diversity_per_class))
  real_div = defenses.sample_diversity(dataset.x_test, dataset.y_test, k)
  report = {"shared_samples": int(len(ys)),
            "gan_steps": int(config.aggregator.gan_steps),
            "wgan_gp_learning_rate": float(config.aggregator.gan_learning_rate),
            "real_test_diversity": real_div}
  gans, samples = {}, {}
  for kind in ("wgan_gp", "gan"):
    t0 = time.time()
    # The plain GAN keeps its own (DCGAN) learning rate 2e-4.
    lr = float(config.aggregator.gan_learning_rate) if kind == "wgan_gp" else None
    gan = defenses.train_gan(key, xs, ys, k, kind=kind,
                             num_steps=int(config.aggregator.gan_steps),
                             learning_rate=lr)
    s = np.asarray(defenses.sample(gan, jax.random.fold_in(key, 1), labels))
    div = defenses.sample_diversity(s, labels, k)
    fidelity = float(np.mean(reference.predict(s.reshape(len(s), -1))
                             == np.asarray(labels)))
    report[kind] = {"diversity": div, "diversity_vs_real": div / real_div,
                    "label_fidelity": fidelity,
                    "train_seconds": round(time.time() - t0, 1),
                    "final_losses": np.asarray(gan.losses[-1]).tolist()}
    print(f"{kind}: diversity {div:.3f} ({div / real_div:.2f} x real), "
          f"label fidelity {fidelity:.3f}, {time.time() - t0:.0f}s", flush=True)
    gans[kind], samples[kind] = gan, s
  with open(os.path.join(workdir, "gan.json"), "w") as f:
    json.dump(report, f, indent=2)
  _sample_grid(samples, np.asarray(labels), k, dataset,
               os.path.join(workdir, "gan_samples.png"))
  return gans["wgan_gp"], report


def _sample_grid(samples, labels, k, dataset, path, per_row=8):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  side = int(round(np.sqrt(np.prod(dataset.input_shape))))
  panels = [("real (test)", dataset.x_test, dataset.y_test)] + [
      (name, s, labels) for name, s in samples.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 5))
  for ax, (name, x, y) in zip(axes, panels):
    grid = np.zeros((k * side, per_row * side))
    for c in range(k):
      xc = np.asarray(x)[np.asarray(y) == c][:per_row]
      for j, img in enumerate(xc):
        grid[c * side:(c + 1) * side, j * side:(j + 1) * side] = (
            img.reshape(side, side))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(name)
    ax.set_yticks([(c + 0.5) * side for c in range(k)], range(k))
    ax.set_xticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _cell_config(config, defence):
  cfg = config.copy_and_resolve_references()
  cfg.aggregator.name = defence
  return cfg


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  defences, adversaries, partitions = _check_grid(config)
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()
  dataset = data_lib.load(config.data.name, config.data.dir)
  k = dataset.num_classes
  n, f = int(config.num_clients), int(config.attack.num_byzantine)
  byzantine = np.zeros(n, bool)
  byzantine[:f] = True
  fed, max_examples, client_classes = _client_data(config, partitions, dataset,
                                                     byzantine)
  data_labels = [PARTITION_LABELS[p].format(alpha=config.data.alpha)
                 for p in partitions]
  model = models_lib.get(config.model.name, k, dataset.input_shape,
                         hidden=tuple(config.model.hidden))
  init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = models_lib.init_params(model, init_key, dataset.input_shape)
  client_opt = make_optimizer(config.client.optimizer,
                              config.client.learning_rate)
  server_opt = make_optimizer(config.server.optimizer,
                              config.server.learning_rate,
                              config.server.momentum)
  eval_fn = make_eval_fn(model.apply, dataset.x_test, dataset.y_test, k)
  source, target = int(config.attack.source), int(config.attack.target)
  local_hp = dict(optimizer=client_opt,
                  batch_size=int(config.client.batch_size),
                  local_epochs=int(config.client.local_epochs),
                  mode=config.client.mode)

  wgan, gan_report = None, None
  if "gan_filter" in defences:
    wgan, gan_report = _gan_report(config, dataset, workdir)
  x_root, y_root = defenses.root_set(dataset.x_train, dataset.y_train,
                                     int(config.aggregator.root_size),
                                     config.seed)
  x_att, y_att = _stratified(dataset.x_train, dataset.y_train,
                             int(config.grid.attacker_per_class), k,
                             config.seed + 1)
  filter_hp = dict(per_class=int(config.aggregator.validation_per_class),
                   rule=config.aggregator.threshold_rule,
                   threshold=float(config.aggregator.threshold),
                   margin=float(config.aggregator.margin))

  def build_defence(defence):
    """``(aggregator, probe or None)``."""
    if defence == "fltrust":
      return (defenses.fltrust(model.apply, params, x_root, y_root, **local_hp),
              defenses.fltrust_probe(model.apply, params, x_root, y_root,
                                     **local_hp))
    if defence == "gan_filter":
      return (defenses.gan_filter(model.apply, params, wgan, **filter_hp),
              defenses.gan_filter_probe(model.apply, params, wgan, **filter_hp))
    return experiment.build_aggregator(_cell_config(config, defence)), None

  def build_adversary(adversary, defence, probe):
    if adversary == "none":
      return None
    if adversary == "alie":
      return attacks.get("alie", num_byzantine=f)
    if adversary == "min_max":
      return attacks.get("min_max")
    if adversary == "distance_bounded":
      # Behaviour-based defences average what they keep: the adversary
      # differentiates through the mean.
      rule = defence if defence in DISTANCE_DEFENCES else "mean"
      hp = experiment.aggregator_hparams(_cell_config(config, rule))
      return attacks.distance_bounded(
          rule, rule_hparams=hp, budget=float(config.grid.budget),
          num_steps=int(config.grid.attack_steps))
    return attacks.validation_evading(
        apply_fn=model.apply, params_template=params, x_attack=x_att,
        y_attack=y_att, target_class=source, flip_to=target, probe=probe,
        poison_steps=int(config.grid.poison_steps),
        poison_lr=float(config.grid.poison_lr),
        num_candidates=int(config.grid.num_candidates),
        max_scale=float(config.grid.max_scale))

  def simulate(round_fn, aggregator, data):
    state = init_server_state(params, server_opt, aggregator, n, state_key)

    def body(state, _):
      state, m = round_fn(state, data)
      return state, (m["fpr"], m["tpr"], m["flagged"], m["skipped"])

    state, (fpr, tpr, flagged, skipped) = jax.lax.scan(
        body, state, None, length=int(config.num_rounds))
    metrics = eval_fn(state.params)
    return (metrics["accuracy"], metrics["per_class_accuracy"], fpr, tpr,
            flagged, skipped)

  def switch_attack(adversary_attacks, index):
    """All adversaries in one attack, picked by a traced (unbatched) index.

    The index is the same for every data partition of the vmapped run, so
    ``lax.switch`` stays a real conditional (only the chosen adversary runs)
    and one compiled program serves every adversary of a defence.
    """
    def branch(fn):
      if fn is None:
        return lambda key, updates, mask, w: updates
      if getattr(fn, "needs_global_params", False):
        return lambda key, updates, mask, w: fn(key, updates, mask, global_params=w)
      return lambda key, updates, mask, w: fn(key, updates, mask)

    branches = [branch(fn) for fn in adversary_attacks]

    def attack(key, updates, byzantine_mask, *, global_params):
      return jax.lax.switch(index, branches, key, updates, byzantine_mask,
                            global_params)

    attack.needs_global_params = True
    return attack

  total = len(defences) * len(adversaries) * len(data_labels)
  results, done = [], 0
  t_grid = time.time()
  for defence in defences:
    aggregator, probe = build_defence(defence)
    adversary_attacks = [build_adversary(a, defence, probe) for a in adversaries]

    def run_one(data, index, aggregator=aggregator,
                adversary_attacks=adversary_attacks):
      round_fn = make_round_fn(
          model.apply, params, client_optimizer=client_opt,
          server_optimizer=server_opt, aggregator=aggregator, num_clients=n,
          max_examples=max_examples, batch_size=int(config.client.batch_size),
          local_epochs=int(config.client.local_epochs), mode=config.client.mode,
          attack=switch_attack(adversary_attacks, index))
      return simulate(round_fn, aggregator, data)

    # One compile per defence, reused for all its adversaries.
    run = jax.jit(jax.vmap(run_one, in_axes=(0, None)))
    for adversary_index, adversary in enumerate(adversaries):
      t0 = time.time()
      acc, per_class, fpr, tpr, flagged, skipped = jax.device_get(
          run(fed, jnp.int32(adversary_index)))
      seconds = time.time() - t0
      _collect(results, defence, adversary, data_labels, acc, per_class, fpr,
               tpr, flagged, skipped, seconds, source, f)
      done += len(data_labels)
      elapsed = time.time() - t_grid
      eta = elapsed / done * (total - done)
      accs = " ".join(f"{label}={acc[i]:.3f}/{per_class[i][source]:.2f}/"
                      f"{np.mean(fpr[i]):.2f}" for i, label in enumerate(data_labels))
      print(f"[{done}/{total}] {defence:>17} x {adversary:<18} acc/target/"
            f"honest_excl {accs} | {seconds:.1f}s | eta {eta:.0f}s", flush=True)
      with open(os.path.join(workdir, "results.json"), "w") as out:
        json.dump(results, out, indent=1)

  meta = {"num_clients": n, "num_byzantine": f,
          "num_rounds": int(config.num_rounds), "source_class": source,
          "flip_to": target, "partitions": data_labels,
          "client_classes": {label: cls for label, cls in
                             zip(data_labels, client_classes)},
          "gan": gan_report, "wall_seconds": round(time.time() - t_start, 1)}
  with open(os.path.join(workdir, "results.json"), "w") as out:
    json.dump(results, out, indent=1)
  with open(os.path.join(workdir, "meta.json"), "w") as out:
    json.dump(meta, out, indent=1)
  table = markdown_table(results, list(defences), list(adversaries),
                         data_labels)
  with open(os.path.join(workdir, "conflict.md"), "w") as out:
    out.write(
        f"digits, {n} clients ({f} Byzantine), {config.num_rounds} rounds. "
        f"Cell: final test accuracy / accuracy on class {source} (the "
        "validation-evading target) / mean fraction of honest clients "
        "excluded per round.\n\n" + table + "\n")
  heatmaps(results, list(defences), list(adversaries), data_labels, os.path.join(workdir, "conflict.png"))
  print(table)
  print(f"grid of {total} runs took {time.time() - t_start:.0f}s in total; "
        f"outputs in {workdir}", flush=True)


def _collect(results, defence, adversary, data_labels, acc, per_class, fpr,
             tpr, flagged, skipped, seconds, source, f):
  """Appends one results row per data partition."""
  for i, label in enumerate(data_labels):
    row = {
        "defense": defence, "adversary": adversary, "data": label,
        "accuracy": float(acc[i]),
        "target_accuracy": float(per_class[i][source]),
        "honest_excluded": float(np.mean(fpr[i])),
        "byzantine_excluded": (float(np.mean(tpr[i])) if f > 0 else None),
        "honest_excluded_last_round": float(fpr[i][-1]),
        "per_class_accuracy": [float(v) for v in per_class[i]],
        "honest_excluded_per_round": [float(v) for v in fpr[i]],
        "byzantine_excluded_per_round": ([float(v) for v in tpr[i]]
                                         if f > 0 else None),
        "skipped_rounds": int(np.sum(skipped[i])),
        "seconds": round(seconds / len(data_labels), 2),
    }
    if defence in BEHAVIOUR_DEFENCES:
      row["filtered_per_round"] = [np.flatnonzero(r).tolist() for r in flagged[i]]
    results.append(row)


def markdown_table(results, defences, adversaries, data_labels):
  by_key = {(r["defense"], r["adversary"], r["data"]): r for r in results}
  header = ["defense", "adversary"] + data_labels
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for d in defences:
    for a in adversaries:
      cells = []
      for label in data_labels:
        r = by_key.get((d, a, label))
        cells.append("n/a" if r is None else
                     f"{r['accuracy']:.3f} / {r['target_accuracy']:.2f} / "
                     f"{r['honest_excluded']:.2f}")
      lines.append(f"| {d} | {a} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def heatmaps(results, defences, adversaries, data_labels, path):
  """Accuracy heatmaps (defences x adversaries), one per data partition."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  by_key = {(r["defense"], r["adversary"], r["data"]): r for r in results}
  fig, axes = plt.subplots(1, len(data_labels),
                           figsize=(1.6 + 1.25 * len(adversaries) * len(data_labels),
                                    1.4 + 0.55 * len(defences)), squeeze=False)
  im = None
  for ax, label in zip(axes[0], data_labels):
    grid = np.full((len(defences), len(adversaries)), np.nan)
    excl = np.full_like(grid, np.nan)
    for i, d in enumerate(defences):
      for j, a in enumerate(adversaries):
        r = by_key.get((d, a, label))
        if r is not None:
          grid[i, j], excl[i, j] = r["accuracy"], r["honest_excluded"]
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(adversaries)), adversaries, rotation=40,
                  ha="right", fontsize=8)
    ax.set_yticks(range(len(defences)), defences, fontsize=8)
    for i in range(grid.shape[0]):
      for j in range(grid.shape[1]):
        if not np.isnan(grid[i, j]):
          ax.text(j, i, f"{grid[i, j]:.2f}\nx{excl[i, j]:.2f}", ha="center",
                  va="center", fontsize=6.5,
                  color="white" if grid[i, j] < 0.6 else "black")
    ax.set_title(label)
  fig.colorbar(im, ax=axes[0].tolist(), label="final test accuracy")
  fig.suptitle("digits: accuracy (x = mean fraction of honest clients excluded)")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
