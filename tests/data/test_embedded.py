"""The embedded datasets: the digits and the 2-D sets are what they say."""

import numpy as np
import pytest

from wgan_jax import configs, data as data_lib
from wgan_jax.errors import UserError


def test_digits_data_is_the_embedded_digits(tiny_config):
  config = tiny_config(image_size=32, channels=3)
  data = data_lib.get_dataset(config)
  assert data.examples.shape == (1797, 32, 32, 3)
  assert data.examples.dtype == np.float32
  assert data.examples.min() == -1.0 and data.examples.max() == pytest.approx(1.0)
  np.testing.assert_array_equal(data.examples[..., 0], data.examples[..., 2])
  # Shrunk back to 8x8, the images are scikit-learn's (0..16 -> -1..1).
  from sklearn.datasets import load_digits
  original = load_digits().images / 8.0 - 1.0
  shrunk = data.examples[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))
  assert np.corrcoef(shrunk.ravel(), original.ravel())[0, 1] > 0.97
  assert abs(shrunk.mean() - original.mean()) < 0.02


def test_toy_data_sits_on_its_modes(tiny_config):
  for name, mixture in data_lib.MIXTURES.items():
    points = data_lib.get_dataset(tiny_config(name)).examples
    dist = np.linalg.norm(points[:, None, :] - mixture.centers[None], axis=-1).min(1)
    assert np.all(dist < 6 * mixture.std), name
  roll = data_lib.get_dataset(tiny_config('swissroll')).examples
  assert roll.shape == (data_lib.TOY_SIZE, 2) and np.abs(roll).max() < 3


def test_stacked_digits_stack_three_independent_digits():
  images, modes = data_lib.load_stacked_digits(16)
  assert images.shape == (data_lib.STACKED_SIZE, 16, 16, 3)
  assert images.dtype == np.uint8 and modes.shape == (len(images),)
  # Each channel is one of the digits (as uint8 pixels), and the mode spells
  # the three digits' classes.
  digits = data_lib.load_digits(16)[..., 0]
  pixels = np.round((digits + 1) * 127.5).astype(np.uint8)
  classes = {}
  for image, label in zip(pixels, data_lib.digit_labels()):
    classes.setdefault(image.tobytes(), set()).add(label)
  for image, mode in zip(images[:300], modes[:300]):
    for c, place in enumerate((100, 10, 1)):
      assert mode // place % 10 in classes[np.ascontiguousarray(image[..., c]).tobytes()]
  # All 1000 triples occur, each about equally often; the channels are
  # drawn independently.
  counts = np.bincount(modes, minlength=1000)
  assert len(counts) == 1000 and counts.min() > 0
  assert counts.max() < 3 * counts.mean()
  positions = np.stack([modes // 100, modes // 10 % 10, modes % 10])
  assert np.abs(np.corrcoef(positions) - np.eye(3)).max() < 0.03
  # The same images every time: the data seed is fixed.
  again, _ = data_lib.load_stacked_digits(16, count=10)
  np.testing.assert_array_equal(again, images[:10])


def test_stacked_digits_is_an_embedded_dataset_of_three_channels(tiny_config):
  # (uint8 pixels of 16x16x3 train like any others: see
  # test_training_on_host_fed_and_resident_pixels_is_the_same.)
  assert 'stacked_digits' in data_lib.EMBEDDED
  assert configs.get_config('stacked_digits').channels == 3
  data = data_lib.get_dataset(tiny_config('stacked_digits'))
  assert data.data_shape == (16, 16, 3) and data.examples.dtype == np.uint8
  assert data.is_image and len(data) == data_lib.STACKED_SIZE
  with pytest.raises(UserError, match='--channels=3'):
    data_lib.get_dataset(tiny_config('stacked_digits', channels=1))
