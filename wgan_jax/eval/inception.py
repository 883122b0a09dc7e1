r"""The FID Inception-v3 network in Flax, and its weights.

FID and KID compare the 2048-d pool3 features of this network on real and on
generated images. The numbers are comparable to published ones only with the
exact network of the TTUR reference (TensorFlow's 2015-12-05 Inception graph),
which pytorch-fid ported to PyTorch: torchvision's Inception-v3 layout with
four patched blocks. Mixed_5b-d, Mixed_6b-e and Mixed_7b average-pool without
counting the padding (TensorFlow's average pool), and Mixed_7c max-pools
where the paper's network average-pools. Every conv is bias-free and followed
by a BatchNorm with eps 0.001 (in inference mode) and a ReLU. Images are
resized to 299x299 bilinearly (PyTorch's ``align_corners=False``, no
antialiasing) and enter in [-1, 1], the range this project's images use.

The weights are pytorch-fid's file, downloaded once by hand (nothing here
downloads; see ``DOWNLOAD_HELP``), then converted to an ``.npz`` of this
module's variables, which loads in a fraction of a second without PyTorch::

  mkdir -p ~/.cache/wgan_jax
  curl -L -o ~/.cache/wgan_jax/pt_inception-2015-12-05-6726825d.pth \
    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  python -m wgan_jax.eval.inception   # writes ~/.cache/wgan_jax/fid_inception_v3.npz

Converting reads the ``.pth`` without PyTorch (``wgan_jax.reference.pth``); ``$WGAN_JAX_CACHE``
moves the directory. The classifier layer (``fc``, 1008 classes) is not
needed for pool3 features and is left out of the converted file.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import linen as nn
from flax import traverse_util

from wgan_jax import files
from wgan_jax.errors import UserError
from wgan_jax.reference import pth

PTH_NAME = 'pt_inception-2015-12-05-6726825d.pth'
PTH_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
           f'fid_weights/{PTH_NAME}')
PTH_SHA256 = '6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2'
CONVERTED_NAME = 'fid_inception_v3.npz'
FORMAT = 'wgan_jax/fid_inception_v3/1'  # stored in converted files
INPUT_SIZE = 299
FEATURES = 2048
# Keys of pytorch-fid's state dict that pool3 features do not use.
UNUSED_TORCH_KEYS = ('fc.weight', 'fc.bias')


def cache_dir() -> str:
  """Where the weights and cached statistics live: $WGAN_JAX_CACHE, else
  $XDG_CACHE_HOME/wgan_jax, else ~/.cache/wgan_jax."""
  if os.environ.get('WGAN_JAX_CACHE'):
    return os.path.expanduser(os.environ['WGAN_JAX_CACHE'])
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
  return os.path.join(os.path.expanduser(base), 'wgan_jax')


def default_pth_path() -> str:
  return os.path.join(cache_dir(), PTH_NAME)


def default_weights_path() -> str:
  return os.path.join(cache_dir(), CONVERTED_NAME)


def download_help(pth_path: str | None = None) -> str:
  """One line: how to get the weights and where to put them."""
  pth_path = pth_path or default_pth_path()
  return (f'download {PTH_NAME} once from {PTH_URL} to {pth_path} '
          f'(mkdir -p {os.path.dirname(pth_path) or "."} && curl -L -o '
          f'{pth_path} {PTH_URL}), then run python -m wgan_jax.eval.inception to '
          'convert it')


# --- the network -------------------------------------------------------------


def _interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) weights of PyTorch's bilinear ``align_corners=False``: output
  pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped to the
  first pixel, between two neighbours, with no antialiasing when shrinking.
  In float32 arithmetic, as PyTorch computes it (float64 positions would
  differ from pytorch-fid's by up to 1e-4 when shrinking)."""
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5),
                   f32(0.0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (src - lo).astype(f32)
  weights = np.zeros((out_size, in_size), f32)
  np.add.at(weights, (np.arange(out_size), lo), f32(1.0) - frac)
  np.add.at(weights, (np.arange(out_size), hi), frac)
  return weights


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """(N, h, w, C) -> (N, size, size, C) as pytorch-fid resizes: PyTorch's
  ``F.interpolate(mode='bilinear', align_corners=False)``, which, unlike
  ``jax.image.resize``, does not antialias when shrinking."""
  _, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  hp = jax.lax.Precision.HIGHEST
  rows, cols = _interpolation_matrix(h, size), _interpolation_matrix(w, size)
  x = jnp.einsum('oh,nhwc->nowc', rows, images, precision=hp)
  return jnp.einsum('pw,nowc->nopc', cols, x, precision=hp)


def check_images(shape) -> None:
  """FID and KID are for images: (N, H, W, 1 or 3)."""
  if len(shape) != 4 or shape[-1] not in (1, 3):
    raise UserError(f'FID and KID need images (N, H, W, 1 or 3 channels); got '
                    f'data of shape {tuple(shape)}.')


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv without bias, BatchNorm(eps=0.001), ReLU."""
  features: int
  kernel_size: Any  # int or (kh, kw)
  strides: int = 1
  padding: Any = 0  # int or (ph, pw), symmetric as PyTorch's
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                ((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TensorFlow's average pool: the zero padding is not counted (the FID patch).
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (FIDInceptionA)."""
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, 1, name='branch1x1')(x)
    b5 = conv(48, 1, name='branch5x5_1')(x)
    b5 = conv(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = conv(64, 1, name='branch3x3dbl_1')(x)
    b3 = conv(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = conv(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, the 35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, 3, strides=2, name='branch3x3')(x)
    bd = conv(64, 1, name='branch3x3dbl_1')(x)
    bd = conv(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = conv(96, 3, strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-e: factorised 7x7 convs (1x7, 7x1) (FIDInceptionC)."""
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(
        kernel_size=(7, 1), padding=(3, 0))
    b1 = conv(192, 1, name='branch1x1')(x)
    b7 = conv(c7, 1, name='branch7x7_1')(x)
    b7 = conv(c7, **row, name='branch7x7_2')(b7)
    b7 = conv(192, **col, name='branch7x7_3')(b7)
    bd = conv(c7, 1, name='branch7x7dbl_1')(x)
    bd = conv(c7, **col, name='branch7x7dbl_2')(bd)
    bd = conv(c7, **row, name='branch7x7dbl_3')(bd)
    bd = conv(c7, **col, name='branch7x7dbl_4')(bd)
    bd = conv(192, **row, name='branch7x7dbl_5')(bd)
    bp = conv(192, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, the 17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, 1, name='branch3x3_1')(x)
    b3 = conv(320, 3, strides=2, name='branch3x3_2')(b3)
    b7 = conv(192, 1, name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, 3, strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (``pool='avg'``, FIDInceptionE_1) and Mixed_7c (``pool='max'``,
  FIDInceptionE_2: the TensorFlow graph max-pools here, unlike the paper)."""
  pool: str = 'avg'
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(
        kernel_size=(3, 1), padding=(1, 0))
    b1 = conv(320, 1, name='branch1x1')(x)
    b3 = conv(384, 1, name='branch3x3_1')(x)
    b3 = jnp.concatenate([conv(384, **row, name='branch3x3_2a')(b3),
                          conv(384, **col, name='branch3x3_2b')(b3)], axis=-1)
    bd = conv(448, 1, name='branch3x3dbl_1')(x)
    bd = conv(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([conv(384, **row, name='branch3x3dbl_3a')(bd),
                          conv(384, **col, name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.pool == 'avg':
      pooled = _avg_pool_3x3(x)
    else:  # padded with -inf, as PyTorch's max_pool2d
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    bp = conv(192, 1, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """Images (N, H, W, 1 or 3) in [-1, 1] -> pool3 features (N, 2048).

  Submodules carry the PyTorch names (``Mixed_6b/branch7x7_2/conv``), so a
  pytorch-fid weight maps to its variable by name. ``resize=False`` skips the
  resize to 299x299: any input of at least 75x75 runs (tests use that).
  ``precision`` of the convs: HIGHEST keeps float32 on GPUs (no TF32) and
  TPUs (no bfloat16), so features do not depend on the accelerator.
  """
  resize: bool = True
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    check_images(x.shape)
    if x.shape[-1] == 1:  # grayscale enters as RGB, as pytorch-fid reads it
      x = jnp.repeat(x, 3, axis=-1)
    if self.resize:
      x = resize_bilinear(x, INPUT_SIZE)
    conv = functools.partial(BasicConv2d, precision=self.precision)
    p = dict(precision=self.precision)
    x = conv(32, 3, strides=2, name='Conv2d_1a_3x3')(x)
    x = conv(32, 3, name='Conv2d_2a_3x3')(x)
    x = conv(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, 1, name='Conv2d_3b_1x1')(x)
    x = conv(192, 3, name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    x = InceptionA(32, **p, name='Mixed_5b')(x)
    x = InceptionA(64, **p, name='Mixed_5c')(x)
    x = InceptionA(64, **p, name='Mixed_5d')(x)
    x = InceptionB(**p, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, **p, name=name)(x)
    x = InceptionD(**p, name='Mixed_7a')(x)
    x = InceptionE('avg', **p, name='Mixed_7b')(x)
    x = InceptionE('max', **p, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


@functools.cache
def _variable_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  shapes = jax.eval_shape(FIDInceptionV3(resize=False).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  flat = traverse_util.flatten_dict(shapes, sep='/')
  return tuple((k, tuple(v.shape)) for k, v in flat.items())


def variable_shapes() -> dict[str, tuple[int, ...]]:
  """'params/Mixed_5b/branch1x1/conv/kernel' -> shape, for every variable."""
  return dict(_variable_shapes())


# --- PyTorch names -> ours ---------------------------------------------------

# The last part of our path -> (collection, PyTorch's name for it).
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


def torch_key(path: str) -> str:
  """Our 'params/Mixed_5b/branch1x1/conv/kernel' -> PyTorch's
  'Mixed_5b.branch1x1.conv.weight'."""
  collection, *modules, leaf = path.split('/')
  return '.'.join([*modules, _LEAF_NAMES[(collection, leaf)]])


def _from_torch_layout(path: str, value: np.ndarray) -> np.ndarray:
  if path.endswith('/kernel'):  # (out, in, kh, kw) -> (kh, kw, in, out)
    return np.transpose(value, (2, 3, 1, 0))
  return value


def convert_state_dict(state_dict: Mapping[str, Any], source: str = 'the state dict'
                       ) -> dict[str, np.ndarray]:
  """pytorch-fid's state dict (name -> array) -> our flat variables.

  Every variable of ``FIDInceptionV3`` takes exactly one PyTorch tensor of the
  matching shape; the only PyTorch keys left over may be ``fc.*`` and
  BatchNorm's ``num_batches_tracked``. Anything else is a UserError that
  names the file, so a wrong file (torchvision's ImageNet Inception, a
  truncated download) never yields silently wrong features.
  """
  arrays = {k: np.asarray(v) for k, v in state_dict.items()}
  if any(k.startswith('AuxLogits.') for k in arrays) or (
      'fc.weight' in arrays and arrays['fc.weight'].shape[0] == 1000):
    raise UserError(
        f'{source} holds torchvision\'s ImageNet Inception-v3, not the FID '
        f'network (its features give different FIDs); {download_help()}.')
  flat = {}
  used = set()
  for path, shape in variable_shapes().items():
    key = torch_key(path)
    if key not in arrays:
      raise UserError(f'{source} has no {key!r}: it is not pytorch-fid\'s '
                      f'Inception weight file; {download_help()}.')
    value = _from_torch_layout(path, arrays[key]).astype(np.float32)
    if value.shape != shape:
      raise UserError(f'{source}: {key!r} has shape {arrays[key].shape}, '
                      f'which does not fit the FID network; {download_help()}.')
    flat[path] = value
    used.add(key)
  extra = sorted(k for k in arrays if k not in used and k not in UNUSED_TORCH_KEYS
                 and not k.endswith('.num_batches_tracked'))
  if extra:
    raise UserError(f'{source} has entries the FID network lacks ('
                    f'{", ".join(extra[:3])}{", ..." if len(extra) > 3 else ""}); '
                    f'it is not pytorch-fid\'s Inception weight file; '
                    f'{download_help()}.')
  return flat


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def read_torch_weights(pth_path: str, check_hash: bool = True) -> dict[str, np.ndarray]:
  """pytorch-fid's ``.pth`` -> our flat variables (read without PyTorch, by
  ``wgan_jax.reference.pth``)."""
  if not os.path.isfile(pth_path):
    raise UserError(f'no FID Inception weights at {pth_path}: '
                    f'{download_help(pth_path)}.')
  if check_hash:
    sha = file_sha256(pth_path)
    if sha != PTH_SHA256:
      raise UserError(
          f'{pth_path} is not pytorch-fid\'s {PTH_NAME} (SHA-256 {sha[:16]}..., '
          f'expected {PTH_SHA256[:16]}...; an interrupted download?): '
          f'{download_help(pth_path)}.')
  try:
    state_dict = pth.load_state_dict(pth_path)
  except UserError as e:
    raise UserError(f'cannot read {pth_path} as a PyTorch weight file ({e}); '
                    f'{download_help(pth_path)}.') from None
  return convert_state_dict(state_dict, source=pth_path)


def save_weights(path: str, flat: Mapping[str, np.ndarray]) -> None:
  """Writes our flat variables as an uncompressed ``.npz`` (atomically)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  files.write_atomic(path, lambda f: np.savez(f, __format__=np.array(FORMAT), **flat))


def _check_flat(flat: Mapping[str, np.ndarray], path: str) -> None:
  expected = variable_shapes()
  wrong = [k for k, shape in expected.items()
           if k not in flat or flat[k].shape != shape]
  if wrong or len(flat) != len(expected):
    what = wrong[0] if wrong else 'extra entries'
    raise UserError(f'{path} does not hold the FID network ({what}); convert '
                    f'the weights again: python -m wgan_jax.eval.inception.')


def load_weights(path: str | None = None, check_hash: bool = True):
  """The FID network's variables ``{'params', 'batch_stats'}``.

  ``path``: a converted ``.npz``, or pytorch-fid's ``.pth`` (converted in
  memory; needs PyTorch). By default the converted file in ``cache_dir()``,
  made there from the ``.pth`` on first use when only that one is present.
  """
  if path is None:
    path = default_weights_path()
    if not os.path.isfile(path):
      if not os.path.isfile(default_pth_path()):
        raise UserError(f'no FID Inception weights at {path}: {download_help()}.')
      logging.info('Converting %s to %s.', default_pth_path(), path)
      save_weights(path, read_torch_weights(default_pth_path(), check_hash))
  if path.endswith('.pth'):
    flat = read_torch_weights(path, check_hash)
  else:
    if not os.path.isfile(path):
      raise UserError(f'no FID Inception weights at {path}: {download_help()}.')
    try:
      with np.load(path, allow_pickle=False) as data:
        flat = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
      raise UserError(f'cannot read {path} as converted FID weights ({e}); '
                      'convert them again: python -m wgan_jax.eval.inception.') from e
    if str(flat.pop('__format__', '')) != FORMAT:
      raise UserError(f'{path} is not a converted FID weight file of this '
                      'version; convert it again: python -m wgan_jax.eval.inception.')
    _check_flat(flat, path)
  return traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat.items()}, sep='/')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  fv = flags.FLAGS
  flat = read_torch_weights(fv.pth or default_pth_path(), fv.check_hash)
  out = fv.out or default_weights_path()
  save_weights(out, flat)
  print(f'Wrote the FID Inception weights ({len(flat)} arrays) to {out}.')


if __name__ == '__main__':
  from wgan_jax import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('pth', None, f'pytorch-fid\'s {PTH_NAME} (default: '
                      f'{default_pth_path()}); get it from {PTH_URL}.')
  flags.DEFINE_string('out', None, 'Where to write the converted weights '
                      f'(default: {default_weights_path()}).')
  flags.DEFINE_boolean('check_hash', True, 'Refuse a .pth whose SHA-256 is not '
                       'that of pytorch-fid\'s file.')
  app.run(cli.user_errors(main))
