"""The digits classifier and the digits and stacked-digits measures on cases
whose answers are known.

The Frechet distance and KID themselves are tested in test_fid.py; here,
what is built on them. One digits classifier (16px) is trained per module
and shared.
"""

import math

import jax
import numpy as np
import pytest

from wgan_jax import data as data_lib
from wgan_jax.eval import classifier as classifier_lib, metrics


@pytest.fixture(scope='module')
def classifier():
  return classifier_lib.digits_classifier(16)


@pytest.fixture(scope='module')
def digits():
  return data_lib.load_digits(16), data_lib.digit_labels()


# --- digits -----------------------------------------------------------------------


def test_classifier_is_accurate_and_deterministic(classifier, digits):
  images, labels = digits
  _, test = classifier_lib.digits_split()
  assert len(test) == 599 and np.ptp(np.bincount(labels[test])) <= 3  # stratified
  assert classifier.test_accuracy > 0.95  # 0.98 at 16px, seed 0
  assert classifier.test_accuracy == np.mean(classifier.predict(images[test]) == labels[test])
  assert classifier_lib.digits_classifier(16) is classifier  # trained once per process
  # Trained again with the same seed: the same weights.
  again = classifier_lib.train_digits_classifier(16, seed=0)
  jax.tree.map(np.testing.assert_array_equal, again.params, classifier.params)
  # 32px digits are shrunk to 16px inside the net, and classified as well.
  large = classifier_lib.digits_classifier(32)
  assert large.test_accuracy > 0.95
  assert np.mean(large.predict(data_lib.load_digits(32)[test]) ==
                 classifier.predict(images[test])) > 0.95


def test_classifier_cache_file(tmp_path, monkeypatch, classifier, digits):
  images = digits[0][:50]
  monkeypatch.setattr(classifier_lib, '_CLASSIFIERS', {})
  monkeypatch.setattr(classifier_lib, 'train_digits_classifier', lambda size, seed: classifier)
  assert classifier_lib.digits_classifier(16, cache_dir=str(tmp_path)) is classifier
  path = classifier_lib.classifier_cache_path(str(tmp_path), 16, 0)
  assert path.startswith(str(tmp_path)) and classifier_lib.RECIPE in path

  def no_training(size, seed):
    raise AssertionError('the cached classifier should have been read')

  monkeypatch.setattr(classifier_lib, '_CLASSIFIERS', {})
  monkeypatch.setattr(classifier_lib, 'train_digits_classifier', no_training)
  loaded = classifier_lib.digits_classifier(16, cache_dir=str(tmp_path))
  assert loaded.test_accuracy == classifier.test_accuracy
  np.testing.assert_array_equal(loaded.features(images), classifier.features(images))
  # A damaged file is trained again (and rewritten).
  with open(path, 'wb') as f:
    f.write(b'not msgpack')
  monkeypatch.setattr(classifier_lib, '_CLASSIFIERS', {})
  monkeypatch.setattr(classifier_lib, 'train_digits_classifier', lambda size, seed: classifier)
  assert classifier_lib.digits_classifier(16, cache_dir=str(tmp_path)) is classifier


def test_class_histogram_kl():
  assert classifier_lib.kl_to_uniform(classifier_lib.class_histogram([3] * 50, 10)) == pytest.approx(
      math.log(10))
  assert classifier_lib.kl_to_uniform(classifier_lib.class_histogram(np.arange(100) % 10, 10)) == 0
  # Two classes equally: log 10 - log 2.
  assert classifier_lib.kl_to_uniform([5, 5, 0, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(
      math.log(5))


def test_digits_metrics_of_real_and_collapsed_samples(classifier, digits):
  images, labels = digits
  train, test = classifier_lib.digits_split()
  real = images[np.random.default_rng(4).choice(train, 600, replace=False)]
  result = metrics.evaluate_samples('digits', real)
  assert set(result) == {'fd', 'kid', 'kid_std', 'class_kl', 'fd_floor', 'kid_floor',
                         'class_kl_floor', 'classifier_accuracy', 'num_samples'}
  assert all(type(v) is float for v in result.values())
  assert result['classifier_accuracy'] == classifier.test_accuracy
  # Real digits score about their floor, and their classes are balanced.
  assert result['fd'] < 1.5 * result['fd_floor'] + 1
  assert result['class_kl'] < 0.01 and result['class_kl_floor'] < 0.01
  # Colour copies of the same digits (as --channels=3 trains) and uint8
  # pixels score the same.
  colour = np.round((np.repeat(real, 3, axis=-1) + 1) * 127.5).astype(np.uint8)
  assert metrics.evaluate_samples('digits', colour)['fd'] == pytest.approx(
      result['fd'], rel=0.05)
  # One image over and over: one class, far from the held-out digits.
  one = metrics.evaluate_samples('digits', np.repeat(images[test[:1]], 600, axis=0))
  assert one['class_kl'] == pytest.approx(math.log(10))
  assert one['fd'] > 50 * result['fd']
  assert abs(result['kid'] - result['kid_floor']) < 0.01 * one['kid']
  # Only threes: nearly one class.
  threes = metrics.evaluate_samples('digits', images[labels == 3])
  assert threes['class_kl'] > 0.9 * math.log(10)
  assert threes['fd'] > 20 * result['fd']


# --- stacked digits -----------------------------------------------------------------


def test_stacked_modes_are_the_digit_triples(classifier):
  images, modes = data_lib.load_stacked_digits(16, count=3000, seed=5)
  predicted = classifier_lib.stacked_modes(images, classifier)
  # Each digit is right ~98% of the time (most of these were trained on).
  assert np.mean(predicted == modes) > 0.93
  assert predicted.min() >= 0 and predicted.max() < 1000
  # A triple's mode spells its digits: swapping the channels permutes them.
  swapped = classifier_lib.stacked_modes(images[..., ::-1], classifier)
  np.testing.assert_array_equal(swapped, predicted % 10 * 100 + predicted // 10 % 10 * 10
                                + predicted // 100)


def test_stacked_digits_metrics_of_real_and_collapsed_samples(classifier):
  real, _ = data_lib.load_stacked_digits(16, count=8000, seed=6)
  result = metrics.evaluate_samples('stacked_digits', real)
  assert set(result) == {'modes', 'modes_total', 'mode_kl', 'fd', 'modes_floor',
                         'mode_kl_floor', 'fd_floor', 'classifier_accuracy', 'num_samples'}
  assert all(type(v) is float for v in result.values())
  # 8000 draws miss each of 1000 modes with probability e^-8.
  assert result['modes'] >= 995 and result['modes_floor'] >= 995
  # KL of 8000 uniform draws over 1000 cells: ~ 999 / (2 * 8000) = 0.06.
  assert result['mode_kl'] < 0.1 and result['mode_kl_floor'] < 0.1
  assert result['fd'] < 1.5 * result['fd_floor'] + 1
  # One triple over and over: one mode, KL log 1000.
  one = metrics.evaluate_samples('stacked_digits', np.repeat(real[:1], 500, axis=0))
  assert (one['modes'], one['modes_total']) == (1, 1000)
  assert one['mode_kl'] == pytest.approx(math.log(1000))
  assert one['fd'] > 50 * result['fd_floor']
  # With min_count=2, of 300 samples only the modes drawn twice count:
  # 1000 P(Poisson(0.3) >= 2) = 37 of them.
  few = metrics.evaluate_samples('stacked_digits', real[:300], min_count=2)
  assert 15 < few['modes'] < 70 and 15 < few['modes_floor'] < 70
