"""Reading PyTorch weight files without PyTorch, through a restricted unpickler.

A weights file is untrusted input: a plain `pickle.load` on it would run any
callable the file names. `load_state_dict` instead resolves only the few
globals that a state dict of tensors needs (the tensor-rebuild functions, the
typed-storage classes, `collections.OrderedDict`) and refuses anything else
with `UnsafePickleError`. Tensors come back as NumPy arrays with their logical
shape, whatever strides they were stored with.

Two on-disk formats are read:

* the legacy format (PyTorch < 1.6, still used by many released checkpoints):
  a stream of pickles (magic number, protocol version, system info, the object,
  the list of storage keys) followed by each storage's raw bytes, each
  preceded by its element count as a little-endian int64;
* the zip format (PyTorch >= 1.6): `<archive>/data.pkl` plus one entry
  `<archive>/data/<key>` per storage.

`save_state_dict_zip` writes the zip format (tests and interchange use it).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
  "FloatStorage": np.dtype("<f4"),
  "DoubleStorage": np.dtype("<f8"),
  "HalfStorage": np.dtype("<f2"),
  "LongStorage": np.dtype("<i8"),
  "IntStorage": np.dtype("<i4"),
  "ShortStorage": np.dtype("<i2"),
  "CharStorage": np.dtype("i1"),
  "ByteStorage": np.dtype("u1"),
  "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
  """Raised when a weights file names a callable outside the allow-list."""


class _StorageType:
  """Stands in for `torch.<X>Storage`: only carries the element dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Allow-listed stand-in for `torch._utils._rebuild_tensor(_v2)`."""
  del unused  # requires_grad, backward hooks, metadata: irrelevant to values.
  if not isinstance(storage, np.ndarray) or storage.ndim != 1:
    raise pickle.UnpicklingError("a tensor in the weights file is not backed by a storage")
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  flat = storage
  if not size:
    if not 0 <= int(storage_offset) < flat.size:
      raise pickle.UnpicklingError("scalar tensor offset outside its storage")
    return np.array(flat[int(storage_offset)])
  storage_offset = int(storage_offset)
  extent = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
  numel = int(np.prod(size))
  # Bounds and size checks: a crafted file must not read outside its storage
  # or expand a small storage into a huge array (stride-0 views).
  if storage_offset < 0 or min(size) < 0 or (numel > 0 and (
      extent > flat.size or min(stride) < 0 or numel > flat.size - storage_offset)):
    raise pickle.UnpicklingError(
      f"tensor of size {size} and stride {stride} at offset {storage_offset} "
      f"does not fit its storage of {flat.size} elements")
  view = np.lib.stride_tricks.as_strided(
    flat[storage_offset:], shape=size,
    strides=tuple(s * flat.itemsize for s in stride), writeable=False)
  return np.array(view, order="C")


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  del requires_grad, backward_hooks, unused
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})
_REBUILD_NAMES = (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"))


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler resolving only allow-listed globals; storages via a callback."""

  def __init__(self, file, load_storage: Callable[[tuple], Any], rebuild=None):
    super().__init__(file)
    self._load_storage = load_storage
    self._globals = dict(_ALLOWED_GLOBALS)
    if rebuild is not None:
      self._globals.update({name: rebuild for name in _REBUILD_NAMES})

  def find_class(self, module: str, name: str):
    try:
      return self._globals[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f"refusing to load global '{module}.{name}': a weights file may only "
        "rebuild tensors (allowed: "
        + ", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)) + ")"
      ) from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
        and isinstance(pid[1], _StorageType)):
      raise UnsafePickleError(f"unexpected persistent id in weights file: {pid!r}")
    return self._load_storage(pid)


def _check_state_dict(obj) -> dict[str, np.ndarray]:
  if not isinstance(obj, Mapping):
    raise pickle.UnpicklingError(
      f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
  out = {}
  for key, value in obj.items():
    if isinstance(value, Mapping):  # e.g. {'state_dict': {...}} checkpoints
      for sub_key, sub_value in _check_state_dict(value).items():
        out[f"{key}.{sub_key}"] = sub_value
    elif isinstance(value, np.ndarray):
      out[str(key)] = value
    # Non-tensor entries (epoch counters, strings) carry no weights: skipped.
  return out


def _load_legacy(file) -> dict[str, np.ndarray]:
  header = []
  for _ in range(3):  # magic number, protocol version, system info
    header.append(_RestrictedUnpickler(file, _no_storage).load())
  if header[0] != _LEGACY_MAGIC:
    raise pickle.UnpicklingError("not a PyTorch legacy-format file (bad magic number)")
  if not isinstance(header[2], Mapping) or not header[2].get("little_endian", True):
    raise pickle.UnpicklingError("big-endian PyTorch files are not supported")

  wanted: dict[str, tuple[np.dtype, list]] = {}

  def load_storage(pid):
    _, storage_type, key, _location, numel = pid[:5]
    view_metadata = pid[5] if len(pid) > 5 else None
    holder = wanted.setdefault(str(key), (storage_type.dtype, [None]))
    return _LazyStorage(holder, int(numel), view_metadata)

  lazy_rebuild = lambda storage, *args: _LazyTensor(storage, args)  # noqa: E731
  obj = _RestrictedUnpickler(file, load_storage, rebuild=lazy_rebuild).load()
  keys = _RestrictedUnpickler(file, _no_storage).load()
  if not isinstance(keys, list):
    raise pickle.UnpicklingError("corrupt legacy PyTorch file: no storage key list")
  for key in keys:
    (numel,) = struct.unpack("<q", file.read(8))
    dtype, slot = wanted.get(str(key), (np.dtype("u1"), [None]))
    raw = file.read(numel * dtype.itemsize)
    if len(raw) != numel * dtype.itemsize:
      raise pickle.UnpicklingError(f"truncated PyTorch file: storage {key} is short")
    slot[0] = np.frombuffer(raw, dtype=dtype)
  return _resolve_lazy(obj)


class _LazyStorage:
  """A storage whose bytes follow the pickle in the legacy format."""

  def __init__(self, holder, numel, view_metadata):
    self.holder, self.numel, self.view_metadata = holder, numel, view_metadata


class _LazyTensor:
  def __init__(self, storage, args):
    self.storage, self.args = storage, args


def _resolve_lazy(obj):
  if isinstance(obj, _LazyTensor) and not isinstance(obj.storage, _LazyStorage):
    raise pickle.UnpicklingError("a tensor in the weights file is not backed by a storage")
  if isinstance(obj, _LazyTensor):
    data = obj.storage.holder[1][0]
    if data is None:
      raise pickle.UnpicklingError("corrupt legacy PyTorch file: missing storage")
    if obj.storage.view_metadata is not None:
      _, offset, view_size = obj.storage.view_metadata
      data = data[int(offset):int(offset) + int(view_size)]
    return _rebuild_tensor(data, *obj.args)
  if isinstance(obj, Mapping):
    return collections.OrderedDict((k, _resolve_lazy(v)) for k, v in obj.items())
  return obj


def _no_storage(pid):
  raise UnsafePickleError(f"unexpected storage reference {pid!r} in a file header")


def _load_zip(path: str) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise pickle.UnpicklingError(
        f"{path} is a zip file but not a PyTorch checkpoint (no unique data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and archive.read(byteorder).strip() != b"little":
      raise pickle.UnpicklingError("big-endian PyTorch files are not supported")

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid[:5]
      entry = f"{prefix}data/{key}"
      if entry not in names:
        raise pickle.UnpicklingError(f"corrupt PyTorch zip file: no entry {entry}")
      raw = archive.read(entry)
      data = np.frombuffer(raw, dtype=storage_type.dtype)
      if data.size < int(numel):
        raise pickle.UnpicklingError(f"truncated PyTorch zip file: storage {key} is short")
      return data

    with archive.open(pickles[0]) as file:
      obj = _RestrictedUnpickler(io.BytesIO(file.read()), load_storage).load()
  return _check_state_dict(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict (legacy or zip format) as NumPy arrays.

  Args:
    path: a `.pth`/`.pt` file written by `torch.save(model.state_dict(), path)`.

  Returns:
    An insertion-ordered dict from parameter name to a C-contiguous array.
    Nested dicts (e.g. `{'state_dict': {...}}`) are flattened with dots;
    non-tensor entries are dropped.

  Raises:
    UnsafePickleError: the file names a callable outside the tensor-rebuild
    allow-list (under a plain `pickle.load` it could run code).
    pickle.UnpicklingError: the file is not a PyTorch state dict.
    FileNotFoundError: `path` does not exist.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  with open(path, "rb") as file:
    return _check_state_dict(_load_legacy(file))


# ---- writer (zip format) -----------------------------------------------------

_DTYPE_TO_STORAGE = {dtype: name for name, dtype in _STORAGE_DTYPES.items()}


def _pickle_str(text: str) -> bytes:
  raw = text.encode("utf-8")
  return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_int(value: int) -> bytes:
  return b"J" + struct.pack("<i", value)


def _pickle_tuple(items: list[bytes]) -> bytes:
  return b"(" + b"".join(items) + b"t"


def save_state_dict_zip(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike,
            archive_name: str = "archive") -> None:
  """Writes arrays as a PyTorch zip-format state dict (readable by `torch.load`).

  The pickle is emitted opcode by opcode, so writing needs neither PyTorch
  nor any importable `torch` module.

  Args:
    state_dict: name -> array (float32/64/16, int64/32/16/8, uint8, bool).
    path: output file.
    archive_name: the top-level folder inside the zip (torch uses the file stem).
  """
  body = [b"\x80\x02", b"ccollections\nOrderedDict\n)R("]
  storages = {}
  for index, (name, value) in enumerate(state_dict.items()):
    array = np.array(value, order="C")
    dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in _DTYPE_TO_STORAGE:
      raise ValueError(f"cannot write {name}: unsupported dtype {array.dtype}")
    key = str(index)
    storages[key] = array.astype(dtype).tobytes()
    strides = [s // max(array.itemsize, 1) for s in array.strides]
    persistent = _pickle_tuple([
      _pickle_str("storage"), f"ctorch\n{_DTYPE_TO_STORAGE[dtype]}\n".encode(),
      _pickle_str(key), _pickle_str("cpu"), _pickle_int(array.size)])
    args = _pickle_tuple([
      persistent + b"Q", _pickle_int(0),
      _pickle_tuple([_pickle_int(n) for n in array.shape]),
      _pickle_tuple([_pickle_int(s) for s in strides]),
      b"\x89", b"ccollections\nOrderedDict\n)R"])
    body.append(_pickle_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R")
  body.append(b"u.")
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{archive_name}/data.pkl", b"".join(body))
    archive.writestr(f"{archive_name}/byteorder", b"little")
    for key, raw in storages.items():
      archive.writestr(f"{archive_name}/data/{key}", raw)
    archive.writestr(f"{archive_name}/version", b"3\n")
