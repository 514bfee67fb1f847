"""WideResNet-50-2: torchvision naming/shapes and loading a zip-format file the test writes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax.models import torch_weights, wide_resnet


def test_wide_resnet50_2_matches_torchvision_shapes():
  shapes = wide_resnet.torchvision_shapes()
  known = {  # torchvision wide_resnet50_2 (width_per_group=128)
    "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,),
    "layer1.0.conv1.weight": (128, 64, 1, 1), "layer1.0.conv2.weight": (128, 128, 3, 3),
    "layer1.0.conv3.weight": (256, 128, 1, 1), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (256, 256, 3, 3), "layer2.0.downsample.1.weight": (512,),
    "layer3.5.conv3.weight": (1024, 512, 1, 1), "layer4.2.bn3.bias": (2048,),
    "fc.weight": (1000, 2048), "fc.bias": (1000,),
  }
  for name, shape in known.items():
    assert shapes[name] == shape, name
  assert "layer1.1.downsample.0.weight" not in shapes and "layer3.6.conv1.weight" not in shapes
  assert sum(np.prod(s) for n, s in shapes.items() if "running" not in n) == 68_883_240


def _conv(x, w, stride, pad):  # NCHW x, OIHW w: torchvision's convention, written independently
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  n, c, h, wd = x.shape
  o, _, kh, kw = w.shape
  oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = np.zeros((n, o, oh, ow))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
      out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
  return out


def _bn(x, sd, name):
  g, b = sd[name + ".weight"], sd[name + ".bias"]
  m, v = sd[name + ".running_mean"], sd[name + ".running_var"]
  return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]


def _reference_forward(sd, x, blocks):
  relu = lambda t: np.maximum(t, 0)  # noqa: E731
  y = relu(_bn(_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
  y = np.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  h, w = (y.shape[2] - 3) // 2 + 1, (y.shape[3] - 3) // 2 + 1
  y = np.max([y[:, :, i:i + 2 * h:2, j:j + 2 * w:2] for i in range(3) for j in range(3)], axis=0)
  for s, nb in enumerate(blocks):
    for b in range(nb):
      p = f"layer{s + 1}.{b}"
      stride = 2 if s > 0 and b == 0 else 1
      out = relu(_bn(_conv(y, sd[p + ".conv1.weight"], 1, 0), sd, p + ".bn1"))
      out = relu(_bn(_conv(out, sd[p + ".conv2.weight"], stride, 1), sd, p + ".bn2"))
      out = _bn(_conv(out, sd[p + ".conv3.weight"], 1, 0), sd, p + ".bn3")
      if p + ".downsample.0.weight" in sd:
        y = _bn(_conv(y, sd[p + ".downsample.0.weight"], stride, 0), sd, p + ".downsample.1")
      y = relu(out + y)
  return y.mean(axis=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]


def test_zip_file_written_by_test_loads_and_matches_independent_forward(tmp_path):
  model = wide_resnet.WideResNet(blocks=(1, 2, 1, 1), base_width=4, width_factor=2, num_classes=7)
  rng = np.random.default_rng(0)
  state = {}
  for name, shape in wide_resnet.torchvision_shapes(model).items():
    if name.endswith("running_var"):
      state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      state[name] = (rng.normal(size=shape) * 0.3).astype(np.float32)
    if name.endswith("running_mean"):
      state[name.replace("running_mean", "num_batches_tracked")] = np.array(10, np.int64)
  path = tmp_path / "wide_resnet_tiny.pth"
  torch_weights.save_state_dict_zip(state, path)
  variables = wide_resnet.load_torchvision_weights(str(path), model)
  x = rng.uniform(0, 255, (2, 32, 40, 3)).astype(np.float32)
  got = np.asarray(model.apply(variables, wide_resnet.normalize_images(x)))
  nchw = np.transpose(np.asarray(wide_resnet.normalize_images(x)), (0, 3, 1, 2)).astype(np.float64)
  want = _reference_forward({k: v.astype(np.float64) for k, v in state.items()}, nchw, (1, 2, 1, 1))
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
  maps = model.apply(variables, jnp.zeros((1, 64, 64, 3)), features=("layer2", "layer3"))
  assert maps["layer2"].shape == (1, 8, 8, 32) and maps["layer3"].shape == (1, 4, 4, 64)


def test_wrong_file_is_rejected(tmp_path):
  model = wide_resnet.WideResNet(blocks=(1, 1, 1, 1), base_width=4, width_factor=2, num_classes=3)
  state = {n: np.zeros(s, np.float32) for n, s in wide_resnet.torchvision_shapes(model).items()}
  state["layer1.0.conv2.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  path = tmp_path / "bad.pth"
  torch_weights.save_state_dict_zip(state, path)
  with pytest.raises(ValueError, match="layer1.0.conv2.weight"):
    wide_resnet.load_torchvision_weights(str(path), model)
  del state["fc.bias"]
  torch_weights.save_state_dict_zip(state, path)
  with pytest.raises(ValueError, match="lack 'fc.bias'|layer1.0.conv2"):
    wide_resnet.load_torchvision_weights(str(path), model)
  with pytest.raises(ValueError, match="torchvision weights file"):
    wide_resnet.load_torchvision_weights("", model)
