"""The 2-D measures (and the entry point ``metrics.evaluate_samples``) on
cases whose answers are known."""

import math

import numpy as np
import pytest

from wgan_jax import data as data_lib
from wgan_jax.eval import metrics
from wgan_jax.eval import points as points_lib
from wgan_jax.errors import UserError

MIXTURES = data_lib.MIXTURES
# A 2-D standard normal falls within r standard deviations with 1 - exp(-r^2/2).
WITHIN_3_STD = 1 - math.exp(-4.5)


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
