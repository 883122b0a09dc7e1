"""The evaluation metrics on cases whose answers are known.

The Frechet distance and KID themselves are tested in test_fid.py; here,
what is built on them. One digits classifier (16px) is trained per session
and shared.
"""

import math

import jax
import numpy as np
import pytest

from wgan_jax import data as data_lib
from wgan_jax.eval import classifier as classifier_lib, metrics
from wgan_jax.eval import points as points_lib
from wgan_jax.errors import UserError

MIXTURES = data_lib.MIXTURES
# A 2-D standard normal falls within r standard deviations with 1 - exp(-r^2/2).
WITHIN_3_STD = 1 - math.exp(-4.5)


@pytest.fixture(scope='module')
def classifier():
  return classifier_lib.digits_classifier(16)


@pytest.fixture(scope='module')
def digits():
  return data_lib.load_digits(16), data_lib.digit_labels()


# --- 2-D data -------------------------------------------------------------------


@pytest.mark.parametrize('name', ['gaussians8', 'gaussians25'])
def test_a_perfect_sampler_covers_every_mode(name):
  mixture = MIXTURES[name]
  samples = mixture.sample(20_000, np.random.default_rng(0))
  result = points_lib.mode_coverage(samples, mixture.centers, mixture.std)
  assert result['modes'] == result['modes_total'] == len(mixture.centers)
  assert result['high_quality'] == pytest.approx(WITHIN_3_STD, abs=0.003)
  # A tighter radius keeps the share the normal distribution predicts.
  one_std = points_lib.mode_coverage(samples, mixture.centers, mixture.std, num_std=1.0)
  assert one_std['high_quality'] == pytest.approx(1 - math.exp(-0.5), abs=0.01)


def test_samples_of_one_mode_cover_one():
  mixture = MIXTURES['gaussians25']
  rng = np.random.default_rng(1)
  samples = mixture.centers[7] + mixture.std * rng.standard_normal((2500, 2))
  result = points_lib.mode_coverage(samples, mixture.centers, mixture.std)
  assert result['modes'] == 1
  assert result['high_quality'] == pytest.approx(WITHIN_3_STD, abs=0.01)
  # Exactly on a centre: all high quality.
  on_centre = points_lib.mode_coverage(np.repeat(mixture.centers[:1], 10, 0),
                                    mixture.centers, mixture.std)
  assert (on_centre['modes'], on_centre['high_quality']) == (1, 1.0)


def test_samples_between_modes_are_not_high_quality():
  mixture = MIXTURES['gaussians25']
  midpoints = (mixture.centers[:-1] + mixture.centers[1:]) / 2  # 1 = 20 std away
  result = points_lib.mode_coverage(np.concatenate([midpoints, [[np.nan, 0.0]]]),
                                 mixture.centers, mixture.std)
  assert (result['modes'], result['high_quality']) == (0, 0.0)
  # Half the samples on a mode, half far from all: half high quality.
  half = np.concatenate([np.repeat(mixture.centers[:2], 50, 0), np.full((100, 2), 10.0)])
  result = points_lib.mode_coverage(half, mixture.centers, mixture.std)
  assert (result['modes'], result['high_quality']) == (2, 0.5)


def test_a_mode_needs_min_count_high_quality_samples():
  mixture = MIXTURES['gaussians8']
  # 30 samples on mode 0, 5 on mode 1, 1 on mode 2.
  samples = np.repeat(mixture.centers[:3], [30, 5, 1], axis=0)
  counts = {m: points_lib.mode_coverage(samples, mixture.centers, mixture.std,
                                     min_count=m)['modes'] for m in (1, 2, 5, 6, 30, 31)}
  assert counts == {1: 3, 2: 2, 5: 2, 6: 1, 30: 1, 31: 0}
  with pytest.raises(UserError, match='min_count'):
    points_lib.mode_coverage(samples, mixture.centers, mixture.std, min_count=0)


def test_exact_w1_of_a_shift_is_its_length():
  rng = np.random.default_rng(2)
  points = rng.standard_normal((300, 2))
  shift = np.array([0.3, -0.4])
  # (The network simplex works to ~1e-9.)
  assert points_lib.wasserstein1(points, points + shift) == pytest.approx(0.5, abs=1e-7)
  assert points_lib.wasserstein1(points, rng.permutation(points)) == pytest.approx(0, abs=1e-7)
  # Unequal sizes: all mass of one point moves to the centre of two others.
  assert points_lib.wasserstein1([[0.0, 0.0]], [[3.0, 4.0], [-3.0, -4.0]]) == pytest.approx(5.0)
  # Two clusters swapping half their mass: W1 is half the distance between them.
  a = np.array([[0.0, 0.0]] * 4 + [[2.0, 0.0]] * 4)
  b = np.array([[0.0, 0.0]] * 2 + [[2.0, 0.0]] * 6)
  assert points_lib.wasserstein1(a, b) == pytest.approx(0.5)
  assert math.isnan(points_lib.wasserstein1(a, np.full_like(b, np.inf)))


def test_mixture_metrics_of_real_and_collapsed_samples():
  mixture = MIXTURES['gaussians8']
  real = mixture.sample(1000, np.random.default_rng(3))
  result = metrics.evaluate_samples('gaussians8', real, w1_samples=800)
  assert set(result) == {'modes', 'modes_total', 'high_quality', 'w1', 'w1_floor',
                         'w1_floor_std', 'w1_samples', 'num_samples'}
  assert all(type(v) is float for v in result.values())
  assert (result['modes'], result['w1_samples'], result['num_samples']) == (8, 800, 1000)
  assert result['high_quality'] == pytest.approx(WITHIN_3_STD, abs=0.01)
  # A perfect sampler scores about the floor.
  assert result['w1_floor_std'] < result['w1_floor'] < 0.3
  assert abs(result['w1'] - result['w1_floor']) < 3 * result['w1_floor_std']
  # All mass on one mode: on the ring of radius 2, W1 is the mean distance
  # from one mode to the real points, 2 * mean |2 sin(pi k / 8)| = 2.51 (+-
  # 0.05 for 800 of them, whose modes are drawn at random).
  collapsed = metrics.evaluate_samples('gaussians8', np.repeat(mixture.centers[:1], 800, 0))
  assert collapsed['modes'] == 1 and collapsed['high_quality'] == 1
  chords = np.mean(2 * 2 * np.abs(np.sin(np.pi * np.arange(8) / 8)))
  assert collapsed['w1'] == pytest.approx(chords, abs=0.15)
  # The same seed gives the same numbers.
  assert metrics.evaluate_samples('gaussians8', real, w1_samples=800) == result


def test_swissroll_has_w1_only():
  real = data_lib.load_swissroll(600, seed=11)
  result = metrics.evaluate_samples('swissroll', real)
  assert set(result) == {'w1', 'w1_floor', 'w1_floor_std', 'w1_samples', 'num_samples'}
  assert abs(result['w1'] - result['w1_floor']) < 3 * result['w1_floor_std']
  shifted = metrics.evaluate_samples('swissroll', real + np.array([1.0, 0.0]))
  assert shifted['w1'] == pytest.approx(1.0, abs=result['w1_floor'] + 0.05)


def test_bad_inputs_are_user_errors():
  with pytest.raises(UserError, match=r'\(N, 2\)'):
    metrics.evaluate_samples('gaussians8', np.zeros((10, 3)))
  with pytest.raises(UserError, match='stacked_digits, gaussians8'):
    metrics.evaluate_samples('celeb_a', np.zeros((10, 64, 64, 3)))
  with pytest.raises(UserError, match=r'images \(N, S, S, 3\)'):
    metrics.evaluate_samples('stacked_digits', np.zeros((10, 16, 16, 1)))
  with pytest.raises(UserError, match='w1_samples'):
    metrics.evaluate_samples('swissroll', np.zeros((10, 2)), w1_samples=0)


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
  monkeypatch.setattr(metrics, '_CLASSIFIERS', {})
  monkeypatch.setattr(metrics, 'train_digits_classifier', lambda size, seed: classifier)
  assert classifier_lib.digits_classifier(16, cache_dir=str(tmp_path)) is classifier
  path = classifier_lib.classifier_cache_path(str(tmp_path), 16, 0)
  assert path.startswith(str(tmp_path)) and classifier_lib.RECIPE in path

  def no_training(size, seed):
    raise AssertionError('the cached classifier should have been read')

  monkeypatch.setattr(metrics, '_CLASSIFIERS', {})
  monkeypatch.setattr(metrics, 'train_digits_classifier', no_training)
  loaded = classifier_lib.digits_classifier(16, cache_dir=str(tmp_path))
  assert loaded.test_accuracy == classifier.test_accuracy
  np.testing.assert_array_equal(loaded.features(images), classifier.features(images))
  # A damaged file is trained again (and rewritten).
  with open(path, 'wb') as f:
    f.write(b'not msgpack')
  monkeypatch.setattr(metrics, '_CLASSIFIERS', {})
  monkeypatch.setattr(metrics, 'train_digits_classifier', lambda size, seed: classifier)
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
