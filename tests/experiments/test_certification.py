"""Randomized-smoothing certification (robustfl_jax.experiments.certification)
with tiny settings."""

import json
import os

import numpy as np
import pytest

from robustfl_jax import adversarial
from robustfl_jax.experiments import certification
from robustfl_jax.experiments import load_config

RESULT_FIELDS = {
    "sigma", "radii", "certified_accuracy", "abstain_rate",
    "mean_radius_of_correct", "base_test_accuracy", "num_points",
    "train_seconds", "certify_seconds", "seconds_per_point", "prediction",
    "radius", "label", "indices"}
POINTS = 4


def tiny_config(**overrides):
  """configs/digits_certify.py: one sigma, 2 rounds, 4 points, few samples."""
  return load_config("digits_certify.py", {
      "certify.sigmas": (0.5,), "num_rounds": 2, "certify.num_points": POINTS,
      "certify.n": 1000, "certify.n0": 20, **overrides})


@pytest.fixture(scope="module")
def certify_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("certify"))
  lines = []
  report = certification.run_certification(tiny_config(), workdir,
                                           log=lines.append)
  return report, workdir, lines


def test_report_has_the_documented_fields(certify_run):
  report, workdir, _ = certify_run
  assert set(report) == {"settings", "device", "total_seconds", "results"}
  (result,) = report["results"]
  assert set(result) == RESULT_FIELDS
  assert result["sigma"] == 0.5 and result["num_points"] == POINTS
  assert len(result["certified_accuracy"]) == len(result["radii"])
  for key in ("prediction", "radius", "label", "indices"):
    assert len(result[key]) == POINTS
  with open(os.path.join(workdir, "certify.json")) as f:
    assert json.load(f) == report
  assert os.path.isdir(os.path.join(workdir, "sigma_0.5", "checkpoints"))


def test_certified_accuracy_is_non_increasing_in_the_radius(certify_run):
  report, _, _ = certify_run
  (result,) = report["results"]
  curve = result["certified_accuracy"]
  assert all(a >= b for a, b in zip(curve, curve[1:]))
  # At each radius: the points predicted correctly and certified that far.
  correct = np.asarray(result["prediction"]) == np.asarray(result["label"])
  radius = np.asarray(result["radius"])
  for r, acc in zip(result["radii"], curve):
    assert acc == pytest.approx(np.mean(correct & (radius >= r)), abs=1e-4)
  abstained = np.asarray(result["prediction"]) == adversarial.ABSTAIN
  assert result["abstain_rate"] == pytest.approx(abstained.mean())


def test_markdown_plot_and_headline(certify_run):
  report, workdir, _ = certify_run
  table = open(os.path.join(workdir, "certify.md")).read()
  assert table == certification.markdown(report) + "\n"
  assert "| sigma | r=0 | r=0.25 |" in table and "| 0.5 |" in table
  with open(os.path.join(workdir, "certify.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  accuracy = report["results"][0]["certified_accuracy"][2]  # r = 0.5
  assert certification.headline(report) == (
      f"certified accuracy at L2 radius 0.5: sigma 0.5 {accuracy:.3f}")


def test_rerun_loads_the_checkpoint_and_certifies_the_same_model(certify_run):
  """The certified model is the final state training returns; a rerun
  restores it from the checkpoint instead, with the same numbers."""
  report, workdir, _ = certify_run
  summary_path = os.path.join(workdir, "sigma_0.5", "summary.json")
  trained_sha = json.load(open(summary_path))["params_sha256"]
  lines = []
  again = certification.run_certification(tiny_config(), workdir,
                                          log=lines.append)
  assert any("resumed from the checkpoint of round 2" in l for l in lines)
  assert json.load(open(summary_path))["params_sha256"] == trained_sha
  timing = {"train_seconds", "certify_seconds", "seconds_per_point"}
  for before, after in zip(report["results"], again["results"]):
    assert ({k: v for k, v in before.items() if k not in timing}
            == {k: v for k, v in after.items() if k not in timing})


def test_point_indices_are_evenly_spaced_and_unique():
  assert certification.point_indices(450, 0).tolist() == list(range(450))
  assert certification.point_indices(450, 3).tolist() == [0, 224, 449]
  assert certification.point_indices(5, 50).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("field, value, message", [
    ("certify.sigmas", (0.5, 0.0), "certify.sigmas"),
    ("certify.alpha", 1.0, "certify.alpha"),
    ("certify.n0", 0, "certify.n0"),
    ("certify.batch_size", 0, "certify.batch_size"),
    ("certify.num_points", -1, "certify.num_points"),
])
def test_bad_certify_fields_are_value_errors(tmp_path, field, value, message):
  with pytest.raises(ValueError, match=message):
    certification.run_certification(tiny_config(**{field: value}),
                                    str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
