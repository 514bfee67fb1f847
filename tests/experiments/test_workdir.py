"""Run integrity: a work directory holds one experiment, nothing in it is
lost, and no resumed run starts from a checkpoint that fails its checks.

Fault injection on the real training loop (experiments.train, in process):
each damaged run must end with the same params_sha256 as an uninterrupted
run of the same config."""

import glob
import hashlib
import json
import os
import shutil

import pytest

from robustfl_jax.experiments import load_config, train
from robustfl_jax.experiments import workdir as workdir_lib

SMALL = {"num_rounds": 12, "eval_every": 4, "checkpoint_every": 4,
         "num_clients": 6, "model.hidden": (8,)}


def _config(**overrides):
  return load_config("digits_fedavg.py", {**SMALL, **overrides})


def _quiet(_):
  pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 12-round run and a copy of it stopped at round 8."""
  root = tmp_path_factory.mktemp("reference")
  full = train(_config(), str(root / "full"), log=_quiet, plot=False)
  partial = str(root / "partial")
  train(_config(num_rounds=8), partial, log=_quiet, plot=False)
  return full.summary["params_sha256"], partial


def _copy(partial, tmp_path):
  target = str(tmp_path / "run")
  shutil.copytree(partial, target)
  return target


def _tree_hashes(folder):
  out = {}
  for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
    if os.path.isfile(path):
      out[os.path.relpath(path, folder)] = hashlib.sha256(
          open(path, "rb").read()).hexdigest()
  return out


def _latest_data_file(run):
  step = max(int(n) for n in os.listdir(os.path.join(run, "checkpoints"))
             if n.isdigit())
  files = [p for p in glob.glob(os.path.join(run, "checkpoints", str(step),
                                             "**", "*"), recursive=True)
           if os.path.isfile(p) and os.sep + "d" + os.sep in p]
  return step, max(files, key=os.path.getsize)


def _resume(run):
  lines = []
  result = train(_config(), run, log=lines.append, plot=False)
  return result.summary, "\n".join(lines)


@pytest.mark.parametrize("overrides,field", [
    ({"aggregator.name": "coordinate_median"}, "aggregator.name"),
    ({"model.hidden": (16,)}, "model.hidden"),
])
def test_another_experiment_is_refused_and_nothing_changes(reference, tmp_path,
                                                           overrides, field):
  _, partial = reference
  run = _copy(partial, tmp_path)
  before = _tree_hashes(run)
  with pytest.raises(workdir_lib.WorkdirError) as err:
    train(_config(**overrides), run, log=_quiet)
  message = str(err.value)
  assert field in message and "--fresh" in message and "\n" not in message
  assert _tree_hashes(run) == before


def test_fresh_moves_everything_aside_and_starts_anew(reference, tmp_path):
  _, partial = reference
  run = _copy(partial, tmp_path)
  before = _tree_hashes(run)
  result = train(_config(**{"aggregator.name": "coordinate_median"}), run,
                 log=_quiet, plot=False, fresh=True)
  assert result.summary["resumed_from_round"] == 0
  (moved,) = glob.glob(os.path.join(run, "previous", "*"))
  assert _tree_hashes(moved) == before


def test_fewer_rounds_than_completed_is_refused(reference, tmp_path):
  _, partial = reference
  run = _copy(partial, tmp_path)
  with pytest.raises(workdir_lib.WorkdirError, match="completed 8 rounds"):
    train(_config(num_rounds=4), run, log=_quiet)


def test_extending_the_run_continues_it_bit_identically(reference, tmp_path):
  expected, partial = reference
  run = _copy(partial, tmp_path)
  summary, log = _resume(run)
  assert "resumed from the checkpoint of round 8" in log
  assert summary["params_sha256"] == expected
  # The earlier (8-round) summary was kept, not overwritten.
  (kept,) = glob.glob(os.path.join(run, "previous", "*", "summary.json"))
  assert json.load(open(kept))["rounds_completed"] == 8


def _flip_bytes(path, count=64):
  data = bytearray(open(path, "rb").read())
  start = len(data) // 2
  for i in range(start, min(start + count, len(data))):
    data[i] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 3])


def _delete_metadata(run, step):
  os.remove(os.path.join(run, "checkpoints", str(step), "_CHECKPOINT_METADATA"))


def _cut_short(run, step):
  """A save killed between orbax's rename and the checksum."""
  os.remove(os.path.join(run, "checkpoints", "checksums", f"{step}.json"))


@pytest.mark.parametrize("damage", ["garble", "truncate", "metadata", "cut"])
def test_a_damaged_latest_step_is_skipped_kept_and_the_run_ends_identical(
    reference, tmp_path, damage):
  expected, partial = reference
  run = _copy(partial, tmp_path)
  step, data_file = _latest_data_file(run)
  {"garble": lambda: _flip_bytes(data_file),
   "truncate": lambda: _truncate(data_file),
   "metadata": lambda: _delete_metadata(run, step),
   "cut": lambda: _cut_short(run, step)}[damage]()
  summary, log = _resume(run)
  warnings = [l for l in log.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and f"checkpoint step {step}" in warnings[0]
  assert f"resumed from the checkpoint of round {step - 4}" in log
  assert summary["params_sha256"] == expected
  kept = glob.glob(os.path.join(run, "checkpoints", f"corrupt_{step}_*"))
  assert any(os.path.isdir(k) for k in kept)


def test_no_verified_step_left_refuses_until_fresh(reference, tmp_path):
  _, partial = reference
  run = _copy(partial, tmp_path)
  for name in os.listdir(os.path.join(run, "checkpoints", "checksums")):
    os.remove(os.path.join(run, "checkpoints", "checksums", name))
  with pytest.raises(workdir_lib.WorkdirError, match="--fresh"):
    train(_config(), run, log=_quiet)
  assert train(_config(), run, log=_quiet, plot=False, fresh=True
               ).summary["rounds_completed"] == 12


def test_unwritable_and_unrecorded_directories_are_refused(tmp_path):
  target = tmp_path / "file"
  target.write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match="cannot be written"):
    workdir_lib.claim(str(target / "run"), _config())
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  (legacy / "metrics.jsonl").write_text("{}\n")
  with pytest.raises(workdir_lib.WorkdirError, match="unrecorded experiment"):
    workdir_lib.claim(str(legacy), _config())


def test_fingerprint_ignores_progress_fields_only():
  a = workdir_lib.result_fields(_config())
  b = workdir_lib.result_fields(_config(num_rounds=99, eval_every=3))
  c = workdir_lib.result_fields(_config(seed=1))
  assert workdir_lib.fingerprint(a) == workdir_lib.fingerprint(b)
  assert workdir_lib.fingerprint(a) != workdir_lib.fingerprint(c)
