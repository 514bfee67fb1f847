"""The conflict of robustness and learning (arXiv:2402.13700) as a grid.

Defenses x adversaries x data partitions, from one config
(``configs/conflict.py``): ``grid.defenses`` are server rules
(``aggregator.name`` values: distance rules and behaviour-based defenses),
``grid.adversaries`` update attacks (``attack.name`` values, or ``"none"``),
``grid.partitions`` data partitions, ``grid.seeds`` the seeds of every cell
(each seed draws the partition and the run's randomness; the model
initialisation and the GAN filter's generator come from ``seed``). A grid
entry may set fields of its section (:func:`parse_spec`:
``"alie:z_formula=blades"``, ``"distance_bounded:objective=targeted"``,
``"gan_filter:shared_fraction=0.005"``). Every cell is the config with
``aggregator.*`` and ``attack.*`` set, built by
:mod:`robustfl_jax.experiments.builders`: the validation-evading adversary
gets the defense's probe, the distance-bounded one differentiates through
the rule (through the mean against a behaviour-based defense).

For every defense one program is compiled and reused for all adversaries:
the whole run (``num_rounds`` rounds as one ``lax.scan``, then the test
evaluation) is vmapped over the (seed, partition) pairs, padded to one shape,
and the adversary is a ``lax.switch`` on a traced index. With the GAN filter
in the grid, the server's conditional WGAN-GP is compared beforehand with a
plain GAN trained on the same shared sample (mode collapse), and with
``grid.calibrate_fpr`` the filter's margin is fitted first
(:func:`calibrate_gan_filter`: a recording run without attack on simulated
honest IID clients drawn from the validation split of the shared sample,
``aggregator.validation_split``, which the generator never sees; never on
test data or the clients' data); the filter only records
in its ``aggregator.warmup_rounds`` first rounds.

Writes to the work directory:

* ``results.json``: one row per cell and seed with ``defense``,
  ``adversary``, ``data``, ``seed``, ``accuracy`` (final test accuracy), ``target_accuracy`` (test
  accuracy on class ``attack.source``, the one the validation-evading
  adversary poisons), ``honest_excluded`` (mean over rounds of the fraction
  of honest clients the rule excluded: gave zero weight),
  ``byzantine_excluded``, ``honest_excluded_after_warmup`` and
  ``byzantine_excluded_after_warmup`` (rounds from ``warmup_rounds`` on),
  ``honest_excluded_last_round``,
  ``per_class_accuracy``, per-round exclusion rates, ``skipped_rounds``,
  ``seconds`` and, for the behaviour-based defenses,
  ``filtered_per_round`` (the clients filtered in each round);
* ``meta.json`` (with ``gan_calibration``: the fitted margins);
  ``conflict.md`` (the table, mean ± sd over the seeds, and the GAN
  filter's per-round exclusion rates); ``conflict.png`` (heatmaps);
* with the GAN filter, ``gan.json`` and ``gan_samples.png``: sample
  diversity (mean within-class pairwise distance, also relative to real test
  images) and label fidelity of the WGAN-GP and the plain GAN, and their
  samples per class.

Example::

  from robustfl_jax import experiments
  from robustfl_jax.experiments import conflict
  config = experiments.load_config("conflict.py", {
      "grid.defenses": ("mean", "fltrust"), "num_rounds": 5})
  result = conflict.run_conflict(config, "runs/conflict_small")
  print(result.markdown)
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustfl_jax import aggregators
from robustfl_jax import attacks
from robustfl_jax import data as data_lib
from robustfl_jax import defenses as defenses_lib
from robustfl_jax.experiments import adversarial as adversarial_hooks
from robustfl_jax.experiments import builders
from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import protocols
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.fl.metrics import make_eval_fn
from robustfl_jax.fl.server import FederatedData

PARTITION_LABELS = {"iid": "iid", "dirichlet": "dirichlet_{alpha}",
                    "one_label": "one_label", "shards": "shards"}


class Grid(NamedTuple):
  """The names of a grid's axes (``grid.*`` of the config)."""

  defenses: tuple[str, ...]
  adversaries: tuple[str, ...]
  partitions: tuple[str, ...]


class ConflictResult(NamedTuple):
  """What :func:`run_conflict` measured (also written to its work directory).

  Attributes:
    rows: the rows of ``results.json``, one per (defense, adversary, data).
    meta: ``meta.json``: clients, rounds, classes, partitions, the GAN
      report, wall time.
    gan: the GAN report (``gan.json``), or None without the GAN filter.
    markdown: ``conflict.md``.
    grid: the grid's axes; ``grid.partitions`` are the partition names, the
      row labels (``data``) are ``meta["partitions"]``.
  """

  rows: list
  meta: dict
  gan: Optional[dict]
  markdown: str
  grid: Grid


def names(values: Any) -> tuple[str, ...]:
  """A tuple of names from a tuple or a comma-separated string (a flag)."""
  if isinstance(values, str):
    values = (values,)
  return tuple(v.strip() for value in values for v in str(value).split(",")
               if v.strip())


def parse_spec(spec: str) -> tuple[str, dict]:
  """``"name:field=value;field=value"`` -> ``(name, {field: value})``.

  A grid entry may set fields of its section (``aggregator.*`` for a
  defense, ``attack.*`` for an adversary), e.g.
  ``"alie:z_formula=blades"`` or ``"gan_filter:shared_fraction=0.005"``;
  values are Python literals where they parse, else strings
  (:func:`robustfl_jax.experiments.config.parse_assignments`).

  Raises:
    ValueError: an override without ``=``.
  """
  name, _, rest = spec.partition(":")
  return name.strip(), dict(config_lib.parse_assignments(
      rest, f"grid entry {spec!r}"))


def _apply(section: ml_collections.ConfigDict, spec: str, where: str) -> None:
  name, overrides = parse_spec(spec)
  section.name = name
  for field, value in overrides.items():
    if field not in section:
      raise ValueError(f"{where}={spec!r}: {field!r} is not a field of its "
                       "section.")
    section[field] = value


def cell_config(config: ml_collections.ConfigDict, defense: str,
                adversary: str = "none") -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``aggregator.*`` and ``attack.*`` set from the
  grid entries ``defense`` and ``adversary`` (see :func:`parse_spec`)."""
  cell = config.copy_and_resolve_references()
  _apply(cell.aggregator, defense, "grid.defenses")
  _apply(cell.attack, adversary, "grid.adversaries")
  return cell


def validate(config: ml_collections.ConfigDict) -> Grid:
  """The grid's axes, after checking every cell's config.

  Raises:
    ValueError: an unknown or repeated name in ``grid.*``, an empty axis, a
      protocol other than ``"sync"``, or a cell whose config cannot work
      (the message names the field).
  """
  grid = Grid(names(config.grid.defenses), names(config.grid.adversaries),
              names(config.grid.partitions))
  choices = (builders.aggregator_names(), builders.attack_names(),
             data_lib.PARTITIONS)
  for field, values, known in zip(("defenses", "adversaries", "partitions"),
                                  grid, choices):
    if not values:
      raise ValueError(f"grid.{field} is empty.")
    if len(set(values)) != len(values):
      raise ValueError(f"grid.{field}={values} repeats a name.")
    for value in values:
      base = parse_spec(value)[0] if field != "partitions" else value
      builders.check_choice(f"grid.{field}", base, known)
  seeds = tuple(int(v) for v in config.grid.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"grid.seeds={seeds} must be distinct and not empty.")
  if config.protocol != "sync":
    raise ValueError(f"protocol={config.protocol!r}: the conflict grid runs "
                     "the synchronous round only; set it to 'sync'.")
  for defense in grid.defenses:
    for adversary in grid.adversaries:
      builders.validate_config(cell_config(config, defense, adversary))
    cell = cell_config(config, defense)
    if (parse_spec(defense)[0] == "gan_filter"
        and config.grid.calibrate_fpr is not None
        and not float(cell.aggregator.validation_split) > 0):
      raise ValueError(f"grid.defenses={defense!r}: grid.calibrate_fpr fits "
                       "the margin on the validation split of the shared "
                       "sample; set aggregator.validation_split > 0.")
    if (parse_spec(defense)[0] == "gan_filter"
        and config.grid.calibrate_fpr is not None
        and cell.aggregator.threshold_rule not in CALIBRATED_RULES):
      raise ValueError(f"grid.defenses={defense!r}: grid.calibrate_fpr fits "
                       "aggregator.threshold_rule in "
                       f"{CALIBRATED_RULES}; got "
                       f"{cell.aggregator.threshold_rule!r}.")
  for partition in grid.partitions:  # e.g. data.alpha for "dirichlet"
    cell = cell_config(config, grid.defenses[0])
    cell.data.partition = partition
    builders.validate_config(cell)
  return grid


def partition_label(name: str, alpha: float) -> str:
  """The ``data`` label of a partition in rows and tables."""
  return PARTITION_LABELS.get(name, name).format(alpha=alpha)


def stacked_client_data(config: ml_collections.ConfigDict,
                        partitions: Sequence[str], dataset: Any,
                        byzantine: np.ndarray,
                        seeds: Optional[Sequence[int]] = None):
  """Every (seed, partition) padded to one ``M`` and stacked on a leading axis.

  Args:
    seeds: the partitions' seeds (``[config.seed]`` when None); the stack is
      seed-major: entry ``i * P + p`` is seed ``i``, partition ``p``.

  Returns:
    ``(FederatedData [S * P, C, M, ...], M, classes)`` where
    ``classes[i][c]`` lists the classes client ``c`` holds in entry ``i``.
  """
  seeds = [int(config.seed)] if seeds is None else list(seeds)
  parts = [data_lib.partition(p, dataset.y_train, config.num_clients,
                              seed=seed, alpha=config.data.alpha,
                              classes_per_client=config.data.classes_per_client)
           for seed in seeds for p in partitions]
  m = max(max(len(i) for i in p) for p in parts)
  datas = [data_lib.to_client_data(dataset.x_train, dataset.y_train, p,
                                   max_examples=m) for p in parts]
  fed = FederatedData(np.stack([d.x for d in datas]),
                      np.stack([d.y for d in datas]),
                      np.stack([d.count for d in datas]),
                      np.stack([byzantine] * len(datas)))
  y = np.asarray(dataset.y_train)
  classes = [[sorted(set(y[i].tolist())) for i in p] for p in parts]
  return jax.tree.map(jnp.asarray, fed), m, classes


# --------------------------------------------------------------------------
# The GAN report.


def gan_report(config: ml_collections.ConfigDict, dataset: Any, workdir: str,
               *, log: Callable[[str], None] = print,
               wgan_gp: Any = None, wgan_gp_seconds: float = 0.0) -> dict:
  """Compares the filter's WGAN-GP with a plain GAN; writes the comparison.

  Writes ``gan.json`` (the report) and ``gan_samples.png`` (samples).

  Both train on the GAN filter's shared sample (``aggregator.shared_fraction``
  of each class, drawn with the seed) for ``aggregator.gan_steps`` steps, the
  WGAN-GP at ``aggregator.gan_learning_rate``, the plain GAN at its own
  (DCGAN) 2e-4; each draws ``grid.diversity_per_class`` samples per class.
  Label fidelity is the accuracy of a logistic regression trained on the
  real training images on the samples.

  Args:
    config: the grid's config.
    dataset: the data set.
    workdir: where the files go.
    log: progress sink.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).
    wgan_gp: the filter's trained generator (``Defense.artifacts``), reused
      instead of training the same one again; trained here when None.
    wgan_gp_seconds: how long building it took, for the report.

  Returns:
    The report (``gan.json``).
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  k = dataset.num_classes
  # The generator's part of the shared sample (without the validation split).
  idx, _ = defenses_lib.shared_sample_indices(
      dataset.y_train, float(config.aggregator.shared_fraction), k,
      config.seed, float(config.aggregator.validation_split))
  xs, ys = np.asarray(dataset.x_train)[idx], np.asarray(dataset.y_train)[idx]
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x6A7)
  reference = LogisticRegression(max_iter=2000).fit(
      dataset.x_train.reshape(len(dataset.y_train), -1), dataset.y_train)
  labels = defenses_lib.balanced_labels(k, int(config.grid.diversity_per_class))
  real_div = defenses_lib.sample_diversity(dataset.x_test, dataset.y_test, k)
  report = {"shared_samples": int(len(ys)),
            "gan_steps": int(config.aggregator.gan_steps),
            "wgan_gp_learning_rate": float(config.aggregator.gan_learning_rate),
            "real_test_diversity": real_div}
  samples = {}
  for kind in ("wgan_gp", "gan"):
    t0 = time.time()
    lr = (float(config.aggregator.gan_learning_rate) if kind == "wgan_gp"
          else None)
    if kind == "wgan_gp" and wgan_gp is not None:
      gan, t0 = wgan_gp, t0 - wgan_gp_seconds
    else:
      gan = defenses_lib.train_gan(key, xs, ys, k, kind=kind,
                                   num_steps=int(config.aggregator.gan_steps),
                                   learning_rate=lr)
    s = np.asarray(defenses_lib.sample(gan, jax.random.fold_in(key, 1), labels))
    div = defenses_lib.sample_diversity(s, labels, k)
    fidelity = float(np.mean(reference.predict(s.reshape(len(s), -1))
                             == np.asarray(labels)))
    report[kind] = {"diversity": div, "diversity_vs_real": div / real_div,
                    "label_fidelity": fidelity,
                    "train_seconds": round(time.time() - t0, 1),
                    "final_losses": np.asarray(gan.losses[-1]).tolist()}
    log(f"{kind}: diversity {div:.3f} ({div / real_div:.2f} x real), "
        f"label fidelity {fidelity:.3f}, {time.time() - t0:.0f}s")
    samples[kind] = s
  reporting.write_json(os.path.join(workdir, "gan.json"), report, indent=2)
  sample_grid(samples, np.asarray(labels), dataset,
              os.path.join(workdir, "gan_samples.png"))
  return report


def sample_grid(samples: dict, labels: np.ndarray, dataset: Any, path: str,
                per_row: int = 8) -> str:
  """Real test images and each generator's samples, a row per class."""
  k = dataset.num_classes
  side = int(round(np.sqrt(np.prod(dataset.input_shape))))
  panels = [("real (test)", dataset.x_test, dataset.y_test)] + [
      (name, s, labels) for name, s in samples.items()]
  fig = reporting.new_figure((4 * len(panels), 5))
  for ax, (name, x, y) in zip(fig.subplots(1, len(panels)), panels):
    grid = np.zeros((k * side, per_row * side))
    for c in range(k):
      for j, img in enumerate(np.asarray(x)[np.asarray(y) == c][:per_row]):
        grid[c * side:(c + 1) * side, j * side:(j + 1) * side] = (
            img.reshape(side, side))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(name)
    ax.set_yticks([(c + 0.5) * side for c in range(k)], range(k))
    ax.set_xticks([])
  fig.tight_layout()
  return reporting.save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------
# The GAN filter's calibration.


def calibration_clients(x_val: Any, y_val: Any, num_clients: int,
                        seed: int) -> FederatedData:
  """Simulated honest IID clients on the validation split of the shared sample.

  Like an IID partition of the split: a random permutation (``seed``) cut
  into ``num_clients`` disjoint shares of ``k = max(1, len(split) //
  num_clients)`` examples (when the split has fewer examples than clients,
  further permutations are appended and shares repeat examples); each
  client runs the usual local training on its ``k`` examples; none is
  Byzantine. The split is much smaller than the training set (digits: 66
  examples at a 10% shared sample, 10 at 0.5%), so the simulated clients
  hold far fewer examples than the real ones (about 68 each on digits).

  Raises:
    ValueError: an empty split (set ``aggregator.validation_split > 0``).
  """
  y_val = np.asarray(y_val)
  if y_val.size == 0:
    raise ValueError("grid.calibrate_fpr fits the GAN filter's margin on the "
                     "validation split of the shared sample, which is empty: "
                     "set aggregator.validation_split > 0.")
  rng = np.random.default_rng([int(seed), 0xCA1])
  k = max(1, y_val.size // num_clients)
  reps = -(-num_clients * k // y_val.size)
  order = np.concatenate([rng.permutation(y_val.size) for _ in range(reps)])
  idx = order[:num_clients * k].reshape(num_clients, k)
  return FederatedData(
      jnp.asarray(np.asarray(x_val, np.float32)[idx]),
      jnp.asarray(y_val[idx].astype(np.int32)),
      jnp.full((num_clients,), k, jnp.int32),
      jnp.zeros((num_clients,), bool))


CALIBRATED_RULES = ("global", "robust")


def calibrate_gan_filter(config: ml_collections.ConfigDict, *, model: Any,
                         params: Any, generator: Any, x_val: Any, y_val: Any,
                         log: Callable[[str], None] = print) -> dict:
  """Fits the threshold of the GAN filter of ``config`` (its ``margin``).

  Only the validation split of the shared sample is read (``x_val, y_val``:
  the ``aggregator.validation_split`` the generator never saw,
  :func:`robustfl_jax.defenses.shared_sample_indices`); neither the test
  set nor the clients' data. A recording run
  (:func:`robustfl_jax.defenses.recording_filter`: every client kept, every
  client's synthetic-accuracy gap to the global model recorded) of
  ``config.num_rounds`` rounds without attack on ``num_clients`` simulated
  honest IID clients holding disjoint shares of the split
  (:func:`calibration_clients`, seed ``grid.calibration_seed``). For
  ``aggregator.threshold_rule``:

  * ``"global"``: the margin is the smallest one that excludes at most
    ``grid.calibrate_fpr`` of the honest clients' decisions after
    ``aggregator.warmup_rounds`` rounds
    (:func:`robustfl_jax.defenses.calibrate_margin`);
  * ``"robust"``: the multiplier ``k`` is the larger of the same fit on the
    clients' robust z-scores and Cantelli's distribution-free value
    (:func:`robustfl_jax.defenses.calibrate_robust_k`); the rule's location
    and scale come from each round's own scores.

  Returns:
    ``{"rule", "margin", "calibration_seed", "max_false_positives",
    "warmup_rounds", "validation_split", "validation_examples",
    "calibration_false_positives", "honest_gap_quantiles"}``, with
    ``"validation_k"`` and ``"bound_k"`` for ``"robust"``.

  Raises:
    ValueError: another threshold rule or an empty split.
  """
  rule = config.aggregator.threshold_rule
  if rule not in CALIBRATED_RULES:
    raise ValueError("grid.calibrate_fpr fits aggregator.threshold_rule in "
                     f"{CALIBRATED_RULES}; got {rule!r}.")
  seed = int(config.grid.calibration_seed)
  fpr = float(config.grid.calibrate_fpr)
  warmup = int(config.aggregator.warmup_rounds)
  rounds, n = int(config.num_rounds), int(config.num_clients)
  fed = calibration_clients(x_val, y_val, n, seed)
  cell = cell_config(config, config.aggregator.name, "none")
  cell.data.partition = "iid"
  per_class = int(config.aggregator.validation_per_class)
  probe = defenses_lib.gan_filter_probe(
      model.apply, params, generator, per_class=per_class, rule="global",
      margin=float(config.aggregator.margin))
  recorder = defenses_lib.recording_filter(probe, rounds, n)
  round_fn, init_state = protocols.build_round(
      cell, model=model, params=params, aggregator=recorder, attack=None,
      scorer=None, train_loss=None, max_examples=int(fed.y.shape[1]),
      client_execution=builders.client_execution(cell))

  @jax.jit
  def run(data, key):
    def body(state, _):
      return round_fn(state, data)[0], None
    state, _ = jax.lax.scan(body, init_state(key), None, length=rounds)
    return state.aggregator_state.gaps

  t0 = time.time()
  gaps = np.asarray(run(fed, run_keys((seed,), 1)[0]))
  honest = np.ones(n, bool)
  result = {"rule": rule}
  if rule == "robust":
    resolution = 1.0 / (per_class * int(generator.num_classes))
    result.update(defenses_lib.calibrate_robust_k(
        gaps, honest, warmup_rounds=warmup, max_false_positives=fpr,
        resolution=resolution))
    margin = result.pop("k")
    kept = np.asarray(jax.vmap(lambda g: defenses_lib.accept_by_rule(
        -g, jnp.ones(n, bool), "robust", margin=margin,
        resolution=resolution))(jnp.asarray(gaps)))
    excluded = ~kept[warmup:]
  else:
    margin = defenses_lib.calibrate_margin(gaps, honest, warmup_rounds=warmup,
                                           max_false_positives=fpr)
    excluded = gaps[warmup:] > margin
  after = gaps[warmup:]
  after = after[np.isfinite(after)]
  result.update({"margin": margin, "calibration_seed": seed,
                 "max_false_positives": fpr, "warmup_rounds": warmup,
                 "validation_split": float(config.aggregator.validation_split),
                 "validation_examples": int(np.asarray(y_val).size),
                 "calibration_false_positives": float(np.mean(excluded)),
                 "honest_gap_quantiles": {
                     str(q): float(np.quantile(after, q))
                     for q in (0.5, 0.9, 0.95, 0.99)}})
  log(f"GAN filter ({config.aggregator.name}, shared_fraction "
      f"{config.aggregator.shared_fraction}): {describe_calibration(result)}"
      f", {n} simulated IID clients on the validation split "
      f"({result['validation_examples']} examples), {time.time() - t0:.0f}s")
  return result


def describe_calibration(c: dict) -> str:
  """One phrase: the fitted threshold of :func:`calibrate_gan_filter`."""
  target = (f"<= {c['max_false_positives']:.0%} honest exclusion after the "
            f"{c['warmup_rounds']}-round warm-up")
  if c["rule"] == "robust":
    return (f"`robust` rule (keep a client whose synthetic accuracy is at "
            f"most k robust spreads below the round's median), k "
            f"{c['margin']:.2f} = max(validation-split fit "
            f"{c['validation_k']:.2f}, Cantelli bound {c['bound_k']:.2f}) "
            f"for {target}")
  return f"margin {c['margin']:.3f} of the `global` rule fitted to {target}"


def calibrated_filter(config: ml_collections.ConfigDict, model: Any,
                      params: Any, generator: Any, margin: float):
  """``(aggregator, probe)`` of the GAN filter with the fitted margin (of
  ``aggregator.threshold_rule``)."""
  hp = dict(per_class=int(config.aggregator.validation_per_class),
            rule=config.aggregator.threshold_rule,
            threshold=float(config.aggregator.threshold),
            margin=float(margin))
  return (defenses_lib.gan_filter(
      model.apply, params, generator, **hp,
      warmup_rounds=int(config.aggregator.warmup_rounds)),
          defenses_lib.gan_filter_probe(model.apply, params, generator, **hp))


# --------------------------------------------------------------------------
# The grid.


def switch_attack(adversaries: Sequence[Optional[attacks.Attack]],
                  index: jax.Array) -> attacks.Attack:
  """All adversaries as one attack, chosen by a traced (unbatched) index.

  The index is the same for every data partition of the vmapped run, so
  ``lax.switch`` stays a real conditional (only the chosen adversary runs)
  and one compiled program serves every adversary of a defense. Each branch
  calls its attack with the round's context (``global_params``, ...); None
  sends the honest updates.
  """
  def update(key, updates, byzantine_mask, **context):
    def branch(attack):
      if attack is None:
        return lambda key, updates, mask: updates
      return lambda key, updates, mask: attack(key, updates, mask, **context)

    return jax.lax.switch(index, [branch(a) for a in adversaries], key,
                          updates, byzantine_mask)

  return attacks.Attack("conflict_adversaries", update=update)


def build_adversary(config: ml_collections.ConfigDict, *, model: Any,
                    params: Any, dataset: Any, aggregator: Any, probe: Any
                    ) -> Optional[attacks.Attack]:
  """The cell's ``attack.name`` against its defense (None for ``"none"``).

  Raises:
    ValueError: the attack also changes the Byzantine clients' training or
      data (the grid switches between update attacks only).
  """
  attack = builders.build_attack(config, model=model, params=params,
                                 dataset=dataset, aggregator=aggregator,
                                 probe=probe)
  if attack is not None and (attack.train_loss or attack.local_train
                             or attack.poison_data):
    raise ValueError(f"grid.adversaries: {config.attack.name!r} changes the "
                     "Byzantine clients' training or data; the conflict grid "
                     "switches between attacks on the uploaded updates only.")
  return attack


def run_keys(seeds: Sequence[int], num_partitions: int) -> jax.Array:
  """The runs' keys, seed-major like :func:`stacked_client_data`."""
  keys = [jax.random.split(jax.random.PRNGKey(int(s)))[1] for s in seeds]
  return jnp.stack([k for k in keys for _ in range(num_partitions)])


def _defense_program(config, *, model, params, dataset, aggregator,
                     adversaries, max_examples, eval_fn):
  """``run(data [S*P, ...], keys [S*P], index) -> outputs [S*P, ...]``,
  jitted, vmapped."""

  def run_one(data, state_key, index):
    round_fn, init_state = protocols.build_round(
        config, model=model, params=params, aggregator=aggregator,
        attack=switch_attack(adversaries, index),
        scorer=builders.build_scorer(config),
        train_loss=adversarial_hooks.train_loss(config),
        max_examples=max_examples,
        client_execution=builders.client_execution(config))

    def body(state, _):
      state, m = round_fn(state, data)
      return state, (m["fpr"], m["tpr"], m["flagged"], m["skipped"])

    state, per_round = jax.lax.scan(body, init_state(state_key), None,
                                    length=int(config.num_rounds))
    metrics = eval_fn(state.params)
    return (metrics["accuracy"], metrics["per_class_accuracy"], *per_round)

  return jax.jit(jax.vmap(run_one, in_axes=(0, 0, None)))


def cell_rows(defense: str, adversary: str, data_labels: Sequence[str],
              outputs: Sequence[np.ndarray], seconds: float, *, source: int,
              num_byzantine: int, seeds: Sequence[int] = (0,),
              warmup_rounds: int = 0) -> list[dict]:
  """The results rows of one (defense, adversary), one per (seed, partition).

  ``honest_excluded_after_warmup`` (``byzantine_...``) average the rounds
  from ``warmup_rounds`` on (all rounds when 0).
  """
  acc, per_class, fpr, tpr, flagged, skipped = outputs
  f = num_byzantine
  labels = [(seed, label) for seed in seeds for label in data_labels]
  w = warmup_rounds if warmup_rounds < len(fpr[0]) else 0
  rows = []
  for i, (seed, label) in enumerate(labels):
    row = {
        "defense": defense, "adversary": adversary, "data": label,
        "seed": int(seed),
        "honest_excluded_after_warmup": float(np.mean(fpr[i][w:])),
        "byzantine_excluded_after_warmup": (float(np.mean(tpr[i][w:]))
                                            if f > 0 else None),
        "warmup_rounds": int(w),
        "accuracy": float(acc[i]),
        "target_accuracy": float(per_class[i][source]),
        "honest_excluded": float(np.mean(fpr[i])),
        "byzantine_excluded": float(np.mean(tpr[i])) if f > 0 else None,
        "honest_excluded_last_round": float(fpr[i][-1]),
        "per_class_accuracy": [float(v) for v in per_class[i]],
        "honest_excluded_per_round": [float(v) for v in fpr[i]],
        "byzantine_excluded_per_round": ([float(v) for v in tpr[i]]
                                         if f > 0 else None),
        "skipped_rounds": int(np.sum(skipped[i])),
        "seconds": round(seconds / len(labels), 2),
    }
    if parse_spec(defense)[0] in defenses_lib.DEFENSES:
      row["filtered_per_round"] = [np.flatnonzero(r).tolist()
                                   for r in flagged[i]]
    rows.append(row)
  return rows


def run_conflict(config: ml_collections.ConfigDict, workdir: str, *,
                 log: Callable[[str], None] = print,
                 fresh: bool = False) -> ConflictResult:
  """Runs the grid of ``config`` and writes its outputs to ``workdir``.

  Args:
    config: a conflict config (``configs/conflict.py``): an experiment
      config with a ``grid`` section (``defenses``, ``adversaries``,
      ``partitions``, ``diversity_per_class``).
    workdir: the output folder (created).
    log: receives one line per finished (defense, adversary), the GAN
      report's lines and the table.

  Returns:
    A :class:`ConflictResult`.

  Raises:
    ValueError: the config cannot work (the message names the field).
    FileNotFoundError: the data set's files are missing.
  """
  grid = validate(config)
  workdir_lib.prepare(workdir, config, kind="conflict", fresh=fresh, log=log)
  t_start = time.time()
  seeds = tuple(int(v) for v in config.grid.seeds)
  dataset = builders.build_dataset(config)
  model, params = builders.build_model(config, dataset)
  byzantine = builders.byzantine_mask(config)
  n, f = int(config.num_clients), int(np.sum(byzantine))
  source = int(config.attack.source)
  fed, max_examples, client_classes = stacked_client_data(
      config, grid.partitions, dataset, byzantine, seeds)
  keys = run_keys(seeds, len(grid.partitions))
  data_labels = [partition_label(p, config.data.alpha) for p in grid.partitions]
  eval_fn = make_eval_fn(model.apply, dataset.x_test, dataset.y_test,
                         dataset.num_classes)
  prebuilt, gan, calibration = {}, None, {}
  for spec in grid.defenses:
    if parse_spec(spec)[0] != "gan_filter":
      continue
    # The filter's generator is trained once per setting, for the grid, the
    # calibration and (first setting) the report.
    t0 = time.time()
    cell = cell_config(config, spec)
    defense = builders.build_defense(cell, model=model, params=params,
                                     dataset=dataset)
    generator = defense.artifacts["generator"]
    aggregator, probe = defense.aggregator, defense.probe
    if config.grid.calibrate_fpr is not None:
      x_val, y_val = defense.artifacts["validation"]
      calibration[spec] = calibrate_gan_filter(
          cell, model=model, params=params, generator=generator,
          x_val=x_val, y_val=y_val, log=log)
      aggregator, probe = calibrated_filter(cell, model, params, generator,
                                            calibration[spec]["margin"])
    prebuilt[spec] = (aggregator, probe)
    if gan is None:
      gan = gan_report(cell, dataset, workdir, log=log, wgan_gp=generator,
                       wgan_gp_seconds=time.time() - t0)

  total = len(grid.defenses) * len(grid.adversaries) * len(data_labels)
  rows, done, t_grid = [], 0, time.time()
  for defense in grid.defenses:
    cell = cell_config(config, defense)
    aggregator, probe = prebuilt.get(defense) or builders.build_server_rule(
        cell, model=model, params=params, dataset=dataset)
    adversaries = [build_adversary(
        cell_config(config, defense, a), model=model, params=params,
        dataset=dataset, aggregator=aggregator, probe=probe)
        for a in grid.adversaries]
    warmup = (int(cell.aggregator.warmup_rounds)
              if parse_spec(defense)[0] == "gan_filter" else 0)
    # One compile per defense, reused for all its adversaries.
    run = _defense_program(cell, model=model, params=params, dataset=dataset,
                           aggregator=aggregator, adversaries=adversaries,
                           max_examples=max_examples, eval_fn=eval_fn)
    for index, adversary in enumerate(grid.adversaries):
      t0 = time.time()
      outputs = jax.device_get(run(fed, keys, jnp.int32(index)))
      seconds = time.time() - t0
      new = cell_rows(defense, adversary, data_labels, outputs, seconds,
                      source=source, num_byzantine=f, seeds=seeds,
                      warmup_rounds=warmup)
      rows += new
      done += len(data_labels)
      eta = (time.time() - t_grid) / done * (total - done)
      summary = summarize(new)
      cells = " ".join(
          f"{r['data']}={r['accuracy']:.3f}/{r['target_accuracy']:.2f}/"
          f"{r['honest_excluded_after_warmup']:.2f}" for r in summary)
      log(f"[{done}/{total}] {defense:>17} x {adversary:<18} acc/target/"
          f"honest_excl (mean of {len(seeds)} seeds) {cells} | "
          f"{seconds:.1f}s | eta {eta:.0f}s")
      reporting.write_json(os.path.join(workdir, "results.json"), rows)

  meta = {"num_clients": n, "num_byzantine": f,
          "num_rounds": int(config.num_rounds), "source_class": source,
          "flip_to": int(config.attack.target), "partitions": data_labels,
          "seeds": list(seeds),
          "client_classes": dict(zip(data_labels, client_classes)),
          "gan": gan, "gan_calibration": calibration,
          "gan_calibration_fpr": config.grid.calibrate_fpr,
          "wall_seconds": round(time.time() - t_start, 1)}
  reporting.write_json(os.path.join(workdir, "meta.json"), meta)
  table = markdown_table(rows, grid.defenses, grid.adversaries, data_labels)
  markdown = (
      f"{dataset.name}, {n} clients ({f} Byzantine), {config.num_rounds} "
      f"rounds, seeds {list(seeds)} (partition and run randomness; the model "
      "initialisation and the GAN come from `seed`). Cell, mean ± sd over "
      f"the seeds: final test accuracy / accuracy on class {source} (the "
      f"targeted adversaries push it to {int(config.attack.target)}) / mean "
      "fraction of honest clients excluded per round / of Byzantine clients "
      "(after the GAN filter's warm-up; all rounds for the other "
      "defenses).\n\n" + table + "\n")
  for spec, c in calibration.items():
    markdown += (
        f"\n`{spec}`: warm-up {c['warmup_rounds']} rounds (records only); "
        f"{describe_calibration(c)}, fitted "
        f"on {int(config.num_clients)} simulated honest IID clients drawn "
        f"from the validation split of the shared sample ("
        f"{c['validation_split']:g} of it held out from the generator, "
        f"{c['validation_examples']} examples; calibration seed "
        f"{c['calibration_seed']}; {c['calibration_false_positives']:.3f} "
        "there). Per-round exclusion, mean over seeds:\n\n"
        + exclusion_table(rows, spec, grid.adversaries, data_labels) + "\n")
  reporting.write_text(os.path.join(workdir, "conflict.md"), markdown)
  heatmaps(rows, grid.defenses, grid.adversaries, data_labels,
           os.path.join(workdir, "conflict.png"), title=dataset.name)
  log(table)
  log(f"grid of {total} runs took {time.time() - t_start:.0f}s in total; "
      f"outputs in {workdir}")
  return ConflictResult(rows, meta, gan, markdown, grid)


# --------------------------------------------------------------------------
# Tables and plots.


SUMMARY_FIELDS = ("accuracy", "target_accuracy", "honest_excluded",
                  "honest_excluded_after_warmup",
                  "byzantine_excluded_after_warmup")


def summarize(rows: Sequence[dict]) -> list[dict]:
  """One row per (defense, adversary, data): the mean over the seeds of
  :data:`SUMMARY_FIELDS`, each with ``<field>_sd`` (sample sd, ddof=1; 0 for
  one seed) and ``num_seeds``; per-round exclusion rates averaged too."""
  groups: dict = {}
  for r in rows:
    groups.setdefault((r["defense"], r["adversary"], r["data"]), []).append(r)
  out = []
  for (d, a, label), group in groups.items():
    row = {"defense": d, "adversary": a, "data": label,
           "num_seeds": len(group)}
    for field in SUMMARY_FIELDS:
      values = [g.get(field) for g in group]
      if any(v is None for v in values):
        row[field] = row[field + "_sd"] = None
        continue
      row[field] = float(np.mean(values))
      row[field + "_sd"] = (float(np.std(values, ddof=1)) if len(values) > 1
                            else 0.0)
    for field in ("honest_excluded_per_round", "byzantine_excluded_per_round"):
      if all(g.get(field) is not None for g in group):
        row[field] = np.mean([g[field] for g in group], axis=0).tolist()
    out.append(row)
  return out


def _by_key(rows: Sequence[dict]) -> dict:
  return {(r["defense"], r["adversary"], r["data"]): r for r in rows}


def _pm(row: dict, field: str, digits: int) -> str:
  value, sd = row.get(field), row.get(field + "_sd")
  if value is None:
    return "-"
  return f"{value:.{digits}f}" + ("" if not sd else f"±{sd:.{digits}f}")


def markdown_table(rows: Sequence[dict], defenses: Sequence[str],
                   adversaries: Sequence[str], data_labels: Sequence[str]
                   ) -> str:
  """A row per (defense, adversary), a column per partition; each cell is
  accuracy / target-class accuracy / honest / Byzantine clients excluded per
  round after the warm-up, mean ± sd over the seeds (n/a: no row)."""
  by_key = _by_key(summarize(rows))

  def cell(d, a, label):
    r = by_key.get((d, a, label))
    if r is None:
      return "n/a"
    field = ("honest_excluded_after_warmup"
             if "honest_excluded_after_warmup" in r else "honest_excluded")
    text = (f"{_pm(r, 'accuracy', 3)} / {_pm(r, 'target_accuracy', 2)} / "
            f"{_pm(r, field, 2)}")
    if r.get("byzantine_excluded_after_warmup") is not None:
      text += f" / {_pm(r, 'byzantine_excluded_after_warmup', 2)}"
    return text

  return reporting.markdown_table(
      ["defense", "adversary", *data_labels],
      ([d, a, *(cell(d, a, label) for label in data_labels)]
       for d in defenses for a in adversaries))


def exclusion_table(rows: Sequence[dict], defense: str,
                    adversaries: Sequence[str], data_labels: Sequence[str]
                    ) -> str:
  """Per-round honest / Byzantine exclusion rates of one defense (mean over
  the seeds), a row per (adversary, data)."""
  by_key = _by_key(summarize(rows))
  lines = []
  for a in adversaries:
    for label in data_labels:
      r = by_key.get((defense, a, label))
      if r is None or "honest_excluded_per_round" not in r:
        continue
      honest = " ".join(f"{v:.2f}" for v in r["honest_excluded_per_round"])
      byz = " ".join(f"{v:.2f}" for v in
                     r.get("byzantine_excluded_per_round") or [])
      lines.append([a, label, honest, byz])
  return reporting.markdown_table(
      ["adversary", "data", "honest excluded, rounds 1..R",
       "Byzantine excluded, rounds 1..R"], lines)


def heatmaps(rows: Sequence[dict], defenses: Sequence[str],
             adversaries: Sequence[str], data_labels: Sequence[str],
             path: str, title: str = "digits") -> str:
  """Accuracy heatmaps (defenses x adversaries), one per partition; each
  cell also shows the fraction of honest clients excluded."""
  by_key = _by_key(summarize(rows))
  fig = reporting.new_figure(
      (1.6 + (1.25 * len(adversaries) + 0.8) * len(data_labels),
       1.4 + 0.55 * len(defenses)))
  # Room for the defenses' names left of every panel.
  axes = fig.subplots(1, len(data_labels), squeeze=False,
                      gridspec_kw={"wspace": 0.45})[0]
  image = None
  for ax, label in zip(axes, data_labels):
    acc = np.full((len(defenses), len(adversaries)), np.nan)
    excl = np.full_like(acc, np.nan)
    for i, d in enumerate(defenses):
      for j, a in enumerate(adversaries):
        r = by_key.get((d, a, label))
        if r is not None:
          acc[i, j] = r["accuracy"]
          excl[i, j] = r["honest_excluded_after_warmup"]
    image = reporting.heatmap(
        ax, acc, list(defenses), list(adversaries),
        text=lambda i, j, acc=acc, excl=excl: (
            "" if np.isnan(acc[i, j])
            else f"{acc[i, j]:.2f}\nx{excl[i, j]:.2f}"))
    ax.set_title(label)
  fig.colorbar(image, ax=list(axes), label="final test accuracy")
  # Above the panels' titles (the saved box is fitted to the content).
  fig.suptitle(f"{title}: accuracy, mean over seeds (x = mean fraction of "
               "honest clients excluded after the warm-up)", y=1.0 + 0.25 / fig.get_figheight())
  return reporting.save_figure(fig, path, dpi=110, bbox_inches="tight")


def headline(result: ConflictResult) -> str:
  """Per partition, the best worst-case accuracy over the adversaries (mean
  ± sd over seeds) and the defense reaching it; the runner-up is named only
  when the gap exceeds two standard deviations (the larger of the two)."""
  parts = []
  summary = summarize(result.rows)
  for label in result.meta["partitions"]:
    worst = {}
    for r in summary:
      if r["data"] == label and (r["defense"] not in worst or r["accuracy"]
                                 < worst[r["defense"]]["accuracy"]):
        worst[r["defense"]] = r
    ranked = sorted(worst.values(), key=lambda r: -r["accuracy"])
    best = ranked[0]
    text = f"{label} {best['defense']} {_pm(best, 'accuracy', 3)}"
    if len(ranked) > 1:
      second = ranked[1]
      gap = best["accuracy"] - second["accuracy"]
      sd = max(best["accuracy_sd"], second["accuracy_sd"])
      text += (f" (> {second['defense']} by {gap:.3f}, over 2 sd)"
               if gap > 2 * sd else
               f" (within 2 sd of {second['defense']})")
    parts.append(text)
  return "best worst-case accuracy: " + ", ".join(parts)


def _diff(a: dict, b: dict, field: str = "accuracy") -> str:
  """``a - b`` of a summary field, with whether it exceeds two sd (the
  larger of the two cells')."""
  gap = a[field] - b[field]
  sd = max(a[field + "_sd"] or 0.0, b[field + "_sd"] or 0.0)
  return f"{gap:+.3f} ({'over' if abs(gap) > 2 * sd else 'within'} 2 sd)"


def claims(result: ConflictResult) -> str:
  """The seeds' claims against the grid's numbers (markdown bullets).

  Each bullet states a claim and the measured figures (mean over the seeds,
  differences marked over/within two standard deviations); cells not in the
  grid are skipped.
  """
  by_key = _by_key(summarize(result.rows))
  labels = result.meta["partitions"]
  defenses = list(dict.fromkeys(r["defense"] for r in result.rows))
  adversaries = list(dict.fromkeys(r["adversary"] for r in result.rows))
  lines = []
  gan_specs = [d for d in defenses if parse_spec(d)[0] == "gan_filter"]
  fpr = result.meta.get("gan_calibration_fpr") or 0.05
  for spec in gan_specs:
    none = {label: by_key.get((spec, "none", label)) for label in labels}
    kept = []
    for label, r in none.items():
      if r is None:
        continue
      v = r["honest_excluded_after_warmup"]
      kept.append(f"{label} {v:.3f}±{r['honest_excluded_after_warmup_sd']:.3f}"
                  f" ({'<=' if v <= fpr else '>'} {fpr:g})")
    if kept:
      lines.append(
          f"- Seed (WGAN-GP filter), non-poisonous clients are kept: `{spec}` "
          "without attack excludes, per round after the warm-up, "
          + ", ".join(kept) + " of the honest clients; the claim holds "
          f"where the rate is <= {fpr:g} (the calibration target).")
    caught, missed = [], []
    for a in adversaries:
      r = by_key.get((spec, a, labels[0]))
      if a == "none" or r is None or r.get(
          "byzantine_excluded_after_warmup") is None:
        continue
      v = r["byzantine_excluded_after_warmup"]
      (caught if v >= 0.5 else missed).append(f"{a} {v:.2f}")
    if caught or missed:
      lines.append(
          f"- Seed (WGAN-GP filter), poisonous clients are filtered out: "
          f"`{spec}` on {labels[0]} excludes at least half of the Byzantine "
          f"clients per round after the warm-up against: "
          f"{', '.join(caught) or 'none'}; less against: "
          f"{', '.join(missed) or 'none'}.")
  distance = [d for d in defenses
              if parse_spec(d)[0] in aggregators.DIFFERENTIABLE_RULES]
  for a in ("distance_bounded", "distance_bounded:objective=targeted"):
    if a not in adversaries:
      continue
    field = "target_accuracy" if "targeted" in a else "accuracy"
    parts = []
    for d in distance:
      for label in labels:
        base, hit = by_key.get((d, "none", label)), by_key.get((d, a, label))
        if base and hit:
          parts.append(f"{d}/{label} {_diff(hit, base, field)}")
    if parts:
      over = sum("over 2 sd" in p and p.split()[1].startswith("-")
                 for p in parts)
      lines.append(
          f"- arXiv:2402.13700, distance-based rules fail against a strategic "
          f"adversary: `{a}` lowers the {field.replace('_', ' ')} by more "
          f"than two sd in {over} of {len(parts)} cells; (attack - none): "
          + "; ".join(parts) + ".")
  if "mean" in defenses:
    parts = []
    for d in defenses:
      if d == "mean":
        continue
      for label in labels[1:]:
        base, r = by_key.get(("mean", "none", label)), by_key.get(
            (d, "none", label))
        if base and r:
          parts.append(f"{d}/{label} {_diff(r, base)}")
    if parts:
      lines.append(
          "- arXiv:2402.13700, robustness costs learning on non-IID data: "
          "accuracy without attack minus the mean's, " + "; ".join(parts)
          + ".")
  return "\n".join(lines)


def report(result: ConflictResult) -> str:
  """``conflict.md``, the seeds' claims against the numbers and, with the
  GAN filter, the GAN comparison."""
  text = result.markdown
  found = claims(result)
  if found:
    text += ("\nThe seeds' claims against these numbers (differences over "
             "two standard deviations of the seeds are the ones to read):\n\n"
             + found + "\n")
  if result.gan is not None:
    g = result.gan
    text += (
        f"\nGAN filter's generator ({g['shared_samples']} shared samples, "
        f"{g['gan_steps']} steps): sample diversity relative to real test "
        "images and label fidelity.\n\n" + reporting.markdown_table(
            ["generator", "diversity / real", "label fidelity"],
            ([kind, f"{g[kind]['diversity_vs_real']:.2f}",
              f"{g[kind]['label_fidelity']:.3f}"]
             for kind in ("wgan_gp", "gan"))) + "\n")
  return text


__all__ = ["ConflictResult", "Grid", "PARTITION_LABELS", "SUMMARY_FIELDS",
           "build_adversary", "calibrate_gan_filter", "calibrated_filter",
           "describe_calibration",
           "calibration_clients", "claims",
           "cell_config", "cell_rows", "exclusion_table", "gan_report",
           "headline", "heatmaps", "markdown_table", "names", "parse_spec",
           "partition_label", "report", "run_conflict", "run_keys",
           "sample_grid", "stacked_client_data", "summarize",
           "switch_attack", "validate"]
