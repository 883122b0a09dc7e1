"""FID and KID: the distances against scipy and closed forms, the estimator's
bias, statistics files and their cache, and the streaming pipeline.

Pipeline tests use a small stand-in for the Inception network (same
interface, 2048-d features, compiled in milliseconds); one test runs the real
network with random weights end to end.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import linen as nn
from flax import traverse_util

from wgan_jax import visualize
from wgan_jax.eval import fid, inception
from wgan_jax.errors import UserError


def _random_spd(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


def _scipy_frechet(mu1, s1, mu2, s2):
  """pytorch-fid's formula: sqrtm of S1 S2, eps offset if singular, real part."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(s1)) * 1e-6
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(covmean.real))


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(0)
  d = 64
  mu, sigma = rng.standard_normal(d), _random_spd(rng, d)
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)
  shift = rng.standard_normal(d)
  assert fid.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(
      shift @ shift, rel=1e-9, abs=1e-9)
  # Diagonal (commuting) covariances: sum of (sqrt(a) - sqrt(b))^2.
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  assert fid.frechet_distance(mu, np.diag(a), mu, np.diag(b)) == pytest.approx(
      np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)
  # Scaled covariance: tr((1 + c - 2 sqrt(c)) S) = (1 - sqrt(c))^2 tr(S).
  assert fid.frechet_distance(mu, sigma, mu, 4 * sigma) == pytest.approx(
      np.trace(sigma), rel=1e-9)


@pytest.mark.parametrize('rank', [None, 20])
def test_frechet_distance_matches_scipy(rank):
  rng = np.random.default_rng(1)
  d = 48
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = _random_spd(rng, d, rank), _random_spd(rng, d, rank)
  ours = fid.frechet_distance(mu1, s1, mu2, s2)
  # Singular covariances (fewer samples than features): scipy's sqrtm is
  # accurate only to about 1e-6 there; ours stays real and symmetric.
  assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2),
                               rel=1e-9 if rank is None else 1e-5)
  assert ours == pytest.approx(fid.frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_mean_and_covariance_match_numpy():
  x = np.random.default_rng(2).standard_normal((1000, 16)).astype(np.float32) + 3
  mu, cov = fid.mean_and_covariance(x, chunk=300)
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False),
                             rtol=1e-10, atol=1e-12)


def _mmd2_float64(x, y):
  x, y = x.astype(np.float64), y.astype(np.float64)
  m, d = x.shape
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  return ((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
          - 2 * kxy.mean())


def test_polynomial_mmd_matches_float64():
  rng = np.random.default_rng(3)
  # Pool3-like features: non-negative, of order 0.5.
  x = np.abs(rng.standard_normal((300, 2048))).astype(np.float32) * 0.5
  y = np.abs(rng.standard_normal((300, 2048))).astype(np.float32) * 0.5 + 0.02
  ours = float(fid._polynomial_mmd2(x, y))  # pylint: disable=protected-access
  assert ours == pytest.approx(_mmd2_float64(x, y), abs=2e-6)
  assert ours > 1e-3


def test_kid_is_unbiased_on_equal_distributions_and_grows_with_a_shift():
  # Fresh samples each repeat: the mean of the estimates must sit near 0
  # (a biased V-statistic would sit clearly above), a shift makes it positive.
  rng = np.random.default_rng(4)
  d, n = 32, 60
  equal, shifted = [], []
  for r in range(40):
    x, y = rng.standard_normal((2, n, d)).astype(np.float32)
    equal.append(fid.kernel_inception_distance(x, y, num_subsets=2,
                                               subset_size=50, seed=r)[0])
    shifted.append(fid.kernel_inception_distance(x, y + 0.3, num_subsets=2,
                                                 subset_size=50, seed=r)[0])
  equal, shifted = np.array(equal), np.array(shifted)
  se = equal.std() / math.sqrt(len(equal))
  assert abs(equal.mean()) < 3 * se
  assert (equal < 0).any()  # unbiased, so sometimes negative
  assert shifted.mean() > equal.mean() + 10 * se
  # A biased estimate (diagonal terms kept) would be off by about this much.
  x = rng.standard_normal((50, d))
  bias = (np.mean((np.sum(x * x, 1) / d + 1) ** 3) * 2) / 50
  assert bias > 20 * se


def test_kid_subsets_and_std():
  rng = np.random.default_rng(5)
  x = rng.standard_normal((120, 8)).astype(np.float32)
  y = rng.standard_normal((90, 8)).astype(np.float32) + 0.5
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=7, subset_size=1000)
  # Subsets of min(1000, 120, 90) = 90, reproducible from the seed.
  picks = np.random.default_rng(0)
  values = []
  for _ in range(7):
    i, j = picks.choice(120, 90, replace=False), picks.choice(90, 90, replace=False)
    values.append(_mmd2_float64(x[i], y[j]))
  assert mean == pytest.approx(np.mean(values), abs=1e-5)
  assert std == pytest.approx(np.std(values), abs=1e-5)
  with pytest.raises(UserError):
    fid.kernel_inception_distance(x[:1], y)


def test_quantize_matches_saved_pngs():
  x = np.random.default_rng(6).uniform(-1.2, 1.2, (2, 5, 5, 3)).astype(np.float32)
  q = np.asarray(fid.quantize_8bit(x))
  pixels = visualize.image_grid(x, ncol=2, padding=0)  # the uint8 of sample PNGs
  np.testing.assert_allclose(np.concatenate(list(q), axis=1),
                             pixels / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(fid.quantize_8bit(q)), q)


# --- statistics files ---------------------------------------------------------


def test_statistics_round_trip_and_foreign_files(tmp_path):
  features = np.random.default_rng(7).uniform(0, 1, (30, 2048)).astype(np.float32)
  stats = fid.Statistics.of(features)
  path = str(tmp_path / 'stats.npz')
  stats.save(path, network='abc')
  loaded, meta = fid.Statistics.load(path)
  assert meta == {'network': 'abc', 'count': 30}
  np.testing.assert_array_equal(loaded.features, features)
  np.testing.assert_array_equal(loaded.sigma, stats.sigma)
  # pytorch-fid's and TTUR's files: mu and sigma only.
  theirs = str(tmp_path / 'fid_stats_theirs.npz')
  np.savez(theirs, mu=stats.mu, sigma=stats.sigma)
  loaded, meta = fid.Statistics.load(theirs)
  assert loaded.features is None and meta == {}
  np.savez(str(tmp_path / 'small.npz'), mu=np.zeros(64), sigma=np.eye(64))
  with pytest.raises(UserError, match='2048'):
    fid.Statistics.load(str(tmp_path / 'small.npz'))
  with pytest.raises(UserError, match='cannot read'):
    fid.Statistics.load(str(tmp_path / 'absent.npz'))


# --- the pipeline, on a stand-in network ---------------------------------------


class StandIn(nn.Module):
  """Images -> non-negative features, like the FID network, in microseconds
  (and, with 32 features, covariances whose eigensolvers take no time)."""
  features: int = 2048

  @nn.compact
  def __call__(self, images):
    x = jax.image.resize(images, (images.shape[0], 4, 4, images.shape[-1]), 'linear')
    return nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))


def _extractor(batch_size=4, seed=0, features=2048):
  model = StandIn(features)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))
  return fid.FeatureExtractor(variables, batch_size, model=model)


def _images(n, seed=0, offset=0.0):
  rng = np.random.default_rng(seed)
  return np.clip(rng.uniform(-1, 1, (n, 8, 8, 3)) + offset, -1, 1).astype(np.float32)


def test_batches_are_padded_rechunked_and_limited():
  ext = _extractor(batch_size=4)
  images = _images(11)
  direct = np.asarray(ext.model.apply(ext.variables, fid.quantize_8bit(images)))
  got = ext.of_batches([images[:7], images[7:]])  # chunks 4, 3, 4 (padded 3)
  np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ext.of_batches([images], limit=6), direct[:6],
                             rtol=1e-5, atol=1e-6)


def test_generated_samples_are_streamed_one_batch_at_a_time():
  ext = _extractor(batch_size=4)
  calls = []

  def sample_fn(key, n):
    calls.append(n)
    return jax.random.uniform(key, (n, 8, 8, 3), minval=-1, maxval=1)

  features = ext.of_generator(sample_fn, num=10, seed=3)
  assert features.shape == (10, 2048)
  assert calls == [4, 4, 4]  # never more than one batch of images exists
  key = jax.random.key(3)
  expected = np.concatenate([
      np.asarray(ext(sample_fn(jax.random.fold_in(key, i), 4))) for i in range(3)])
  np.testing.assert_allclose(features, expected[:10], rtol=1e-6)
  assert np.abs(features[0] - features[4]).max() > 0  # a fresh key per batch


def test_reference_statistics_are_cached_per_network(tmp_path):
  images = _images(12)
  path = fid.reference_cache_path('digits', 'train', 8, 12, directory=str(tmp_path))
  assert path == str(tmp_path / 'digits-train-8px-12.npz')
  ext = _extractor()
  stats = fid.reference_statistics(ext, lambda: [images], 12, path)
  assert stats.count == 12 and stats.features.shape == (12, 2048)

  def no_data():
    raise AssertionError('the cache should have served')

  cached = fid.reference_statistics(_extractor(), no_data, 12, path)
  np.testing.assert_array_equal(cached.sigma, stats.sigma)
  # Other weights: the cache is stale and is made again.
  calls = []
  other = fid.reference_statistics(
      _extractor(seed=1), lambda: calls.append(1) or [images], 12, path)
  assert calls == [1]
  assert np.abs(other.mu - stats.mu).max() > 1e-3
  assert fid.Statistics.load(path)[1]['network'] == _extractor(seed=1).fingerprint
  with pytest.raises(UserError, match='other Inception weights'):
    fid.fid_for_generator(fid.images_sample_fn(images), path, ext, num=4)


def test_fid_for_generator_against_images_and_statistics():
  ext = _extractor(batch_size=4, features=32)
  real = _images(64, seed=1)
  result = fid.fid_for_generator(fid.images_sample_fn(real), real, ext, num=40,
                                 metrics=('fid', 'kid'), kid_subsets=5,
                                 kid_subset_size=30)
  assert set(result) == {'fid', 'kid', 'kid_std', 'num_samples', 'num_reference'}
  assert result['num_samples'] == 40 and result['num_reference'] == 64
  # The same number from the pieces: the generator's features, then the distance.
  ref = fid.Statistics.of(ext.of_batches([real]))
  feats = ext.of_generator(fid.images_sample_fn(real), 40)
  mu, sigma = fid.mean_and_covariance(feats)
  assert result['fid'] == pytest.approx(
      fid.frechet_distance(mu, sigma, ref.mu, ref.sigma), rel=1e-6)
  worse = fid.fid_for_generator(fid.images_sample_fn(_images(64, 2, offset=0.5)),
                                ref, ext, num=40, metrics=('fid', 'kid'),
                                kid_subsets=5, kid_subset_size=30)
  assert worse['fid'] > 3 * result['fid'] and worse['kid'] > result['kid'] + 0.01


def test_fid_for_generator_refuses_what_cannot_work(tmp_path, monkeypatch):
  ext = _extractor()
  sample = fid.images_sample_fn(_images(8))
  stats_only = fid.Statistics(np.zeros(2048), np.eye(2048), 10)
  with pytest.raises(UserError, match='KID needs the reference features'):
    fid.fid_for_generator(sample, stats_only, ext, num=4, metrics=('kid',))
  with pytest.raises(UserError, match='choose from fid, kid'):
    fid.fid_for_generator(sample, stats_only, ext, num=4, metrics=('is',))
  with pytest.raises(UserError, match='at least 2'):
    fid.fid_for_generator(sample, stats_only, ext, num=1)
  monkeypatch.setenv('WGAN_JAX_CACHE', str(tmp_path))
  with pytest.raises(UserError, match='pytorch-fid/releases'):
    fid.fid_for_generator(sample, stats_only, network=None, num=4)
  with pytest.raises(UserError, match='need images'):  # 2-D points
    fid.fid_for_generator(lambda key, n: jnp.zeros((n, 2)), stats_only, ext, num=4)
  with pytest.raises(UserError, match='need images'):
    fid.fid_for_generator(sample, np.zeros((5, 2)), ext, num=4)


def _random_inception_variables(seed=0):
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in inception.variable_shapes().items():
    uniform = rng.random(shape, dtype=np.float32) * 2 - 1  # faster than normal
    if path.endswith('kernel'):  # He-uniform: activations stay of order 1
      flat[path] = uniform * np.float32(math.sqrt(6 / math.prod(shape[:3])))
    elif path.endswith(('scale', 'var')):
      flat[path] = 1 + 0.1 * uniform
    else:
      flat[path] = 0.1 * uniform
  return traverse_util.unflatten_dict(flat, sep='/')


def test_end_to_end_with_the_inception_network(tmp_path):
  # 16px grayscale "digits" against generated ones, through the real network
  # (random weights) at 299x299: one compile, two batches. KID only: FID's
  # eigensolvers on 2048x2048 take seconds of CPU (FID is tested above at
  # small sizes, on the same path).
  ext = fid.FeatureExtractor(_random_inception_variables(), batch_size=2)
  rng = np.random.default_rng(8)
  real = rng.uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)
  path = fid.reference_cache_path('toy', 'train', 16, 2, str(tmp_path))
  ref = fid.reference_statistics(ext, lambda: [real], 2, path)
  assert ref.features.shape == (2, 2048) and ref.sigma.shape == (2048, 2048)
  assert np.abs(ref.features).mean() > 0.05
  result = fid.fid_for_generator(
      lambda key, n: jax.random.uniform(key, (n, 16, 16, 1), minval=-1, maxval=1),
      path, ext, num=2, metrics=('kid',), kid_subsets=5)
  assert result['num_samples'] == 2 and result['num_reference'] == 2
  assert np.isfinite(result['kid']) and result['kid_std'] >= 0
