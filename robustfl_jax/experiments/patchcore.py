"""The PatchCore experiment of a config: centralised, federated, attacked.

:func:`run` (``scripts/patchcore.py``) reads a ``configs/patchcore_*.py``
config and wires the pure functions of :mod:`robustfl_jax.patchcore`:

1. load the data (ELPV from its pip package, or an MVTec AD / AutoVI folder);
2. extract patch features of all training and test images (progress shown);
3. centralised PatchCore: one greedy coreset of all training patches;
4. federated PatchCore: clients (by cell type, IID or Dirichlet) send local
   coresets; for every strategy and every attack (one client of five
   malicious by default) the server builds the global bank; each bank is
   scored on the same test set;
5. pixel-level metrics on synthetic defects drawn on held-out defect-free
   test images (the centralised bank);
6. writes results.json, results.md and anomaly-map PNGs under ``workdir``.

Example::

  from robustfl_jax.experiments import load_config, patchcore
  config = load_config("patchcore_elpv.py", {"federated.attacks": ("scaling",)})
  results = patchcore.run(config, "runs/pc_scaling")
  results["centralized"]["image_auroc"]
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax import attacks
from robustfl_jax.data import anomaly_folders, elpv, synthetic_defects
from robustfl_jax.data.partition import dirichlet, iid
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.models import efficientnet_lite, wide_resnet
from robustfl_jax.patchcore import coreset as coreset_lib
from robustfl_jax.patchcore import evaluation, federated, features, metrics, poisoning
from robustfl_jax.patchcore.nearest_neighbor import score_patches

# The file names `run` writes in its work directory.
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
TEST_MAPS = "anomaly_maps_test.png"
BANK_PCA = "bank_pca_defect_injection.png"
SYNTHETIC_MAPS = "anomaly_maps_synthetic.png"
DATA_SETS = ("elpv", "mvtec", "autovi")
PARTITIONS = ("cell_type", "iid", "dirichlet")


def validate(config) -> None:
  """Checks the names and ranges of a PatchCore config before any work starts.

  :func:`run` calls it before making the work directory, and :func:`ablation`
  on every row's variant before the first row runs.

  Raises:
    ValueError: a sentence naming the first bad field (data set, backbone or
      its layers, partition, strategy, attack, Byzantine client, poisoned
      fraction).
  """
  def choose(field, value, allowed):
    if value not in allowed:
      raise ValueError(f"{field}={value!r} is not one of {list(allowed)}")

  choose("data.name", config.data.name, DATA_SETS)
  bb = config.backbone
  choose("backbone.name", bb.name, features.BACKBONES)
  strides = (wide_resnet.STAGE_STRIDES if bb.name == "wide_resnet50_2"
             else efficientnet_lite.STAGE_STRIDES)
  for layer in bb.layers:
    choose("backbone.layers", layer, tuple(strides))
  fed = config.federated
  for partition in (fed.partition,) + tuple(fed.get("extra_partitions", ())):
    choose("federated.partition / extra_partitions", partition, PARTITIONS)
  for strategy in fed.strategies:
    choose("federated.strategies", strategy, federated.STRATEGIES)
  for attack in fed.attacks:
    choose("federated.attacks", attack, DEFECT_ATTACKS + attacks.names())
  if fed.num_clients > 0:
    for client in fed.byzantine_clients:
      if not 0 <= client < fed.num_clients:
        raise ValueError(f"federated.byzantine_clients holds {client}, outside the "
                         f"{fed.num_clients} clients (0 .. {fed.num_clients - 1})")
  if not 0.0 < fed.poison_fraction <= 1.0:
    raise ValueError(f"federated.poison_fraction must be in (0, 1]; got {fed.poison_fraction!r}")


def load_data(config):
  """The ``AnomalyData`` of ``config.data``.

  Raises:
    ValueError: an unknown ``data.name``, or a folder data set without
      ``data.dir``.
  """
  data = config.data
  if data.name == "elpv":
    return elpv.load_elpv(image_size=data.image_size, num_test_good=data.num_test_good,
                          max_train=data.max_train or None,
                          max_test_defective=data.max_test_defective or None, seed=config.seed)
  if data.name in ("mvtec", "autovi"):
    if not data.dir:
      raise ValueError(f"data.name={data.name!r} reads a folder: pass --config.data.dir=<root>")
    return anomaly_folders.load_anomaly_folder(data.dir, data.category, data.image_size,
                                               layout=data.name, max_train=data.max_train or None,
                                               seed=config.seed)
  raise ValueError(f"unknown data.name {data.name!r}; use one of {list(DATA_SETS)}")


def partition_clients(groups: np.ndarray, config,
                      partition: Optional[str] = None) -> list[np.ndarray]:
  """Client index arrays over the training images (``partition``, default
  ``config.federated.partition``).

  Raises:
    ValueError: an unknown partition.
  """
  fed = config.federated
  partition = partition or fed.partition
  if partition == "cell_type":
    return elpv.partition_by_cell_type(groups, fed.num_clients, seed=config.seed)
  if partition == "iid":
    return iid(groups, fed.num_clients, seed=config.seed)
  if partition == "dirichlet":
    return dirichlet(groups, fed.num_clients, fed.dirichlet_alpha, seed=config.seed)
  raise ValueError(f"unknown partition {partition!r}; use one of {list(PARTITIONS)}")


def robustness(config, strategy: str) -> federated.RobustnessConfig:
  """The server's settings for ``strategy`` from ``config.federated``."""
  fed = config.federated
  return evaluation.strategy_robustness(
    strategy, num_byzantine=int(fed.num_byzantine), trim_fraction=fed.trim_fraction,
    client_scoring_method=fed.client_scoring_method, zscore_threshold=fed.zscore_threshold,
    exclude_flagged=fed.exclude_flagged, support_threshold=fed.support_threshold,
    support_ratio=fed.support_ratio)


# Bank-poisoning attacks of this experiment (`robustfl_jax.patchcore.poisoning`):
# real defective cells from outside the test set, or synthetic defects drawn on
# the Byzantine clients' own training cells.
DEFECT_ATTACKS = ("defect_injection", "defect_injection_synthetic")


def defect_features(config, attack, fn, variables, data, byzantine_images) -> np.ndarray:
  """f32[K, h, w, d] patch features of the attacker's defective cells for ``attack``.

  Raises:
    ValueError: ``defect_injection`` on a data set other than ELPV (no pool).
  """
  fed = config.federated
  if attack == "defect_injection":
    if config.data.name != "elpv":
      raise ValueError("attack 'defect_injection' draws real defects from ELPV's cells outside "
                       "the test set; use 'defect_injection_synthetic' for data.name="
                       f"{config.data.name!r}")
    d = config.data
    images, _ = elpv.load_defect_pool(d.image_size, fed.defect_pool_size or None,
                                      d.num_test_good,
                                      d.max_train or None, d.max_test_defective or None,
                                      config.seed)
  else:
    images = synthetic_defects.add_synthetic_defects(byzantine_images, seed=config.seed + 11,
                                                     defect_fraction=1.0).images
  return features.extract_patch_features(fn, variables, images, config.backbone.batch_size,
                                         progress=f"{attack} features")


def submitted_coresets(config, key, coresets, byzantine, attack, defects=None):
  """The coresets the server receives under ``attack`` ("clean", a core attack or a
  ``DEFECT_ATTACKS`` name, which needs ``defects`` from :func:`defect_features`)."""
  if attack in DEFECT_ATTACKS:
    return poisoning.defect_injection(key, coresets, byzantine, defects,
                                      config.federated.poison_fraction)
  return federated.attack_coresets(key, coresets, jnp.asarray(byzantine), attack)


def save_anomaly_maps(path: str, images: np.ndarray, maps: np.ndarray,
                      masks: Optional[np.ndarray], titles: Sequence[str],
                      scores: Optional[np.ndarray] = None,
                      threshold: Optional[float] = None) -> str:
  """Images (top, ground-truth contour in red) over their anomaly maps (bottom).

  All maps share one colour scale, never one per image, shown by a colorbar.
  With ``scores`` each map is titled with its image score, and with
  ``threshold`` whether it is above the decision threshold. Returns ``path``.
  """
  num = len(images)
  fig = reporting.new_figure((2.2 * num, 4.6))
  axes = np.asarray(fig.subplots(2, num)).reshape(2, num)
  vmin, vmax = float(np.min(maps)), float(np.max(maps))
  for i in range(num):
    axes[0, i].imshow(images[i])
    if masks is not None and masks[i].any():
      axes[0, i].contour(masks[i], levels=[0.5], colors="red", linewidths=0.8)
    axes[0, i].set_title(titles[i], fontsize=8)
    shown = axes[1, i].imshow(maps[i], cmap="inferno", vmin=vmin, vmax=vmax)
    if scores is not None:
      verdict = "" if threshold is None else (" > t" if scores[i] > threshold else " <= t")
      axes[1, i].set_title(f"score {scores[i]:.1f}{verdict}", fontsize=8)
    for ax in axes[:, i]:
      ax.axis("off")
  if threshold is not None:
    fig.suptitle(f"decision threshold t = {threshold:.1f} (5% of good test cells above)",
                 fontsize=9)
  fig.tight_layout()
  fig.colorbar(shown, ax=list(axes[1]), fraction=0.02, pad=0.01, label="patch distance")
  return reporting.save_figure(fig, path, dpi=80)


def save_bank_pca(path: str, honest: np.ndarray, injected: np.ndarray,
                  banks: dict[str, np.ndarray]) -> str:
  """One panel per strategy: its bank (blue) over the honest (grey) and injected (red) patches.

  The 2-D projection is the PCA of the honest clients' submitted patches, the
  same for every panel. Returns ``path``.
  """
  mean = honest.mean(axis=0)
  _, _, vt = np.linalg.svd(honest - mean, full_matrices=False)

  def project(x):
    return (np.asarray(x) - mean) @ vt[:2].T

  fig = reporting.new_figure((3.2 * len(banks), 3.2))
  axes = np.atleast_1d(fig.subplots(1, len(banks)))
  h, inj = project(honest), project(injected)
  for ax, (strategy, bank) in zip(axes, banks.items()):
    b = project(bank)
    ax.scatter(h[:, 0], h[:, 1], s=2, c="0.75", label="honest patches")
    ax.scatter(inj[:, 0], inj[:, 1], s=4, c="tab:red", label="injected defects")
    ax.scatter(b[:, 0], b[:, 1], s=2, c="tab:blue", alpha=0.6, label="global bank")
    ax.set_title(strategy, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0].legend(fontsize=7, markerscale=3, loc="best")
  fig.tight_layout()
  return reporting.save_figure(fig, path, dpi=80)


_METRIC_HEADERS = {"image_auroc": "image AUROC (all defects)",
                   "image_auroc_p1": "image AUROC (p = 1)",
                   "recall_at_5fpr": "recall at 5% FPR"}

_SEVERITY_KEYS = (("image_auroc_p1_3", "p = 1/3"), ("image_auroc_p2_3", "p = 2/3"),
                  ("image_auroc_p1", "p = 1"))


def _severity_note(central: dict) -> list[str]:
  """Lines on the centralised bank's AUROC per ELPV defect probability (empty elsewhere)."""
  if "image_auroc_ceiling" not in central:
    return []
  parts = ", ".join(f"{label} {central[key]:.3f}" for key, label in _SEVERITY_KEYS
                    if key in central)
  return ["", f"Centralised image AUROC of each defect probability against the functional "
          f"cells: {parts}. The all-defects AUROC is the defect-count-weighted mean of "
          "these, so the uncertain cells bound it: with every p = 1 cell caught and the "
          f"rest unchanged it would be {central['image_auroc_ceiling']:.3f}. InCTRL "
          "(CVPR 2024) scores ELPV with the p = 1 cells as the only anomalies: its "
          "protocol is the p = 1 column."]


_BYZANTINE_ROWS_NOTE = (
  "Bank rows from the Byzantine client: rows of the global bank that are exact "
  "copies of patches the malicious client submitted (the coordinate-wise rules "
  "synthesise new rows, so 0 there). Without defence, greedy k-center selection "
  "takes the far-away poisoned patches first: they displace honest patches from "
  "the bank (coverage is lost) but are rarely any test patch's nearest neighbour, "
  "so the AUROC loss is the cost of the lost coverage.")


def _federated_sections(results: dict) -> list[tuple[str, dict]]:
  """``(partition, {strategy: {attack: results}})`` of a run, the config's partition first."""
  config = results.get("config", {}).get("federated", {})
  sections = []
  if "federated" in results:
    sections.append((config.get("partition", "config"), results["federated"]))
  sections += [(key[len("federated_"):], value) for key, value in results.items()
               if key.startswith("federated_")]
  return sections


def _change_table(by_strategy: dict, metric: str) -> str:
  attacks = [a for a in next(iter(by_strategy.values())) if a != "clean"]
  rows = [[strategy] + [f"{by_attack[a][metric] - by_attack['clean'][metric]:+.3f}"
                        for a in attacks] for strategy, by_attack in by_strategy.items()]
  return reporting.markdown_table(["strategy"] + attacks, rows)


def markdown(results: dict) -> str:
  """The ``results.md`` report of a :func:`run`'s results."""
  central = results["centralized"]
  keys = [k for k in _METRIC_HEADERS if k in central]
  header = ("setting", "bank size", "bank rows from the Byzantine client", "clients flagged")
  header += tuple(_METRIC_HEADERS[k] for k in keys)
  rows = [("centralised", central["bank_size"], "-", "-")
          + tuple(f"{central[k]:.3f}" for k in keys)]
  lines = ["# PatchCore results", "", reporting.markdown_table(header, rows)]
  if "synthetic" in results:
    syn = results["synthetic"]
    lines += ["", "Synthetic defects (centralised bank): "
              f"image AUROC {syn['image_auroc']:.3f}, pixel AUROC {syn['pixel_auroc']:.3f}, "
              f"AUPRO@0.3 {syn['aupro']:.3f}."]
  lines += _severity_note(central)
  for partition, by_strategy in _federated_sections(results):
    rows = [(f"{strategy} / {attack}", res["bank_size"], res["bank_rows_from_byzantine"],
             res["num_flagged"]) + tuple(f"{res[k]:.3f}" for k in keys)
            for strategy, by_attack in by_strategy.items() for attack, res in by_attack.items()]
    lines += ["", f"## Federated, clients split by `{partition}`", "",
              reporting.markdown_table(header, rows), "",
              "Change of image AUROC under attack, relative to the same strategy clean:", "",
              _change_table(by_strategy, "image_auroc"), "",
              "Change of recall at the threshold that flags 5% of the good cells "
              "(set per bank on the test set's good cells), relative to the same strategy clean:",
              "", _change_table(by_strategy, "recall_at_5fpr")]
  if len(lines) > 3:
    lines += ["", _BYZANTINE_ROWS_NOTE]
  return "\n".join(lines) + "\n"


def headline(results: dict) -> str:
  """Short figures for the README: the centralised image AUROC and, when run,
  ``defect_injection``'s effect on ``federated_coreset`` and ``supported_coreset``."""
  central = results["centralized"]
  text = f"centralised image AUROC {central['image_auroc']:.3f}"
  if "image_auroc_p1" in central:
    text += f" ({central['image_auroc_p1']:.3f} on p=1 defects)"
  for partition, by_strategy in _federated_sections(results):
    shown = [f"{s} {by_strategy[s]['clean']['image_auroc']:.3f} -> "
             f"{by_strategy[s]['defect_injection']['image_auroc']:.3f}"
             for s in ("federated_coreset", "supported_coreset")
             if "defect_injection" in by_strategy.get(s, {})]
    if shown:
      text += f"; {partition}, clean -> defect_injection: " + ", ".join(shown)
  return text


def _patch_features(config, data, log, start):
  """``(feature_fn, variables, train_features, test_features)`` of the backbone."""
  bb = config.backbone
  variables = None
  if bb.name == "wide_resnet50_2":
    variables = wide_resnet.load_torchvision_weights(bb.weights)
  fn, variables, stride = features.make_patch_feature_fn(
    bb.name, tuple(bb.layers) or None, bb.embed_dim, bb.target_dim, variables,
    neighbourhood=bb.neighbourhood, standardize=bb.standardize_intensity)
  train_feats = features.extract_patch_features(fn, variables, data.train_images, bb.batch_size,
                                                progress="train features")
  test_feats = features.extract_patch_features(fn, variables, data.test_images, bb.batch_size,
                                               progress="test features")
  log(f"patch grid {train_feats.shape[1:3]} (stride {stride}), dim {train_feats.shape[-1]}; "
      f"{train_feats.shape[0] * train_feats.shape[1] * train_feats.shape[2]} train patches "
      f"[{time.time() - start:.0f}s]")
  return fn, variables, train_feats, test_feats


def _centralized(config, key, train_feats, test_feats, data, log):
  """The centralised bank and its results."""
  all_train = jnp.asarray(train_feats.reshape(-1, train_feats.shape[-1]))
  bank_size = config.federated.global_bank_size
  block = config.coreset.block_size
  t = time.time()
  idx = coreset_lib.greedy_coreset(jax.random.fold_in(key, 1), all_train, bank_size,
                                   config.coreset.projection_dim or None, config.coreset.num_starts)
  bank = all_train[idx]
  radius = float(coreset_lib.coverage_radius(all_train, idx, block))
  res, _ = evaluation.evaluate_bank(bank, test_feats, data, block_size=block,
                                    reweight_neighbors=config.reweight_neighbors)
  res.update(bank_size=int(bank_size), coverage_radius=radius, seconds=round(time.time() - t, 1))
  log("centralised: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()
                                   if k.startswith("image")) + f", coverage radius {radius:.3f}")
  return bank, res


def _federated(config, key, train_feats, test_feats, data, log, fn=None, variables=None,
               workdir=None, partition=None, pool_cache=None):
  """``{strategy: {"clean" or attack: results}}`` of the federated banks.

  ``partition`` overrides the config's; ``pool_cache`` (a dict) keeps the
  features of the real defect pool between partitions.
  """
  fed, cs = config.federated, config.coreset
  dim = train_feats.shape[-1]
  parts = partition_clients(data.train_groups, config, partition)
  pool_cache = {} if pool_cache is None else pool_cache
  log(f"{partition or fed.partition}: {len(parts)} clients, images per client "
      f"{[len(p) for p in parts]}")
  coresets = federated.local_coresets(jax.random.fold_in(key, 2),
                                      [train_feats[p].reshape(-1, dim) for p in parts],
                                      fed.local_bank_size, cs.projection_dim or None,
                                      cs.num_starts)
  byzantine = np.zeros(len(parts), bool)
  byzantine[list(fed.byzantine_clients)] = True
  attacks = ("clean",) + tuple(fed.attacks)
  byzantine_images = data.train_images[np.concatenate([parts[i] for i in np.flatnonzero(byzantine)])]

  def defects(attack):
    if attack == "defect_injection" and attack in pool_cache:  # the pool does not depend on
      return pool_cache[attack]                                 # the partition
    pool_cache[attack] = defect_features(config, attack, fn, variables, data, byzantine_images)
    return pool_cache[attack]

  submissions = {a: submitted_coresets(
    config, jax.random.fold_in(key, 100 + a_i), coresets, byzantine, a,
    defects(a) if a in DEFECT_ATTACKS else None) for a_i, a in enumerate(attacks)}
  out: dict[str, dict[str, Any]] = {}
  pca_banks = {}
  for strategy in fed.strategies:
    robust = robustness(config, strategy)
    out[strategy] = {}
    for attack in attacks:
      t = time.time()
      submitted = submissions[attack]
      bank, info = federated.build_global_bank(jax.random.fold_in(key, 3), submitted,
                                               fed.global_bank_size, robust,
                                               cs.projection_dim or None, cs.num_starts)
      if attack == "defect_injection":
        pca_banks[strategy] = np.asarray(bank)
      res, _ = evaluation.evaluate_bank(bank, test_feats, data, block_size=cs.block_size,
                                        reweight_neighbors=config.reweight_neighbors)
      res["bank_rows_from_byzantine"] = evaluation.rows_in_bank(
        bank, np.asarray(submitted)[byzantine])
      if info["support_z"] is not None:
        res["support_z"] = np.round(np.asarray(info["support_z"]), 2).tolist()
      res.update(bank_size=int(bank.shape[0]), num_flagged=info["num_flagged"],
                 kept=np.asarray(info["kept"]).astype(int).tolist(),
                 seconds=round(time.time() - t, 1))
      if info["client_scores"] is not None:
        res["client_scores"] = np.round(np.asarray(info["client_scores"].scores), 3).tolist()
      out[strategy][attack] = res
      log(f"federated {partition or fed.partition} {strategy:18s} {attack:15s} image AUROC {res['image_auroc']:.3f}"
          + (f" (p=1: {res['image_auroc_p1']:.3f})" if "image_auroc_p1" in res else "")
          + f", bank {res['bank_size']}, flagged {res['num_flagged']} [{res['seconds']}s]")
  if pca_banks and workdir and partition is None:
    submitted = np.asarray(submissions["defect_injection"])
    num = max(1, int(round(fed.poison_fraction * submitted.shape[1])))
    save_bank_pca(os.path.join(workdir, BANK_PCA),
                  submitted[~byzantine].reshape(-1, dim),
                  submitted[byzantine][:, -num:].reshape(-1, dim), pca_banks)
  return out


def _synthetic(config, workdir, fn, variables, bank, data, log):
  """Pixel-level metrics on synthetic defects (the centralised bank); their maps."""
  syn_cfg = config.synthetic
  good = np.flatnonzero(data.test_labels == 0)[:syn_cfg.num_images]
  syn = synthetic_defects.add_synthetic_defects(data.test_images[good], seed=config.seed + 7,
                                                defect_fraction=syn_cfg.defect_fraction)
  syn_feats = features.extract_patch_features(fn, variables, syn.images, config.backbone.batch_size,
                                              progress="synthetic features")
  patch = np.asarray(score_patches(syn_feats, jnp.asarray(bank), 1, config.coreset.block_size))
  maps = np.asarray(features.anomaly_maps(jnp.asarray(patch), tuple(syn.images.shape[1:3]),
                                          float(config.sigma)))
  res = {"image_auroc": metrics.image_auroc(patch.max(axis=(1, 2)), syn.labels),
         "pixel_auroc": metrics.pixel_auroc(maps, syn.masks),
         "aupro": metrics.aupro(maps, syn.masks, 0.3),
         "num_images": int(len(good)), "num_defective": int(syn.labels.sum())}
  log("synthetic: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items() if isinstance(v, float)))
  show = np.r_[np.flatnonzero(syn.labels == 1)[:config.num_map_images - 2],
               np.flatnonzero(syn.labels == 0)[:2]]
  save_anomaly_maps(os.path.join(workdir, SYNTHETIC_MAPS), syn.images[show], maps[show],
                    syn.masks[show], [str(syn.defect_types[i]) for i in show])
  return res


def _test_maps(config, workdir, test_feats, bank, data):
  """Anomaly maps of good and defective test cells side by side, with the centralised bank.

  Titles give each cell's image score and whether it is above the threshold
  that flags 5% of all good test cells.
  """
  scores = np.asarray(score_patches(test_feats, jnp.asarray(bank), 1,
                                    config.coreset.block_size))
  image_scores = scores.max(axis=(1, 2))
  threshold = metrics.threshold_at_fpr(image_scores, data.test_labels, 0.05)
  num_good = max(1, config.num_map_images // 2)
  defective = np.flatnonzero(data.test_labels == 1)
  defective = defective[np.argsort(-data.test_severity[defective], kind="stable")]
  real = np.r_[np.flatnonzero(data.test_labels == 0)[:num_good],
               defective[:config.num_map_images - num_good]]
  maps = np.asarray(features.anomaly_maps(jnp.asarray(scores[real]),
                                          tuple(data.test_images.shape[1:3]), float(config.sigma)))
  return save_anomaly_maps(os.path.join(workdir, TEST_MAPS), data.test_images[real], maps,
                           None if data.test_masks is None else data.test_masks[real],
                           [str(data.test_categories[i]) for i in real],
                           image_scores[real], threshold)


ABLATION_MD = "ablation.md"


def _variant(config, overrides: str):
  """A copy of ``config`` with the ``;``-separated ``field=value`` overrides."""
  from robustfl_jax.experiments.config import apply_overrides
  variant = config.copy_and_resolve_references()
  variant.unlock()
  apply_overrides(variant, [o.strip() for o in overrides.split(";") if o.strip()])
  return variant


def ablation(config, workdir: str, *, log: Callable[[str], None] = print,
             fresh: bool = False,
             on_row: Optional[Callable[[list], None]] = None) -> list[dict[str, Any]]:
  """Centralised PatchCore for each variant of ``config.ablation``: what moves the AUROC.

  Each entry of ``config.ablation`` is ``;``-separated config overrides
  (``""`` is the config itself), e.g. ``"data.image_size=300"`` or
  ``"backbone.layers=('stage2', 'stage3')"``. Only the centralised bank is
  built (no clients, no synthetic defects). Patch features are extracted
  once per data + backbone setting and shared by the variants that only
  change the bank or the scoring.

  ``on_row`` is called with the rows so far after each variant (the files
  are rewritten then too, so a stopped run keeps its finished rows).

  Returns:
    One row per variant (also written to ``results.json`` and
    ``ablation.md``): ``variant``, the image metrics (the mean over
    ``config.ablation_seeds`` coreset seeds, default 1; seed 0 is the main
    run's coreset key) and each one's ``<metric>_sd`` (sample sd, 0 for one
    seed), ``seeds``, ``train_images``, ``patches``, ``bank_size``,
    ``seconds`` (features included when they were extracted for it).

  Raises:
    ValueError: no ``ablation`` field, or an invalid override.
  """
  if not config.get("ablation"):
    raise ValueError("config.ablation is empty: give ';'-separated overrides per variant")
  num_seeds = config.get("ablation_seeds", 1)
  if not isinstance(num_seeds, int) or num_seeds < 1:
    raise ValueError(f"ablation_seeds must be an int >= 1; got {num_seeds!r}")
  variants = [_variant(config, overrides) for overrides in config.ablation]
  for variant in variants:  # every row's settings are checked before the first runs
    validate(variant)
  workdir_lib.prepare(workdir, config, kind="patchcore_ablation", fresh=fresh, log=log)
  key = jax.random.key(config.seed)
  # Seed 0 is the main run's coreset key; the others only reseed the coreset.
  keys = [key] + [jax.random.fold_in(key, 1000 + i) for i in range(1, num_seeds)]
  cache: dict[str, Any] = {}
  rows = []
  for overrides, variant in zip(config.ablation, variants):
    t = time.time()
    feature_key = json.dumps([variant.data.to_dict(), variant.backbone.to_dict()], sort_keys=True,
                             default=str)
    if feature_key not in cache:
      cache.clear()  # one feature set in memory at a time
      data = load_data(variant)
      cache[feature_key] = (data,) + _patch_features(variant, data, log, t)[2:]
    data, train_feats, test_feats = cache[feature_key]
    runs = [_centralized(variant, k, train_feats, test_feats, data, lambda line: None)[1]
            for k in keys]
    metric_keys = [k for k in runs[0] if k.startswith(("image_auroc", "recall"))]
    row = {"variant": overrides or "(config)", "train_images": int(len(train_feats)),
           "patches": int(np.prod(train_feats.shape[:3])), "bank_size": runs[0]["bank_size"],
           "seeds": num_seeds,
           **{k: float(np.mean([r[k] for r in runs])) for k in metric_keys},
           **{k + "_sd": float(np.std([r[k] for r in runs], ddof=1)) if num_seeds > 1 else 0.0
              for k in metric_keys},
           "seconds": round(time.time() - t, 1)}
    rows.append(row)
    log(f"ablation {row['variant']}: image AUROC {row['image_auroc']:.3f} "
        f"+- {row['image_auroc_sd']:.3f} [{row['seconds']}s]")
    reporting.write_json(os.path.join(workdir, RESULTS_JSON),
                         {"config": json.loads(config.to_json()), "ablation": rows}, indent=2)
    reporting.write_text(os.path.join(workdir, ABLATION_MD), ablation_markdown(rows))
    if on_row is not None:
      on_row(rows)
  return rows


_ABLATION_HEADERS = {"image_auroc": "image AUROC (all defects)", **dict(_SEVERITY_KEYS),
                     "image_auroc_ceiling": "all defects if every p = 1 cell were caught",
                     "recall_at_5fpr": "recall at 5% FPR"}


def ablation_markdown(rows: Sequence[dict[str, Any]]) -> str:
  """The ablation table of :func:`ablation`'s rows (mean +- sd over the coreset seeds)."""
  keys = [k for k in _ABLATION_HEADERS if k in rows[0]]
  seeds = rows[0].get("seeds", 1)

  def cell(row, k):
    return f"{row[k]:.3f}" + (f" ± {row[k + '_sd']:.3f}" if row.get("seeds", 1) > 1 else "")

  table = reporting.markdown_table(
    ("variant (overrides of the config)", "train cells", "train patches", "bank size")
    + tuple(_ABLATION_HEADERS[k] for k in keys) + ("seconds",),
    [(f"`{r['variant']}`", r["train_images"], r["patches"], r["bank_size"])
     + tuple(cell(r, k) for k in keys) + (r["seconds"],) for r in rows])
  return "\n".join([
    "# PatchCore ablation (centralised bank)", "",
    "Each row changes the config by the overrides shown and builds the centralised bank "
    "only (same test set: the held-out functional cells and the defective cells of the "
    f"config). Figures are the mean ± sd over {seeds} coreset seed(s) on the same features "
    "(seed 0 is the main run's). The p = 1/3, 2/3 and 1 columns are the image AUROC of "
    "the cells of that defect probability against the functional cells; the all-defects "
    "AUROC is their defect-count-weighted mean, so the next column, the same scores with "
    "every p = 1 cell ranked above every functional cell, bounds what any gain on the "
    "certain defects can reach. Seconds include feature extraction when the row needed "
    "new features (2-core CPU unless the header says otherwise).", "", table])


def run(config, workdir: str, *, log: Callable[[str], None] = print,
        fresh: bool = False) -> dict[str, Any]:
  """Runs the whole experiment of a ``configs/patchcore_*.py`` config.

  Args:
    config: the experiment config.
    workdir: output folder (created): ``results.json``, ``results.md``,
      ``anomaly_maps_test.png`` and, with synthetic defects,
      ``anomaly_maps_synthetic.png``.
    log: called with one line per step.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).

  Returns:
    The results also written to ``results.json``: ``config``,
    ``centralized`` (``image_auroc``, ``image_auroc_p1`` on ELPV,
    ``bank_size``, ``coverage_radius``, ``seconds``), ``federated``
    (``{strategy: {"clean" or attack: ...}}``, when there are clients),
    ``synthetic`` (when synthetic defects are drawn) and ``seconds``.

  Raises:
    ValueError: an invalid setting (data set, partition, strategy, ...).
  """
  validate(config)
  workdir_lib.prepare(workdir, config, kind="patchcore", fresh=fresh, log=log)
  start = time.time()
  key = jax.random.key(config.seed)
  data = load_data(config)
  log(f"data {data.name}: {len(data.train_images)} train, {len(data.test_images)} test "
      f"({int(data.test_labels.sum())} defective), images {data.train_images.shape[1:]}")
  fn, variables, train_feats, test_feats = _patch_features(config, data, log, start)
  results: dict[str, Any] = {"config": json.loads(config.to_json())}
  central_bank, results["centralized"] = _centralized(config, key, train_feats, test_feats,
                                                      data, log)
  if config.federated.num_clients > 0:
    pool_cache: dict[str, np.ndarray] = {}
    results["federated"] = _federated(config, key, train_feats, test_feats, data, log,
                                      fn, variables, workdir, pool_cache=pool_cache)
    for partition in config.federated.get("extra_partitions", ()):
      results[f"federated_{partition}"] = _federated(
        config, key, train_feats, test_feats, data, log, fn, variables, workdir, partition,
        pool_cache)
  if config.synthetic.num_images > 0:
    results["synthetic"] = _synthetic(config, workdir, fn, variables, central_bank, data, log)
  _test_maps(config, workdir, test_feats, central_bank, data)
  results["seconds"] = round(time.time() - start, 1)
  reporting.write_json(os.path.join(workdir, RESULTS_JSON), results, indent=2)
  reporting.write_text(os.path.join(workdir, RESULTS_MD), markdown(results))
  log(f"wrote {workdir}/{RESULTS_JSON}, {RESULTS_MD}, anomaly_maps_*.png "
      f"[{results['seconds']}s]")
  return results
