"""Reads a PyTorch ``.pth``/``.ckpt`` file into ``{name: numpy array}`` without PyTorch.

torch is a test extra, not a dependency (it is several GB), yet the RealForensics, MAE and
torchvision files users import are ``torch.save`` archives. Their format is public and small:
a zip holding ``<root>/data.pkl`` (a pickle whose tensors are persistent references to
storages) and ``<root>/data/<key>`` (each storage's raw little-endian bytes). This module
unpickles ``data.pkl`` with a restricted unpickler that builds numpy views of those storages
and never imports a class named in the file: anything other than tensors and plain containers
(a Lightning file's hyper-parameters, optimizer classes) becomes an inert placeholder, so
reading an untrusted file runs no code from it.

Only the zip format (torch >= 1.6) is read; the legacy tar/pickle format fails with a message.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any, Dict

import ml_dtypes
import numpy as np
from etils import epath

from fakedet.importers import WeightsError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
  """A storage's class as named in the pickle (``torch.FloatStorage``): only its dtype matters."""

  def __init__(self, name: str):
    self.dtype = _STORAGE_DTYPES[name]


class _Opaque:
  """Stand-in for any class the file names that is not a tensor or a container."""

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs = args, kwargs

  def __setstate__(self, state):
    self.state = state


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied to own memory."""
  del unused
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  array = np.array(view)
  return array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array


def _rebuild_parameter(data, *unused):
  del unused
  return data


_KNOWN = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice, ("builtins", "complex"): complex,
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, source: str):
    super().__init__(io.BytesIO(data))
    self.archive, self.root, self.source = archive, root, source
    self.storages: Dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) in _KNOWN:
      return _KNOWN[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _Storage(name)
    return type(name, (_Opaque,), {"__module__": module})

  def persistent_load(self, pid):
    kind, storage_type, key = pid[0], pid[1], str(pid[2])
    if kind != "storage":
      raise WeightsError(f"{self.source}: unsupported persistent reference {kind!r}")
    if not isinstance(storage_type, _Storage):
      raise WeightsError(f"{self.source}: storage {key} has an unsupported type "
                         f"{storage_type!r}; expected one of {sorted(_STORAGE_DTYPES)}")
    if key not in self.storages:
      raw = self.archive.read(f"{self.root}/data/{key}")
      self.storages[key] = np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder("<"))
    return self.storages[key]


def load(path: str) -> Any:
  """The object ``torch.save`` wrote to ``path`` (local or gs://), tensors as numpy arrays."""
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"--weights={path}: no such file")
  data = p.read_bytes()
  if not zipfile.is_zipfile(io.BytesIO(data)):
    raise WeightsError(f"{path} is not a PyTorch zip archive (torch.save since 1.6); a legacy "
                       f"file can be re-saved with torch.save(torch.load(f), f) in PyTorch")
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if not pickles:
      raise WeightsError(f"{path} is a zip file but holds no <root>/data.pkl: not a torch.save "
                         f"archive")
    root = pickles[0][:-len("/data.pkl")]
    return _Unpickler(archive.read(pickles[0]), archive, root, str(path)).load()

