"""The one reader of PyTorch ``.pth`` files: ``torch.save``'d state_dicts read
into numpy arrays without torch and without running any pickled code (both of
torch's formats: the zip archive of torch >= 1.6 and the older pickle
stream). The reference importer and the FID Inception weights use it."""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from wgan_jax.errors import UserError


_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c  # torch's legacy (non-zip) format
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'HalfStorage': np.float16, 'BFloat16Storage': jnp.bfloat16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_SAVE_HINT = 'save it with torch.save(net.state_dict(), path), as the reference does'


class _Refused(Exception):
  """The pickle asks for something a state_dict does not contain."""


@dataclasses.dataclass
class _Storage:
  key: str
  dtype: Any
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass
class _Tensor:
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  def to_numpy(self) -> np.ndarray:
    data = self.storage.data
    item = data.dtype.itemsize
    return np.array(np.lib.stride_tricks.as_strided(
        data[self.offset:], self.shape, tuple(s * item for s in self.stride),
        writeable=False))


def _rebuild_tensor(storage, offset, shape, stride, *unused):
  del unused  # requires_grad, backward hooks, metadata
  return _Tensor(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _StorageType:
  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Unpickler(pickle.Unpickler):
  """Unpickles only what a state_dict holds: no class of the file is run."""

  def __init__(self, file, byteorder: str):
    super().__init__(file)
    self.byteorder = byteorder
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if module == 'torch._utils' and name in ('_rebuild_tensor', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch._utils' and name in ('_rebuild_parameter',
                                             '_rebuild_parameter_with_state'):
      return _rebuild_parameter
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise _Refused(f'a pickled {module}.{name}')

  def persistent_load(self, pid):
    kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
    if kind == 'module':
      raise _Refused('a pickled torch.nn.Module')
    if kind != 'storage':
      raise _Refused(f'an unknown torch object ({kind!r})')
    storage_type, key, _, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    key = str(key)
    if key not in self.storages:
      dtype = storage_type.dtype.newbyteorder('<' if self.byteorder == 'little' else '>')
      self.storages[key] = _Storage(key, dtype, numel)
    storage = self.storages[key]
    if view is None:
      return storage
    view_key, offset, size = view  # a slice of the storage (old torch)
    return _SliceOf(storage, offset, size, str(view_key))


@dataclasses.dataclass
class _SliceOf:
  root: _Storage
  offset: int
  numel: int
  key: str

  @property
  def data(self):
    return self.root.data[self.offset:self.offset + self.numel]


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if not pickles:
      raise UserError(f'{path} is a zip file but not a torch.save file; '
                      f'{_SAVE_HINT}.')
    prefix = pickles[0][:-len('data.pkl')]
    byteorder = 'little'
    if prefix + 'byteorder' in names:
      byteorder = archive.read(prefix + 'byteorder').decode().strip()
    with archive.open(pickles[0]) as f:
      unpickler = _Unpickler(f, byteorder)
      result = unpickler.load()
    for storage in unpickler.storages.values():
      raw = archive.read(f'{prefix}data/{storage.key}')
      storage.data = np.frombuffer(raw, storage.dtype, storage.numel)
  return result


class _PlainUnpickler(pickle.Unpickler):
  """For the format's own records (numbers, dicts, lists): no classes at all."""

  def find_class(self, module, name):
    raise _Refused(f'a pickled {module}.{name}')


def _load_legacy(path: str):
  with open(path, 'rb') as f:
    try:
      magic = _PlainUnpickler(f).load()
    except Exception:  # any byte soup, or some other pickle: not torch's
      magic = None
    if magic != _MAGIC_NUMBER:
      raise UserError(f'{path} is not a PyTorch file (torch.save); expected a '
                      "state_dict such as the reference's netG_epoch_N.pth.")
    if _PlainUnpickler(f).load() != _LEGACY_PROTOCOL:
      raise UserError(f'{path}: an unknown PyTorch file version; load it with '
                      'torch.load and save it again with torch.save.')
    sys_info = _PlainUnpickler(f).load()
    little = not isinstance(sys_info, dict) or sys_info.get('little_endian', True)
    byteorder = 'little' if little else 'big'
    unpickler = _Unpickler(f, byteorder)
    result = unpickler.load()
    keys = _PlainUnpickler(f).load()
    for key in keys:
      storage = unpickler.storages[str(key)]
      numel = int(np.frombuffer(f.read(8), '<i8')[0])
      storage.data = np.frombuffer(f.read(numel * storage.dtype.itemsize),
                                   storage.dtype, numel)
  return result


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``torch.save``'d state_dict as {name: numpy array}, without torch.

  Accepts torch's zip format (torch >= 1.6) and its older pickle format; a
  ``module.`` prefix (``nn.DataParallel``) is dropped. Anything else (a whole
  pickled model, a dict of other things, a file that is not torch's) raises
  ``UserError`` saying what was found and what is expected.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f'{path}: no such file; pass the path of a netG_epoch_N.pth '
                    'or netD_epoch_N.pth saved by the reference code.')
  try:
    if zipfile.is_zipfile(path):
      result = _load_zip(path)
    elif tarfile.is_tarfile(path):
      raise UserError(f'{path} is in the tar format of very old PyTorch; load '
                      'it with torch.load and save it again with torch.save.')
    else:
      result = _load_legacy(path)
  except _Refused as e:
    raise UserError(f'{path} holds {e}, not a state_dict; {_SAVE_HINT}.') from None
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError,
          ValueError) as e:
    raise UserError(f'{path} is damaged or not a PyTorch file ({e}); expected '
                    'a state_dict saved with torch.save.') from None
  if not isinstance(result, Mapping) or not all(
      isinstance(k, str) and isinstance(v, _Tensor) for k, v in result.items()):
    if isinstance(result, Mapping):
      what = f'a dict with keys {", ".join(map(repr, list(result)[:5]))}'
    else:
      what = 'a single tensor' if isinstance(result, _Tensor) else \
          f'a {type(result).__name__}'
    raise UserError(f'{path} holds {what}, not a state_dict (parameter name -> '
                    f'tensor); {_SAVE_HINT}.')
  if not result:
    raise UserError(f'{path} holds an empty state_dict; {_SAVE_HINT}.')
  arrays = {k: v.to_numpy() for k, v in result.items()}
  if all(k.startswith('module.') for k in arrays):
    arrays = {k[len('module.'):]: v for k, v in arrays.items()}
  return arrays
