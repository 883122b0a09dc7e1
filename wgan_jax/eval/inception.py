r"""The FID Inception-v3 network (``inception_net``) and its weights.

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
from flax import traverse_util

from wgan_jax import files
from wgan_jax.errors import UserError
from wgan_jax.eval.inception_net import (FEATURES, INPUT_SIZE, FIDInceptionV3,  # noqa: F401
                                         check_images, resize_bilinear)
from wgan_jax.reference import pth

PTH_NAME = 'pt_inception-2015-12-05-6726825d.pth'
PTH_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
           f'fid_weights/{PTH_NAME}')
PTH_SHA256 = '6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2'
CONVERTED_NAME = 'fid_inception_v3.npz'
FORMAT = 'wgan_jax/fid_inception_v3/1'  # stored in converted files
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
