"""The embedded datasets, which need no download: scikit-learn's 8x8 digits,
stacked digits (Stacked-MNIST on these digits), the 2-D Gaussian mixtures
and the swiss roll (see ``wgan_jax.data`` for what each is)."""

from __future__ import annotations

import dataclasses

import numpy as np

from wgan_jax import pixels


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


def digit_labels() -> np.ndarray:
  """The class (0..9) of each of ``load_digits``' images, in its order."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  return sk_datasets.load_digits().target.astype(np.int64)


STACKED_SIZE = 25_600  # the Stacked-MNIST training count of the PacGAN code


def stack_digits(images: np.ndarray, labels: np.ndarray, count: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``count`` images whose three channels are independently drawn
  ``images`` (N, S, S) and their modes, ``100 * l0 + 10 * l1 + l2``."""
  picks = rng.integers(0, len(images), (count, 3))
  modes = labels[picks] @ np.array([100, 10, 1])
  return np.moveaxis(images[picks], 1, -1), modes


def load_stacked_digits(image_size: int, count: int = STACKED_SIZE,
                        seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
  """``count`` stacked digits, (count, S, S, 3) uint8 pixels (a quarter of
  float32's memory), and their modes 0..999."""
  digits = load_digits(image_size)[..., 0]
  return stack_digits(pixels.to_uint8(digits, round_half_even=True), digit_labels(), count, np.random.default_rng(seed))


def load_swissroll(n: int, seed: int) -> np.ndarray:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  points, _ = sk_datasets.make_swiss_roll(n, noise=0.25, random_state=seed)
  return (points[:, [0, 2]] / 7.5).astype(np.float32)


