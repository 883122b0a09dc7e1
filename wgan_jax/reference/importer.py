"""Importing the reference PyTorch WGAN's checkpoints (no torch needed).

The reference code saves ``netG.state_dict()`` and ``netD.state_dict()`` with
``torch.save`` every epoch (``netG_epoch_N.pth``, ``netD_epoch_N.pth``). This
module reads those files (both of torch's formats: the zip archive of torch
>= 1.6 and the older pickle stream) into numpy arrays without torch and
without running any pickled code, and converts them to wgan_jax variables:

* DCGAN_G / DCGAN_G_nobn / DCGAN_D (any size, extra layers) and MLP_G / MLP_D,
  keyed by the reference's module names (``main.initial:100-512:convt.weight``,
  ``main.pyramid:512:batchnorm.running_mean``, ``main.0.weight``, ...);
* layouts: ConvTranspose2d (in, out, kh, kw) -> (kh, kw, in, out) (our kernel
  keeps PyTorch's tap order, so no flip); Conv2d (out, in, kh, kw) -> HWIO;
  Linear (out, in) -> (in, out), with the MLPs' image side reordered from
  NCHW to NHWC flattening; BatchNorm weight/bias/running_mean/running_var ->
  scale/bias/mean/var;
* the critic's sign: the reference's critic minimises f(real) - f(fake), ours
  (the paper's) maximises it. The two are the same network up to the sign of
  the critic's last layer, so its weight (and, for MLP_D, its bias) is
  negated. Clipping (symmetric), RMSProp (elementwise, even in the gradient)
  and the initialisation (symmetric) commute with that negation, so training
  from an imported state follows the reference's trajectory exactly, with
  ``critic_loss`` = the reference's Loss_D and ``generator_loss`` = its
  Loss_G (``tests/test_parity.py`` checks this step by step).

``config_from_reference`` infers the architecture (image size, channels, nz,
ngf/ndf, extra layers, BatchNorm, MLP) from the files, and
``state_from_reference`` builds a ``WGANState`` from them with fresh optimiser
state (the reference saves none) and ``gen_iter`` 0 (the reference, given
``--netG``/``--netD``, also starts its schedule again).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import math
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from wgan_jax import cli, models
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState, create_state

# ---------------------------------------------------------------------------
# Reading .pth files without torch.

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


# ---------------------------------------------------------------------------
# The reference's module names, and where each tensor goes here.


@dataclasses.dataclass(frozen=True)
class _Entry:
  key: str  # the reference's state_dict key
  shape: tuple[int, ...]  # its shape there
  collection: str  # 'params' or 'batch_stats'
  module: str  # our module name
  leaf: str  # our variable name
  kind: str  # how the layout changes, see _to_flax
  negate: bool = False  # the critic's last layer


def _to_flax(x: np.ndarray, kind: str, data_shape: Sequence[int]) -> np.ndarray:
  if kind == 'convt':  # (in, out, kh, kw) -> (kh, kw, in, out), same taps
    return x.transpose(2, 3, 0, 1)
  if kind == 'conv':  # (out, in, kh, kw) -> (kh, kw, in, out)
    return x.transpose(2, 3, 1, 0)
  if kind == 'linear':  # (out, in) -> (in, out)
    return x.T
  if kind == 'vector':
    return x
  # The MLPs flatten images: the reference as (C, H, W), we as (H, W, C).
  if len(data_shape) != 3:
    return x.T if kind != 'bias_to_data' else x
  h, w, c = data_shape
  if kind == 'linear_from_data':  # (out, C*H*W) -> (H*W*C, out)
    return x.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
  if kind == 'linear_to_data':  # (C*H*W, in) -> (in, H*W*C)
    return x.reshape(c, h, w, -1).transpose(3, 1, 2, 0).reshape(-1, h * w * c)
  if kind == 'bias_to_data':  # (C*H*W,) -> (H*W*C,)
    return x.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
  raise ValueError(kind)


_BN_PARTS = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
             ('running_mean', 'batch_stats', 'mean'),
             ('running_var', 'batch_stats', 'var'))


class _Layout:
  """Builds the list of entries of one network."""

  def __init__(self):
    self.entries: list[_Entry] = []

  def conv(self, name, ours, kind, cin, cout, k, negate=False):
    shape = (cin, cout, k, k) if kind == 'convt' else (cout, cin, k, k)
    self.entries.append(_Entry(f'main.{name}.weight', shape, 'params', ours,
                               'kernel', kind, negate))

  def batchnorm(self, name, ours, c):
    for part, collection, leaf in _BN_PARTS:
      self.entries.append(_Entry(f'main.{name}.{part}', (c,), collection, ours,
                                 leaf, 'vector'))

  def linear(self, index, ours, fan_in, fan_out, kind='linear', bias_kind='vector',
             negate=False):
    self.entries.append(_Entry(f'main.{index}.weight', (fan_out, fan_in), 'params',
                               ours, 'kernel', kind, negate))
    self.entries.append(_Entry(f'main.{index}.bias', (fan_out,), 'params', ours,
                               'bias', bias_kind, negate))


def _dcgan_generator_layout(image_size, nz, nc, ngf, n_extra, use_bn):
  lay = _Layout()
  cngf = models.generator_base_width(image_size, ngf)
  lay.conv(f'initial:{nz}-{cngf}:convt', 'initial_convt', 'convt', nz, cngf, 4)
  if use_bn:
    lay.batchnorm(f'initial:{cngf}:batchnorm', 'initial_bn', cngf)
  size, i = 4, 0
  while size < image_size // 2:
    half = cngf // 2
    lay.conv(f'pyramid:{cngf}-{half}:convt', f'pyramid_{i}_convt', 'convt',
             cngf, half, 4)
    if use_bn:
      lay.batchnorm(f'pyramid:{half}:batchnorm', f'pyramid_{i}_bn', half)
    cngf, size, i = half, size * 2, i + 1
  for t in range(n_extra):
    lay.conv(f'extra-layers-{t}:{cngf}:conv', f'extra_{t}_conv', 'conv',
             cngf, cngf, 3)
    if use_bn:
      lay.batchnorm(f'extra-layers-{t}:{cngf}:batchnorm', f'extra_{t}_bn', cngf)
  lay.conv(f'final:{cngf}-{nc}:convt', 'final_convt', 'convt', cngf, nc, 4)
  return lay.entries


def _dcgan_critic_layout(image_size, nc, ndf, n_extra, use_bn):
  lay = _Layout()
  lay.conv(f'initial:{nc}-{ndf}:conv', 'initial_conv', 'conv', nc, ndf, 4)
  cndf = ndf
  for t in range(n_extra):
    lay.conv(f'extra-layers-{t}:{cndf}:conv', f'extra_{t}_conv', 'conv',
             cndf, cndf, 3)
    if use_bn:
      lay.batchnorm(f'extra-layers-{t}:{cndf}:batchnorm', f'extra_{t}_bn', cndf)
  size, i = image_size // 2, 0
  while size > 4:
    lay.conv(f'pyramid:{cndf}-{2 * cndf}:conv', f'pyramid_{i}_conv', 'conv',
             cndf, 2 * cndf, 4)
    if use_bn:
      lay.batchnorm(f'pyramid:{2 * cndf}:batchnorm', f'pyramid_{i}_bn', 2 * cndf)
    cndf, size, i = 2 * cndf, size // 2, i + 1
  lay.conv(f'final:{cndf}-1:conv', 'final_conv', 'conv', cndf, 1, 4, negate=True)
  return lay.entries


def _mlp_layout(fan_in, width, fan_out, *, generator):
  lay = _Layout()
  sizes = (fan_in, width, width, width, fan_out)
  for i in range(4):
    ours = f'hidden_{i}' if i < 3 else 'out'
    kind, bias_kind = 'linear', 'vector'
    if generator and i == 3:
      kind, bias_kind = 'linear_to_data', 'bias_to_data'
    if not generator and i == 0:
      kind = 'linear_from_data'
    lay.linear(2 * i, ours, sizes[i], sizes[i + 1], kind, bias_kind,
               negate=not generator and i == 3)
  return lay.entries


def _generator_layout(config, data_shape):
  if config.generator == 'mlp':
    return _mlp_layout(config.nz, config.ngf, math.prod(data_shape), generator=True)
  models.make_generator(config, data_shape)  # refuses impossible combinations
  return _dcgan_generator_layout(data_shape[0], config.nz, data_shape[-1],
                                 config.ngf, config.n_extra_layers, not config.no_bn)


def _critic_layout(config, data_shape):
  if config.critic == 'mlp':
    return _mlp_layout(math.prod(data_shape), config.ndf, 1, generator=False)
  models.make_critic(config, data_shape)
  return _dcgan_critic_layout(data_shape[0], data_shape[-1], config.ndf,
                              config.n_extra_layers, config.critic_bn)


# ---------------------------------------------------------------------------
# What a file holds.


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What ``identify`` reads off a state_dict: the network and its sizes.

  ``data_shape`` is (H, W, C) for images, (2,) for points in the plane, or
  None where the file alone cannot tell (an MLP of unusual channel count).
  """
  role: str  # 'generator' or 'critic'
  kind: str  # 'dcgan' or 'mlp'
  fields: dict  # config fields: nz, ngf/ndf, n_extra_layers, no_bn/critic_bn
  data_shape: tuple[int, ...] | None
  flat_size: int = 0  # MLP only: the size of the image side

  def describe(self) -> str:
    if self.data_shape is None:
      data = f'{self.flat_size} outputs' if self.role == 'generator' else \
          f'{self.flat_size} inputs'
    elif len(self.data_shape) == 1:
      data = 'points in the plane'
    else:
      data = f'{self.data_shape[0]}px, {self.data_shape[2]} channel(s)'
    parts = [f'{k}={v}' for k, v in self.fields.items()]
    net = {('generator', 'dcgan'): 'DCGAN generator (netG)',
           ('critic', 'dcgan'): 'DCGAN critic (netD)',
           ('generator', 'mlp'): 'MLP generator (netG)',
           ('critic', 'mlp'): 'MLP critic (netD)'}[self.role, self.kind]
    article = 'an' if self.kind == 'mlp' else 'a'
    return f'{article} {net} for {data}, {", ".join(parts)}'


_DCGAN_NAME = re.compile(
    r'^main\.(initial|pyramid|final|extra-layers-\d+):([\d-]+):(convt|conv|batchnorm)\.')


def _image_shape(flat: int, channels: int, image_size: int):
  """(H, W, C) with C * H * W = flat: the config's channels if set, else 1 or 3
  (never both: 3 s^2 is no square), preferring the config's size."""
  candidates = []
  for c in ((channels,) if channels else (1, 3)):
    s = math.isqrt(flat // c) if flat % c == 0 else 0
    if s and c * s * s == flat:
      candidates.append((s, s, c))
  sized = [x for x in candidates if x[0] == image_size]
  found = sized or candidates
  return found[0] if len(found) == 1 else None


def identify(state_dict: Mapping[str, np.ndarray], channels: int = 0,
             image_size: int = 0) -> Architecture:
  """Which reference network ``state_dict`` is, and its sizes.

  ``channels``/``image_size`` (0: unknown) only settle what an MLP's flat
  image side leaves open.
  """
  keys = list(state_dict)
  shape = lambda k: tuple(state_dict[k].shape)
  if all(re.match(r'^main\.\d+\.(weight|bias)$', k) for k in keys):
    needed = [f'main.{i}.{p}' for i in (0, 2, 4, 6) for p in ('weight', 'bias')]
    if sorted(keys) != sorted(needed) or any(
        len(shape(f'main.{i}.weight')) != 2 for i in (0, 2, 4, 6)):
      raise UserError('not an MLP_G/MLP_D state_dict: expected main.0, main.2, '
                      f'main.4, main.6 (weight, bias), found {", ".join(keys[:8])}')
    width, fan_in = shape('main.0.weight')
    fan_out = shape('main.6.weight')[0]
    if fan_out == 1:  # MLP_D: the score
      flat, fields = fan_in, {'ndf': width}
      role = 'critic'
    else:
      flat, fields = fan_out, {'nz': fan_in, 'ngf': width}
      role = 'generator'
    data_shape = (2,) if flat == 2 else _image_shape(flat, channels, image_size)
    return Architecture(role, 'mlp', fields, data_shape, flat)

  layers = collections.OrderedDict()
  for k in keys:
    m = _DCGAN_NAME.match(k)
    if not m:
      if k.endswith('num_batches_tracked'):
        continue
      raise UserError(f'not a state_dict of the reference WGAN models: unknown key {k!r} '
                      "(expected names such as 'main.initial:100-512:convt.weight')")
    layers.setdefault((m.group(1), m.group(3)), []).append(k)
  weight = lambda stage, kind: next(
      (k for k in layers.get((stage, kind), []) if k.endswith('.weight')), None)
  n_extra = len({k[0] for k in layers if k[0].startswith('extra-layers-')
                 and k[1] in ('conv',)})
  use_bn = any(kind == 'batchnorm' for _, kind in layers)
  pyramid = [k for k in layers.get(('pyramid', 'convt'), [])
             + layers.get(('pyramid', 'conv'), []) if k.endswith('.weight')]
  initial_t, final_t = weight('initial', 'convt'), weight('final', 'convt')
  initial_c, final_c = weight('initial', 'conv'), weight('final', 'conv')
  size = 8 * 2 ** len(pyramid)
  if initial_t and final_t and len(shape(initial_t)) == 4 and len(shape(final_t)) == 4:
    nz = shape(initial_t)[0]
    cngf, nc = shape(final_t)[:2]
    return Architecture('generator', 'dcgan', {
        'nz': nz, 'ngf': cngf, 'n_extra_layers': n_extra, 'no_bn': not use_bn},
                        (size, size, nc))
  if initial_c and final_c and len(shape(initial_c)) == 4:
    ndf, nc = shape(initial_c)[:2]
    return Architecture('critic', 'dcgan', {
        'ndf': ndf, 'n_extra_layers': n_extra, 'critic_bn': use_bn},
                        (size, size, nc))
  raise UserError('not a complete DCGAN_G or DCGAN_D state_dict: it lacks the '
                  'initial or the final layer')


# ---------------------------------------------------------------------------
# Conversion.


def _default_config():
  from wgan_jax import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config()


def _identify_quietly(state_dict, config) -> Architecture | None:
  try:
    return identify(state_dict, config.channels, config.image_size)
  except UserError:
    return None


def reference_data_shape(config, *sources) -> tuple[int, ...]:
  """The shape of one example for ``config`` and the reference files
  ``sources`` (state_dicts or .pth paths): (2,) for an MLP on points in the
  plane, else (image_size, image_size, channels), with the files' channels
  where ``config.channels`` is 0. Compare it with the dataset's shape."""
  state_dicts = [_as_state_dict(s, 'state_dict')[0] for s in sources]
  found = [a for a in (_identify_quietly(sd, config) for sd in state_dicts)
           if a is not None and a.data_shape is not None]
  for arch in found:
    if len(arch.data_shape) == 1:
      return arch.data_shape
  channels = config.channels or next(
      (a.data_shape[-1] for a in found), 0)
  if not channels:
    raise UserError('cannot tell the number of image channels from the files; '
                    'pass --channels.')
  return (config.image_size, config.image_size, channels)


def _agrees(arch: Architecture, config, data_shape, role: str) -> bool:
  """Whether ``arch`` is the architecture the config asks for."""
  kind = config.generator if role == 'generator' else config.critic
  return (arch.role, arch.kind) == (role, kind) and arch.data_shape in (
      None, tuple(data_shape)) and all(
          config[k] == v for k, v in arch.fields.items())


def _convert(state_dict, config, data_shape, role: str, what: str,
             negate: bool = True) -> dict:
  layout = _generator_layout if role == 'generator' else _critic_layout
  entries = layout(config, data_shape)
  missing = [e.key for e in entries if e.key not in state_dict]
  known = {e.key for e in entries}
  extra = [k for k in state_dict
           if k not in known and not k.endswith('num_batches_tracked')]
  wrong = [f'{e.key} {tuple(state_dict[e.key].shape)} (expected {e.shape})'
           for e in entries
           if e.key in state_dict and tuple(state_dict[e.key].shape) != e.shape]
  if missing or extra or wrong:
    arch = _identify_quietly(state_dict, config)
    if arch is not None and not _agrees(arch, config, data_shape, role):
      found = f'it holds {arch.describe()}'
    else:  # unreadable, or the same architecture with keys gone wrong
      problems = []
      for label, items in (('lacks', missing), ('has unexpected', extra),
                           ('has wrong shapes:', wrong)):
        if items:
          more = f' (and {len(items) - 2} more)' if len(items) > 2 else ''
          problems.append(f'{label} {", ".join(items[:2])}{more}')
      found = f'it {"; ".join(problems)}'
    raise UserError(f'{what} does not fit {_expected(config, data_shape, role)}: '
                    f'{found}. Pass the matching flags, or let '
                    'config_from_reference read them from the files.')
  variables = {'params': {}, 'batch_stats': {}}
  for e in entries:
    x = _to_flax(np.asarray(state_dict[e.key], np.float32), e.kind, data_shape)
    if e.negate and negate:
      x = -x
    variables[e.collection].setdefault(e.module, {})[e.leaf] = jnp.asarray(x)
  return variables


def _expected(config, data_shape, role: str) -> str:
  kind = config.generator if role == 'generator' else config.critic
  if len(data_shape) == 3:
    data = f'{data_shape[0]}px, {data_shape[2]} channel(s)'
  else:
    data = 'points in the plane'
  if role == 'generator':
    fields = f'nz={config.nz}, ngf={config.ngf}'
    if kind == 'dcgan':
      fields += f', n_extra_layers={config.n_extra_layers}, no_bn={config.no_bn}'
  else:
    fields = f'ndf={config.ndf}'
    if kind == 'dcgan':
      fields += (f', n_extra_layers={config.n_extra_layers}, '
                 f'critic_bn={config.critic_bn}')
  net = 'MLP' if kind == 'mlp' else 'DCGAN'
  return f'the {net} {role} of this config ({data}, {fields})'


def _as_state_dict(source, name: str):
  """(state_dict, name for messages) of a state_dict or a .pth path."""
  if isinstance(source, Mapping):
    return source, name
  return load_state_dict(source), os.fspath(source)


def _variables(role, source, config, data_shape, negate_last=True) -> dict:
  state_dict, name = _as_state_dict(source, f'the {role} state_dict')
  if data_shape is None:
    data_shape = reference_data_shape(config, state_dict)
  data_shape = tuple(data_shape)
  return _convert(state_dict, config, data_shape, role, name, negate=negate_last)


def generator_variables(state_dict, config, data_shape: Sequence[int] | None = None
                        ) -> dict:
  """The reference generator's state_dict (or its .pth path) as our variables.

  Returns ``{'params': ..., 'batch_stats': ...}`` for
  ``models.make_generator(config, data_shape)``. ``data_shape`` defaults to
  the config's images (channels from the file when ``config.channels`` is 0;
  points when the file is an MLP with 2 outputs). A file that does not fit
  raises ``UserError`` naming what was expected and what the file looks like.
  """
  return _variables('generator', state_dict, config, data_shape)


def critic_variables(state_dict, config, data_shape: Sequence[int] | None = None,
                     *, negate_last: bool = True) -> dict:
  """The reference critic's state_dict (or its .pth path) as our variables.

  As ``generator_variables``; the last layer is negated (see the module
  docstring) unless ``negate_last=False``, which keeps the reference's sign
  (for quantities even in the gradient, such as RMSProp's square averages).
  """
  return _variables('critic', state_dict, config, data_shape, negate_last)


def config_from_reference(generator=None, critic=None, config=None):
  """A config whose architecture fields are those of the reference files.

  ``generator``/``critic`` are state_dicts or .pth paths (either may be
  None); ``config`` (default: ``configs.get_config()``) supplies everything
  else and is not modified. Sets generator/critic (dcgan|mlp), nz, ngf, ndf,
  image_size, channels, n_extra_layers, no_bn and critic_bn as far as the
  files tell them. Files that contradict each other, or a netD given as the
  generator (and vice versa), raise ``UserError``.
  """
  config = copy.deepcopy(config if config is not None else _default_config())
  found = []
  for role, source in (('generator', generator), ('critic', critic)):
    if source is None:
      continue
    state_dict, name = _as_state_dict(source, f'the {role} state_dict')
    try:
      arch = identify(state_dict, config.channels, config.image_size)
    except UserError as e:
      raise UserError(f'{name}: {e}.') from None
    if arch.role != role:
      raise UserError(f'{name} holds {arch.describe()}, not a {role}; pass it as '
                      f'the {arch.role} file.')
    found.append((name, arch))
  if not found:
    raise UserError('config_from_reference needs a generator or a critic file.')
  shapes = {arch.data_shape for _, arch in found if arch.data_shape is not None}
  if len(shapes) > 1:
    raise UserError(' and '.join(f'{n} holds {a.describe()}' for n, a in found)
                    + ': the two nets do not fit the same data.')
  extras = {arch.fields['n_extra_layers'] for _, arch in found
            if 'n_extra_layers' in arch.fields}
  if len(extras) > 1:
    raise UserError(' and '.join(f'{n} holds {a.describe()}' for n, a in found)
                    + ': the reference (and this code) give both nets the same '
                    'n_extra_layers.')
  for name, arch in found:
    if arch.data_shape is None:
      raise UserError(f'{name}: an MLP with {arch.flat_size} image values; cannot '
                      'tell the image size and channels apart: pass --image_size '
                      'and --channels.')
    config[arch.role] = arch.kind
    for field, value in arch.fields.items():
      config[field] = value
    if len(arch.data_shape) == 3:
      config.image_size, config.channels = arch.data_shape[0], arch.data_shape[2]
  return config


def state_from_reference(netG_path, netD_path, config, key: jax.Array, *,  # pylint: disable=invalid-name
                         data_shape: Sequence[int] | None = None,
                         axis_name: str | None = None) -> WGANState:
  """A ``WGANState`` holding the reference's saved networks.

  Either path may be None: that network is freshly initialised from ``key``
  (the reference, too, loads ``--netG`` and ``--netD`` independently). The
  imported networks get their parameters and BatchNorm running statistics
  from the files and fresh optimiser states (the reference saves none);
  ``gen_iter`` is 0. ``config`` must describe the files' architecture (see
  ``config_from_reference``); ``data_shape`` defaults to the config's
  (``key`` and ``axis_name`` as in ``state.create_state``).
  """
  if netG_path is None and netD_path is None:
    raise UserError('nothing to import: pass a generator (netG) or a critic '
                    '(netD) file, or both.')
  sources = {'generator': netG_path, 'critic': netD_path}
  loaded = {role: _as_state_dict(src, role) for role, src in sources.items()
            if src is not None}
  if data_shape is None:
    data_shape = reference_data_shape(config, *(sd for sd, _ in loaded.values()))
  data_shape = tuple(data_shape)
  converted = {}
  for role, (state_dict, name) in loaded.items():
    converted[role] = _convert(state_dict, config, data_shape, role, name)
  make = functools.partial(create_state, config, data_shape, axis_name=axis_name)
  if len(converted) == 2:
    # Nothing of a fresh initialisation survives: trace it (for the structure
    # and the static parts) instead of running it, which takes seconds.
    state = jax.eval_shape(make, key)
    _, _, run_key = jax.random.split(key, 3)  # as create_state derives it
    state = state.replace(gen_iter=jnp.zeros((), jnp.int32),
                          rng=jax.random.key_data(run_key))
  else:
    state = make(key)
  for role, variables in converted.items():
    state = state.replace(**{role: _with_variables(getattr(state, role), variables)})
  if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)):
    raise AssertionError('WGANState has fields state_from_reference does not fill')
  return state


def _with_variables(ts, variables):
  # tree.map also checks that the converted tree is the module's own.
  cast = lambda new, old: jnp.asarray(new, old.dtype)
  params = jax.tree.map(cast, variables['params'], ts.params)
  batch_stats = jax.tree.map(cast, variables['batch_stats'], ts.batch_stats)
  return ts.replace(step=0, params=params, batch_stats=batch_stats,
                    opt_state=ts.tx.init(params))


# ---------------------------------------------------------------------------
# Command line: python -m wgan_jax.torch_import --netG=... --netD=... --workdir=DIR


def import_into_workdir(netG, netD, config, workdir: str) -> str:  # pylint: disable=invalid-name
  """Writes the reference's nets as checkpoint 0 of a run in ``workdir``.

  ``config`` supplies the options the files cannot tell (dataset, training
  options); the architecture comes from the files. ``wgan_jax.generate``
  then samples from ``workdir`` and ``wgan_jax.train --workdir`` continues
  training from it, as the reference does when given --netG and --netD.
  Returns the checkpoint folder.
  """
  from wgan_jax import checkpoints, train  # pylint: disable=g-import-not-at-top
  config = config_from_reference(netG, netD, config)
  data_shape = reference_data_shape(config, *(p for p in (netG, netD) if p))
  ckpt_dir = checkpoints.directory(workdir)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise UserError(f'{ckpt_dir} already holds checkpoints; import into a new '
                    '--workdir.')
  init_key, fixed_noise = train.initial_randomness(config)
  state = state_from_reference(netG, netD, config, init_key, data_shape=data_shape)
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  try:
    ckpt.save(0, state, fixed_noise, data_position=0)
  finally:
    ckpt.close()
  return ckpt.path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  flag_values = flags.FLAGS
  if not (flag_values.netG or flag_values.netD):
    raise UserError('nothing to import: pass --netG, --netD or both.')
  config = cli.build_config()
  path = import_into_workdir(flag_values.netG, flag_values.netD, config,
                             flag_values.workdir)
  print(f'Imported into {path}:\n'
        f'  python -m wgan_jax.generate --workdir={flag_values.workdir} '
        '--num=64 --out=samples.png\n'
        f'  python -m wgan_jax.train --workdir={flag_values.workdir}')


if __name__ == '__main__':
  cli.define_config_flags()
  flags.DEFINE_string('netG', None, "The reference's generator file (netG_epoch_N.pth).")
  flags.DEFINE_string('netD', None, "The reference's critic file (netD_epoch_N.pth).")
  flags.DEFINE_string('workdir', None, 'A new run directory to import into.',
                      required=True)
  app.run(cli.user_errors(main))
