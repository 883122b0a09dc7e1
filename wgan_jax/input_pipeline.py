"""Datasets and the order in which their examples are used.

A ``Dataset`` is an array of examples in memory: images (N, H, W, C) in
[-1, 1], or 2-D points (N, 2). The embedded ones need no download:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images),
  resized to the image size, white on black.
* ``gaussians8``: a ring of 8 Gaussians, radius 2, std 0.02;
  ``gaussians25``: a 5x5 grid of Gaussians, spacing 2, std 0.05 (the 2-D
  mixtures of the Unrolled GAN / VEEGAN / PacGAN papers);
  ``swissroll``: scikit-learn's swiss roll (noise 0.25) in the plane, / 7.5.

Examples are used in epochs, each a fresh permutation (the reference's
shuffling ``DataLoader``); batch k of a run is a pure function of the seed and
k, so a resumed run sees the same data.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools

import numpy as np

from wgan_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Mixture:
  """A 2-D Gaussian mixture: equally weighted modes of one isotropic std."""
  centers: np.ndarray  # (K, 2)
  std: float

  def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
    modes = rng.integers(0, len(self.centers), n)
    return (self.centers[modes] + self.std * rng.standard_normal((n, 2))
            ).astype(np.float32)


def _ring(k=8, radius=2.0):
  angles = 2 * np.pi * np.arange(k) / k
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid(side=5, spacing=2.0):
  ticks = spacing * (np.arange(side) - (side - 1) / 2)
  return np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)


MIXTURES = {
    'gaussians8': Mixture(_ring(), 0.02),
    'gaussians25': Mixture(_grid(), 0.05),
}
TOY_SIZE = 100_000  # points drawn once per run; far more than a run can overfit
DATA_SEED = 1234  # fixed, so every run and seed trains on the same points


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  examples: np.ndarray  # (N, *data_shape), float32 in [-1, 1] for images

  @property
  def data_shape(self) -> tuple[int, ...]:
    return self.examples.shape[1:]

  @property
  def is_image(self) -> bool:
    return self.examples.ndim == 4

  def __len__(self) -> int:
    return len(self.examples)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of (N, h, w) floats in [0, 1] (antialiased when shrinking)."""
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.image.resize(images.astype(np.float32), (len(images), size, size),
                         'linear')
  return np.clip(np.asarray(out), 0.0, 1.0)


def load_digits(image_size: int, channels: int = 1) -> np.ndarray:
  """scikit-learn's 8x8 digits as (1797, S, S, C) float32 in [-1, 1]."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  images = sk_datasets.load_digits().images / 16.0
  images = _resize(images, image_size) if image_size != 8 else images
  images = images.astype(np.float32) * 2.0 - 1.0
  return np.repeat(images[..., None], channels, axis=-1)


def load_swissroll(n: int, seed: int) -> np.ndarray:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  points, _ = sk_datasets.make_swiss_roll(n, noise=0.25, random_state=seed)
  return (points[:, [0, 2]] / 7.5).astype(np.float32)


EMBEDDED = ('digits', 'gaussians8', 'gaussians25', 'swissroll')


def get_dataset(config) -> Dataset:
  """The dataset that ``config.dataset`` names, prepared for ``config``."""
  name = config.dataset
  if name == 'digits':
    return Dataset(name, load_digits(config.image_size, config.channels or 1))
  if name in MIXTURES:
    rng = np.random.default_rng(DATA_SEED)
    return Dataset(name, MIXTURES[name].sample(TOY_SIZE, rng))
  if name == 'swissroll':
    return Dataset(name, load_swissroll(TOY_SIZE, DATA_SEED))
  close = difflib.get_close_matches(name, EMBEDDED, n=3, cutoff=0.5)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  raise UserError(f'unknown dataset {name!r}.{hint} '
                  f'Embedded datasets: {", ".join(EMBEDDED)}.')


class EpochSampler:
  """Batch indices for a run: epochs of fresh permutations, dropping the remainder."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if batch_size > num_examples:
      raise UserError(f'batch_size={batch_size} is larger than the dataset '
                      f'({num_examples} examples); pass a smaller --batch_size.')
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.batches_per_epoch = num_examples // batch_size

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch])
    return rng.permutation(self.num_examples).astype(np.int32)

  def indices(self, first_batch: int, num_batches: int) -> np.ndarray:
    """Indices of batches [first_batch, first_batch + num_batches), shape (n, B)."""
    out = np.empty((num_batches, self.batch_size), np.int32)
    for j in range(num_batches):
      epoch, k = divmod(first_batch + j, self.batches_per_epoch)
      out[j] = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
    return out


class DeviceResidentSource:
  """Examples held on every device; a batch travels as indices, never as pixels.

  ``batches(first, n)`` gives what ``parallel.TrainIteration`` takes for the
  critic steps [first, first + n) of a run: the resident array and the
  indices, (devices, n, batch / devices), for this process's devices.
  """

  def __init__(self, dataset: Dataset, batch_size: int, seed: int, devices):
    from wgan_jax import parallel  # pylint: disable=g-import-not-at-top
    self._shard = functools.partial(parallel.shard_batches, num_devices=len(devices),
                                    positions=parallel.local_positions(devices))
    self.sampler = EpochSampler(len(dataset), batch_size, seed)
    self.data = parallel.replicate(dataset.examples, devices)

  def batches(self, first_batch: int, num_batches: int):
    return self.data, self._shard(self.sampler.indices(first_batch, num_batches))
