"""How good and how varied a generator's 2-D samples are.

* 2-D mixtures (``gaussians8``, ``gaussians25``): the protocol of VEEGAN
  (Srivastava et al. 2017, Sec. 5.1) and PacGAN (Lin et al. 2018), applied
  there to the Unrolled GAN too. A sample is *high quality* if it lies within
  ``num_std`` = 3 standard deviations of its nearest mode centre; a mode is
  *covered* if at least ``min_count`` high-quality samples have it as their
  nearest centre. Both papers take ``min_count`` = 1 ("the number of mixture
  components whose mean is nearest to at least one high quality sample",
  VEEGAN; the nonzero entries of ``detail_of_coverage`` in the PacGAN code's
  ``MetricLogger``) on 2,500 samples. In 2-D, a perfect sampler's
  high-quality share is ``1 - exp(-num_std**2 / 2)``, 0.989 at 3 std.
* Every 2-D set (also ``swissroll``): the exact Wasserstein-1 distance
  between generated and real points (POT's network-simplex EMD, Euclidean
  ground cost), and its *floor*: the distance between two independent real
  draws of the same size, what a perfect sampler scores (averaged over
  ``W1_FLOOR_DRAWS`` pairs: on the mixtures it varies by a third from one
  draw to the next).
Each distance comes with its floor: the same measure on real data of the same
size, so a number can be read as "this far from what real data scores".

The digits' measures are in ``classifier``; ``metrics.evaluate_samples`` is
the one entry point over both.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from wgan_jax.data import embedded
from wgan_jax.errors import UserError

NUM_STD = 3.0  # high quality: within this many standard deviations of a mode
MIN_COUNT = 1  # a mode is covered with at least this many (high-quality) samples
W1_SAMPLES = 2500  # points in an exact W1 (memory and time grow as n^2 and ~n^3)
W1_FLOOR_DRAWS = 5  # pairs of real draws the W1 floor averages

MIXTURES = tuple(embedded.MIXTURES)
POINTS = (*MIXTURES, 'swissroll')


def _subseed(seed: int, stream: int) -> int:
  """An independent integer seed for one use of ``seed``."""
  return int(np.random.default_rng([seed, stream]).integers(2**31))


# --- 2-D data -----------------------------------------------------------------


def _points(samples) -> np.ndarray:
  points = np.asarray(samples, np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or not len(points):
    raise UserError(f'2-D metrics need points of shape (N, 2); got {points.shape}.')
  return points


def nearest_modes(points, centers) -> tuple[np.ndarray, np.ndarray]:
  """For each point, the index of its nearest centre and the distance to it."""
  points = _points(points)
  distances = np.linalg.norm(points[:, None, :] - np.asarray(centers)[None], axis=-1)
  nearest = np.argmin(distances, axis=1)
  return nearest, distances[np.arange(len(points)), nearest]


def mode_coverage(samples, centers, std: float, num_std: float = NUM_STD,
                  min_count: int = MIN_COUNT) -> dict[str, float]:
  """Modes covered and the share of high-quality samples (see the module
  docstring): ``{'modes', 'modes_total', 'high_quality'}``."""
  if num_std <= 0 or min_count < 1:
    raise UserError(f'num_std={num_std}, min_count={min_count}: need num_std > 0 '
                    'and min_count >= 1.')
  nearest, distance = nearest_modes(samples, centers)
  good = distance < num_std * std  # False for NaN: a diverged sample is no good
  counts = np.bincount(nearest[good], minlength=len(centers))
  return {'modes': float(np.sum(counts >= min_count)),
          'modes_total': float(len(centers)),
          'high_quality': float(np.mean(good))}


_POT_SKIP = ('POT_BACKEND_DISABLE_PYTORCH', 'POT_BACKEND_DISABLE_TENSORFLOW',
             'POT_BACKEND_DISABLE_CUPY')


def _import_ot():
  """POT without its PyTorch, TensorFlow and CuPy backends: it gets NumPy
  arrays here, and importing those frameworks would take seconds."""
  saved = {key: os.environ.get(key) for key in _POT_SKIP}
  os.environ.update({key: '1' for key in _POT_SKIP})
  try:
    import ot  # pylint: disable=g-import-not-at-top
  finally:
    for key, value in saved.items():
      if value is None:
        del os.environ[key]
      else:
        os.environ[key] = value
  return ot


def wasserstein1(x, y) -> float:
  """The exact W1 distance between two point sets, each point of equal weight
  (Euclidean ground cost; POT's EMD). NaN if a point is not finite."""
  ot = _import_ot()
  x, y = _points(x), _points(y)
  if not (np.isfinite(x).all() and np.isfinite(y).all()):
    return float('nan')
  cost = ot.dist(x, y, metric='euclidean')
  weights_x = np.full(len(x), 1.0 / len(x))
  weights_y = np.full(len(y), 1.0 / len(y))
  # The default iteration cap stops short of the optimum beyond ~1000 points.
  return float(ot.emd2(weights_x, weights_y, cost,
                       numItermax=max(100_000, 100 * len(x) * len(y))))


def real_points(dataset_name: str, n: int, seed: int) -> np.ndarray:
  """``n`` fresh points of a 2-D dataset's distribution (not its training set)."""
  if dataset_name in embedded.MIXTURES:
    return embedded.MIXTURES[dataset_name].sample(n, np.random.default_rng(seed))
  if dataset_name == 'swissroll':
    return embedded.load_swissroll(n, seed)
  raise UserError(f'{dataset_name!r} is not a 2-D dataset; choose one of '
                  f'{", ".join(POINTS)}.')


@functools.lru_cache(maxsize=32)
def wasserstein1_floor(dataset_name: str, n: int, seed: int = 0,
                       draws: int = W1_FLOOR_DRAWS) -> tuple[float, float]:
  """W1 between two independent real draws of ``n`` points, what a perfect
  sampler scores: the mean and standard deviation over ``draws`` pairs.

  On the mixtures it is mostly the cost of moving the surplus of the modes
  that drew more than their share, so it varies by about a third from one
  draw to the next (at 2,500 points) and falls only as about 1/sqrt(n).
  """
  values = [wasserstein1(real_points(dataset_name, n, _subseed(seed, 2 * k + 1)),
                         real_points(dataset_name, n, _subseed(seed, 2 * k + 2)))
            for k in range(draws)]
  return float(np.mean(values)), float(np.std(values))


def points_metrics(dataset_name: str, samples, *, seed: int = 0,
                   num_std: float = NUM_STD, min_count: int = MIN_COUNT,
                   w1_samples: int = W1_SAMPLES) -> dict[str, float]:
  """Mode coverage (mixtures only) and W1 with its floor (mean and std over
  ``W1_FLOOR_DRAWS`` pairs of real draws), on the first ``w1_samples``
  samples against as many fresh real points."""
  points = _points(samples)
  result: dict[str, float] = {'num_samples': float(len(points))}
  if dataset_name in embedded.MIXTURES:
    mixture = embedded.MIXTURES[dataset_name]
    result.update(mode_coverage(points, mixture.centers, mixture.std, num_std, min_count))
  if w1_samples < 1:
    raise UserError(f'w1_samples={w1_samples}: must be positive.')
  n = min(len(points), w1_samples)
  result['w1'] = wasserstein1(points[:n], real_points(dataset_name, n, _subseed(seed, 0)))
  result['w1_floor'], result['w1_floor_std'] = wasserstein1_floor(dataset_name, n, seed)
  result['w1_samples'] = float(n)
  return result
