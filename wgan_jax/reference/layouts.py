"""The reference's networks as state_dict layouts: its module names, where
each tensor goes in our variables (``to_flax``), and ``identify``, which
tells the architecture of a state_dict (DCGAN_G / DCGAN_G_nobn / DCGAN_D of
any size and extra layers, MLP_G / MLP_D)."""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from wgan_jax import models
from wgan_jax.errors import UserError



@dataclasses.dataclass(frozen=True)
class _Entry:
  key: str  # the reference's state_dict key
  shape: tuple[int, ...]  # its shape there
  collection: str  # 'params' or 'batch_stats'
  module: str  # our module name
  leaf: str  # our variable name
  kind: str  # how the layout changes, see to_flax
  negate: bool = False  # the critic's last layer


def to_flax(x: np.ndarray, kind: str, data_shape: Sequence[int]) -> np.ndarray:
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


def generator_layout(config, data_shape):
  if config.generator == 'mlp':
    return _mlp_layout(config.nz, config.ngf, math.prod(data_shape), generator=True)
  models.make_generator(config, data_shape)  # refuses impossible combinations
  return _dcgan_generator_layout(data_shape[0], config.nz, data_shape[-1],
                                 config.ngf, config.n_extra_layers, not config.no_bn)


def critic_layout(config, data_shape):
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
