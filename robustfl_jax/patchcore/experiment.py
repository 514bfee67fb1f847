"""The PatchCore experiment behind scripts/patchcore.py: centralised, federated, attacked.

`run(config, workdir, log)` wires the library together:

1. load the data (ELPV from its pip package, or an MVTec AD / AutoVI folder);
2. extract patch features of all training and test images (progress shown);
3. centralised PatchCore: one greedy coreset of all training patches;
4. federated PatchCore: clients (by cell type, IID or Dirichlet) send local
   coresets; for every strategy and every attack (one client of five
   malicious by default) the server builds the global bank; each bank is
   scored on the same test set;
5. pixel-level metrics on synthetic defects drawn on held-out defect-free
   test images (the centralised bank);
6. writes results.json, results.md and anomaly-map PNGs under `workdir`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax.patchcore import coreset as coreset_lib
from robustfl_jax.patchcore import federated, features, metrics
from robustfl_jax.patchcore.nearest_neighbor import reweighted_image_scores, score_patches


def load_data(config):
  """`AnomalyData` for `config.data`."""
  data = config.data
  if data.name == "elpv":
    from robustfl_jax.data import elpv
    return elpv.load_elpv(image_size=data.image_size, num_test_good=data.num_test_good,
                          max_train=data.max_train or None,
                          max_test_defective=data.max_test_defective or None, seed=config.seed)
  if data.name in ("mvtec", "autovi"):
    from robustfl_jax.data import anomaly_folders
    if not data.dir:
      raise ValueError(f"data.name={data.name!r} reads a folder: pass --config.data.dir=<root>")
    return anomaly_folders.load_anomaly_folder(data.dir, data.category, data.image_size,
                                               layout=data.name, max_train=data.max_train or None,
                                               seed=config.seed)
  raise ValueError(f"unknown data.name {data.name!r}; use 'elpv', 'mvtec' or 'autovi'")


def partition_clients(groups: np.ndarray, config) -> list[np.ndarray]:
  """Client index arrays over the training images."""
  fed = config.federated
  if fed.partition == "cell_type":
    from robustfl_jax.data.elpv import partition_by_cell_type
    return partition_by_cell_type(groups, fed.num_clients, seed=config.seed)
  # The module, not the `partition` function that robustfl_jax.data re-exports.
  from robustfl_jax.data.partition import dirichlet, iid
  if fed.partition == "iid":
    return iid(groups, fed.num_clients, seed=config.seed)
  if fed.partition == "dirichlet":
    return dirichlet(groups, fed.num_clients, fed.dirichlet_alpha, seed=config.seed)
  raise ValueError(f"unknown partition {fed.partition!r}; use 'cell_type', 'iid' or 'dirichlet'")


def image_metrics(image_scores: np.ndarray, data) -> dict[str, float]:
  """Image AUROC on all defective images, and (ELPV) on probability-1 ones only."""
  out = {"image_auroc": metrics.image_auroc(image_scores, data.test_labels)}
  severity = data.test_severity
  certain = (severity == 0) | (severity == 1)
  if data.name == "elpv" and np.any(severity == 1):
    out["image_auroc_p1"] = metrics.image_auroc(image_scores[certain], severity[certain] == 1)
  return out


def _evaluate(bank, test_features, data, block_size, reweight_neighbors=0):
  bank = jnp.asarray(bank)
  bank = bank[jnp.all(jnp.isfinite(bank), axis=1)]
  scores = np.asarray(score_patches(test_features, bank, 1, block_size))
  if reweight_neighbors > 0:  # the paper's Eq. 7 reweighting of the image score
    flat = jnp.asarray(test_features).reshape(len(test_features), -1, test_features.shape[-1])
    image_scores = np.asarray(reweighted_image_scores(
      flat, bank, min(reweight_neighbors, bank.shape[0]), block_size))
  else:
    image_scores = scores.max(axis=(1, 2))
  return image_metrics(image_scores, data), scores


def _save_maps(path, images, maps, masks, titles):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  num = len(images)
  fig, axes = plt.subplots(2, num, figsize=(2.2 * num, 4.6))
  axes = np.asarray(axes).reshape(2, num)
  vmin, vmax = float(np.min(maps)), float(np.max(maps))  # one global scale, never per image
  for i in range(num):
    axes[0, i].imshow(images[i])
    if masks is not None and masks[i].any():
      axes[0, i].contour(masks[i], levels=[0.5], colors="red", linewidths=0.8)
    axes[0, i].set_title(titles[i], fontsize=8)
    axes[1, i].imshow(maps[i], cmap="inferno", vmin=vmin, vmax=vmax)
    for ax in axes[:, i]:
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _markdown(results: dict) -> str:
  lines = ["# PatchCore results", ""]
  central = results["centralized"]
  keys = [k for k in ("image_auroc", "image_auroc_p1") if k in central]
  header = {"image_auroc": "image AUROC (all defects)", "image_auroc_p1": "image AUROC (p = 1)"}
  lines += ["| setting | bank size | bank rows from the Byzantine client | clients flagged | "
            + " | ".join(header[k] for k in keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
  lines.append(f"| centralised | {central['bank_size']} | - | - | "
               + " | ".join(f"{central[k]:.3f}" for k in keys) + " |")
  for strategy, by_attack in results.get("federated", {}).items():
    for attack, res in by_attack.items():
      lines.append(f"| {strategy} / {attack} | {res['bank_size']} | "
                   f"{res['bank_rows_from_byzantine']} | {res['num_flagged']} | "
                   + " | ".join(f"{res[k]:.3f}" for k in keys) + " |")
  lines += ["", "Bank rows from the Byzantine client: rows of the global bank that are exact "
            "copies of patches the malicious client submitted (the coordinate-wise rules "
            "synthesise new rows, so 0 there). Without defence, greedy k-center selection "
            "takes the far-away poisoned patches first: they displace honest patches from "
            "the bank (coverage is lost) but are rarely any test patch's nearest neighbour, "
            "so the AUROC loss is the cost of the lost coverage."]
  if "synthetic" in results:
    syn = results["synthetic"]
    lines += ["", "Synthetic defects (centralised bank): "
              f"image AUROC {syn['image_auroc']:.3f}, pixel AUROC {syn['pixel_auroc']:.3f}, "
              f"AUPRO@0.3 {syn['aupro']:.3f}."]
  if "federated" in results:
    lines += ["", "Change of image AUROC under attack, relative to the same strategy clean:", "",
              "| strategy | " + " | ".join(a for a in next(iter(results["federated"].values()))
                                          if a != "clean") + " |"]
    attacks = [a for a in next(iter(results["federated"].values())) if a != "clean"]
    lines.append("|---|" + "---|" * len(attacks))
    for strategy, by_attack in results["federated"].items():
      clean = by_attack["clean"]["image_auroc"]
      lines.append(f"| {strategy} | " + " | ".join(
        f"{by_attack[a]['image_auroc'] - clean:+.3f}" for a in attacks) + " |")
  return "\n".join(lines) + "\n"


def run(config, workdir: str, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the whole experiment; returns the results dict also written to results.json."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  key = jax.random.key(config.seed)
  data = load_data(config)
  log(f"data {data.name}: {len(data.train_images)} train, {len(data.test_images)} test "
      f"({int(data.test_labels.sum())} defective), images {data.train_images.shape[1:]}")

  bb = config.backbone
  variables = None
  if bb.name == "wide_resnet50_2":
    from robustfl_jax.models import wide_resnet
    variables = wide_resnet.load_torchvision_weights(bb.weights)
  fn, variables, stride = features.make_patch_feature_fn(
    bb.name, tuple(bb.layers) or None, bb.embed_dim, bb.target_dim, variables)
  train_feats = features.extract_patch_features(fn, variables, data.train_images, bb.batch_size,
                                                progress="train features")
  test_feats = features.extract_patch_features(fn, variables, data.test_images, bb.batch_size,
                                               progress="test features")
  dim = train_feats.shape[-1]
  log(f"patch grid {train_feats.shape[1:3]} (stride {stride}), dim {dim}; "
      f"{train_feats.shape[0] * train_feats.shape[1] * train_feats.shape[2]} train patches "
      f"[{time.time() - start:.0f}s]")
  results: dict[str, Any] = {"config": json.loads(config.to_json())}
  block = config.coreset.block_size

  # Centralised PatchCore.
  all_train = jnp.asarray(train_feats.reshape(-1, dim))
  bank_size = config.federated.global_bank_size
  t = time.time()
  idx = coreset_lib.greedy_coreset(jax.random.fold_in(key, 1), all_train, bank_size,
                                   config.coreset.projection_dim or None, config.coreset.num_starts)
  central_bank = all_train[idx]
  radius = float(coreset_lib.coverage_radius(all_train, idx, block))
  central, _ = _evaluate(central_bank, test_feats, data, block, config.reweight_neighbors)
  central.update(bank_size=int(bank_size), coverage_radius=radius,
                 seconds=round(time.time() - t, 1))
  results["centralized"] = central
  log(f"centralised: " + ", ".join(f"{k} {v:.3f}" for k, v in central.items()
                                    if k.startswith("image")) + f", coverage radius {radius:.3f}")

  # Federated PatchCore.
  fed = config.federated
  if fed.num_clients > 0:
    parts = partition_clients(data.train_groups, config)
    client_feats = [train_feats[p].reshape(-1, dim) for p in parts]
    log(f"{len(parts)} clients, images per client {[len(p) for p in parts]}")
    coresets = federated.local_coresets(jax.random.fold_in(key, 2), client_feats,
                                        fed.local_bank_size, config.coreset.projection_dim or None,
                                        config.coreset.num_starts)
    byzantine = np.zeros(len(parts), bool)
    byzantine[list(fed.byzantine_clients)] = True
    results["federated"] = {}
    for s_i, strategy in enumerate(fed.strategies):
      robust = federated.RobustnessConfig(
        enabled=strategy != "federated_coreset",
        aggregation_method=strategy if strategy != "federated_coreset" else "coordinate_median",
        num_byzantine=int(fed.num_byzantine), trim_fraction=fed.trim_fraction,
        client_scoring_method=fed.client_scoring_method, zscore_threshold=fed.zscore_threshold,
        exclude_flagged=fed.exclude_flagged)
      results["federated"][strategy] = {}
      for a_i, attack in enumerate(("clean",) + tuple(fed.attacks)):
        t = time.time()
        submitted = federated.attack_coresets(jax.random.fold_in(key, 100 + a_i), coresets,
                                              jnp.asarray(byzantine), attack)
        bank, info = federated.build_global_bank(jax.random.fold_in(key, 3), submitted,
                                                 fed.global_bank_size, robust,
                                                 config.coreset.projection_dim or None,
                                                 config.coreset.num_starts)
        res, _ = _evaluate(bank, test_feats, data, block, config.reweight_neighbors)
        attacker_rows = {r.tobytes() for r in np.asarray(submitted)[byzantine].reshape(-1, dim)}
        res["bank_rows_from_byzantine"] = int(sum(r.tobytes() in attacker_rows
                                                  for r in np.asarray(bank)))
        res.update(bank_size=int(bank.shape[0]), num_flagged=info["num_flagged"],
                   kept=np.asarray(info["kept"]).astype(int).tolist(),
                   seconds=round(time.time() - t, 1))
        if info["client_scores"] is not None:
          res["client_scores"] = np.round(np.asarray(info["client_scores"].scores), 3).tolist()
        results["federated"][strategy][attack] = res
        log(f"federated {strategy:18s} {attack:15s} image AUROC {res['image_auroc']:.3f}"
            + (f" (p=1: {res['image_auroc_p1']:.3f})" if "image_auroc_p1" in res else "")
            + f", bank {res['bank_size']}, flagged {res['num_flagged']} [{res['seconds']}s]")

  # Pixel-level metrics on synthetic defects.
  syn_cfg = config.synthetic
  if syn_cfg.num_images > 0:
    from robustfl_jax.data import synthetic_defects
    good = np.flatnonzero(data.test_labels == 0)[:syn_cfg.num_images]
    syn = synthetic_defects.add_synthetic_defects(data.test_images[good], seed=config.seed + 7,
                                                  defect_fraction=syn_cfg.defect_fraction)
    syn_feats = features.extract_patch_features(fn, variables, syn.images, bb.batch_size,
                                                progress="synthetic features")
    patch = np.asarray(score_patches(syn_feats, jnp.asarray(central_bank), 1, block))
    maps = np.asarray(features.anomaly_maps(jnp.asarray(patch), tuple(syn.images.shape[1:3]),
                                            float(config.sigma)))
    results["synthetic"] = {
      "image_auroc": metrics.image_auroc(patch.max(axis=(1, 2)), syn.labels),
      "pixel_auroc": metrics.pixel_auroc(maps, syn.masks),
      "aupro": metrics.aupro(maps, syn.masks, 0.3),
      "num_images": int(len(good)), "num_defective": int(syn.labels.sum())}
    log("synthetic: " + ", ".join(f"{k} {v:.3f}" for k, v in results["synthetic"].items()
                                  if isinstance(v, float)))
    show = np.r_[np.flatnonzero(syn.labels == 1)[:config.num_map_images - 2],
                 np.flatnonzero(syn.labels == 0)[:2]]
    _save_maps(os.path.join(workdir, "anomaly_maps_synthetic.png"), syn.images[show], maps[show],
               syn.masks[show], [str(syn.defect_types[i]) for i in show])

  # Maps of real test images, with the centralised bank.
  real = np.r_[np.flatnonzero(data.test_labels == 1)[:config.num_map_images - 2],
               np.flatnonzero(data.test_labels == 0)[:2]]
  patch = np.asarray(score_patches(test_feats[real], jnp.asarray(central_bank), 1, block))
  maps = np.asarray(features.anomaly_maps(jnp.asarray(patch), tuple(data.test_images.shape[1:3]),
                                          float(config.sigma)))
  _save_maps(os.path.join(workdir, "anomaly_maps_test.png"), data.test_images[real], maps,
             None if data.test_masks is None else data.test_masks[real],
             [str(data.test_categories[i]) for i in real])

  results["seconds"] = round(time.time() - start, 1)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(_markdown(results))
  log(f"wrote {workdir}/results.json, results.md, anomaly_maps_*.png [{results['seconds']}s]")
  return results
