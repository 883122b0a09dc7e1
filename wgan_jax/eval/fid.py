"""FID and KID of a generator against a dataset, on the FID Inception network.

* FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to
  the pool3 features of real and of generated images,
  ``|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. Lower is better; 0
  for identical statistics. It is biased upwards at small sample counts, so
  compare only numbers computed from the same count (50k is the convention).
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with
  the kernel ``k(x, y) = (x.y / 2048 + 1)^3``, averaged over random subsets of
  1000 real and 1000 generated features (100 subsets, as torch-fidelity and
  clean-fid do), with its standard deviation over the subsets. Unbiased:
  near 0 (possibly negative) for equal distributions at any sample count.

Features are computed on the device in batches of one compiled shape;
generated images go from the generator to the network without leaving the
device, so 50k samples are never in memory at once (their 2048-d features
are, 400 MB for 50k). A dataset's statistics are computed once and cached on
disk (``reference_statistics``), keyed by dataset, split, image size and
count, and tied to the network's weights.

``fid_for_generator(sample_fn, reference=stats)`` is what an evaluation entry
point calls.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wgan_jax import files, pixels
from wgan_jax.eval import inception
from wgan_jax.errors import UserError

DEFAULT_NUM_SAMPLES = 50_000
DEFAULT_BATCH_SIZE = 100
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
METRICS = ('fid', 'kid')

# --- the distances -----------------------------------------------------------


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
  S1 S2, which are those of A^T S2 A for S1 = V W V^T, A = V W^(1/2): a
  symmetric positive semi-definite matrix. So no complex intermediate
  results and no failures on singular covariances (fewer samples than
  features), where pytorch-fid's scipy sqrtm of S1 S2 needs an eps offset;
  and two symmetric eigensolvers instead of a Schur decomposition.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1 = np.asarray(sigma1, np.float64)
  sigma2 = np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (
      mu1.shape * 2):
    raise ValueError(f'statistics do not match: means {mu1.shape}, {mu2.shape}, '
                     f'covariances {sigma1.shape}, {sigma2.shape}')
  w, v = np.linalg.eigh(sigma1)
  a = v * np.sqrt(np.clip(w, 0.0, None))
  middle = a.T @ sigma2 @ a
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_covmean = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


@jax.jit
def _polynomial_mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
  """Unbiased MMD^2 of two equal-size samples, kernel (x.y / d + 1)^3."""
  m, d = x.shape
  hp = jax.lax.Precision.HIGHEST  # float32, also on TPUs

  def kernel(a, b):
    return (jnp.matmul(a, b.T, precision=hp) / d + 1.0) ** 3

  def sum_rows_then_all(k):
    # Two-level sums keep float32 error at ~sqrt(m) ulps, well below KID values.
    return jnp.sum(jnp.sum(k, axis=1))

  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  off_xx = sum_rows_then_all(kxx) - jnp.sum(jnp.diagonal(kxx))
  off_yy = sum_rows_then_all(kyy) - jnp.sum(jnp.diagonal(kyy))
  return ((off_xx + off_yy) / (m * (m - 1))
          - 2.0 * sum_rows_then_all(kxy) / (m * m))


def kernel_inception_distance(features1, features2, num_subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE,
                              seed: int = 0) -> tuple[float, float]:
  """KID: the mean and standard deviation over ``num_subsets`` random subsets
  (each of ``min(subset_size, n1, n2)`` features from each side, drawn
  without replacement) of the unbiased polynomial-kernel MMD^2."""
  features1 = np.asarray(features1, np.float32)
  features2 = np.asarray(features2, np.float32)
  m = min(subset_size, len(features1), len(features2))
  if m < 2:
    raise UserError(f'KID needs at least 2 samples on each side; got '
                    f'{len(features1)} and {len(features2)}.')
  rng = np.random.default_rng(seed)
  on_device1, on_device2 = jnp.asarray(features1), jnp.asarray(features2)
  values = []
  for _ in range(num_subsets):
    i = rng.choice(len(features1), m, replace=False)
    j = rng.choice(len(features2), m, replace=False)
    values.append(_polynomial_mmd2(on_device1[i], on_device2[j]))
  values = np.asarray(jax.device_get(values), np.float64)
  return float(values.mean()), float(values.std())


# --- statistics --------------------------------------------------------------


def mean_and_covariance(features, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """np.mean and np.cov(rowvar=False) in float64, in chunks (no float64 copy
  of all features)."""
  x = np.asarray(features)
  n, d = x.shape
  mu = x.mean(axis=0, dtype=np.float64)
  cov = np.zeros((d, d), np.float64)
  for start in range(0, n, chunk):
    centred = x[start:start + chunk].astype(np.float64) - mu
    cov += centred.T @ centred
  return mu, cov / max(n - 1, 1)


@dataclasses.dataclass(frozen=True)
class Statistics:
  """What FID and KID need of one side: feature mean and covariance, and the
  features themselves (for KID; None in statistics files that lack them,
  such as pytorch-fid's and TTUR's ``.npz``)."""
  mu: np.ndarray  # (2048,) float64
  sigma: np.ndarray  # (2048, 2048) float64
  count: int
  features: np.ndarray | None = None  # (count, 2048) float32

  @classmethod
  def of(cls, features: np.ndarray, keep_features: bool = True) -> Statistics:
    mu, sigma = mean_and_covariance(features)
    return cls(mu, sigma, len(features),
               np.asarray(features, np.float32) if keep_features else None)

  def save(self, path: str, **meta) -> None:
    """An ``.npz`` with ``mu`` and ``sigma`` (pytorch-fid's names), the
    features, and ``meta`` as JSON; written atomically."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    arrays = dict(mu=self.mu, sigma=self.sigma,
                  meta=np.array(json.dumps(dict(meta, count=self.count))))
    if self.features is not None:
      arrays['features'] = self.features
    files.write_atomic(path, lambda f: np.savez(f, **arrays))

  @classmethod
  def load(cls, path: str) -> tuple[Statistics, dict[str, Any]]:
    """Statistics and their metadata from ``save``, or from a pytorch-fid /
    TTUR statistics file (``mu`` and ``sigma`` only; empty metadata)."""
    try:
      with np.load(path, allow_pickle=False) as data:
        mu, sigma = data['mu'], data['sigma']
        meta = json.loads(str(data['meta'])) if 'meta' in data.files else {}
        features = data['features'] if 'features' in data.files else None
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f'cannot read FID statistics from {path} ({e}); it needs '
                      '"mu" and "sigma" arrays (an .npz of this package, '
                      'pytorch-fid or TTUR).') from e
    if mu.shape != (inception.FEATURES,) or sigma.shape != (inception.FEATURES,) * 2:
      raise UserError(f'{path}: statistics of shape {mu.shape}, {sigma.shape}, '
                      f'not of the {inception.FEATURES}-d pool3 features.')
    count = int(meta.get('count', len(features) if features is not None else 0))
    return cls(mu.astype(np.float64), sigma.astype(np.float64), count,
               features), meta


# --- features on the device ---------------------------------------------------


def quantize_8bit(images: jax.Array) -> jax.Array:
  """[-1, 1] -> the nearest of 256 levels, as saving to PNG (visualize) and
  reading back would: FID is conventionally computed on 8-bit images."""
  return pixels.levels(images, jnp) / 127.5 - 1.0


class FeatureExtractor:
  """pool3 features of batches of images (N, H, W, 1 or 3) in [-1, 1].

  One jit-compiled shape, ``(batch_size, H, W, C)``; shorter batches are
  padded. ``quantize`` rounds images to 8 bits first (see ``quantize_8bit``).
  """

  def __init__(self, variables, batch_size: int = DEFAULT_BATCH_SIZE,
               quantize: bool = True, model: inception.FIDInceptionV3 | None = None):
    if batch_size <= 0:
      raise UserError(f'batch_size={batch_size}: must be positive.')
    self.model = model or inception.FIDInceptionV3()
    self.variables = jax.device_put(variables)
    self.batch_size = batch_size
    self.quantize = quantize
    self._apply = jax.jit(self._features)

  def _features(self, variables, images):
    images = jnp.asarray(images, jnp.float32)
    if self.quantize:
      images = quantize_8bit(images)
    return self.model.apply(variables, images)

  @functools.cached_property
  def fingerprint(self) -> str:
    """Identifies the weights and preprocessing; cached statistics carry it."""
    digest = hashlib.sha256(repr((self.model, self.quantize)).encode())
    flat = jax.tree_util.tree_flatten_with_path(self.variables)[0]
    for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
      digest.update(jax.tree_util.keystr(path).encode())
      digest.update(np.ascontiguousarray(jax.device_get(leaf), np.float32).tobytes())
    return digest.hexdigest()[:16]

  def __call__(self, images) -> jax.Array:
    """Features of up to ``batch_size`` images, on the device."""
    inception.check_images(images.shape)
    n = images.shape[0]
    if n > self.batch_size:
      raise ValueError(f'{n} images in a batch of {self.batch_size}')
    if n < self.batch_size:
      pad = [(0, self.batch_size - n)] + [(0, 0)] * (images.ndim - 1)
      images = jnp.pad(jnp.asarray(images), pad)
    return self._apply(self.variables, images)[:n]

  def _gather(self, device_batches: Iterable[jax.Array], total: int | None,
              progress: bool, desc: str) -> np.ndarray:
    # Fetch batch i while batch i + 1 computes: the device never waits for us.
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    out, pending = [], None
    with tqdm(total=total, unit='img', desc=desc, disable=not progress,
              dynamic_ncols=True) as bar:
      for features in device_batches:
        if pending is not None:
          out.append(np.asarray(pending))
          bar.update(len(out[-1]))
        pending = features
      if pending is not None:
        out.append(np.asarray(pending))
        bar.update(len(out[-1]))
    if not out:
      raise UserError('no images to compute FID features of.')
    return np.concatenate(out)

  def of_batches(self, batches: Iterable, limit: int | None = None,
                 progress: bool = False) -> np.ndarray:
    """Features (N, 2048) of a stream of image batches (host or device
    arrays of any length), stopping after ``limit`` images."""

    def device_batches():
      seen = 0
      for batch in batches:
        for start in range(0, batch.shape[0], self.batch_size):
          if limit is not None and seen >= limit:
            return
          take = self.batch_size if limit is None else min(self.batch_size,
                                                           limit - seen)
          chunk = batch[start:start + take]
          seen += chunk.shape[0]
          yield self(chunk)

    return self._gather(device_batches(), limit, progress, 'FID features')

  def of_generator(self, sample_fn: Callable[[jax.Array, int], jax.Array],
                   num: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Features (num, 2048) of ``num`` samples of ``sample_fn(key, n)``, drawn
    ``batch_size`` at a time with keys ``fold_in(key(seed), i)``."""
    key = jax.random.key(seed)
    num_batches = math.ceil(num / self.batch_size)

    def device_batches():
      for i in range(num_batches):
        images = sample_fn(jax.random.fold_in(key, i), self.batch_size)
        inception.check_images(images.shape)
        if images.shape[0] != self.batch_size:
          raise ValueError(f'sample_fn(key, {self.batch_size}) returned '
                           f'{images.shape[0]} images')
        keep = min(self.batch_size, num - i * self.batch_size)
        yield self._apply(self.variables, images)[:keep]

    return self._gather(device_batches(), num, progress, 'generated samples')


def as_extractor(network, batch_size: int = DEFAULT_BATCH_SIZE) -> FeatureExtractor:
  """A FeatureExtractor from one, from variables, or from a weight file path
  (None: the default converted weights, see ``inception.load_weights``)."""
  if isinstance(network, FeatureExtractor):
    return network
  if network is None or isinstance(network, (str, os.PathLike)):
    network = inception.load_weights(None if network is None else os.fspath(network))
  return FeatureExtractor(network, batch_size)


# --- datasets and generators ---------------------------------------------------


def reference_cache_path(dataset: str, split: str, image_size: int, count: int,
                         directory: str | None = None) -> str:
  """Where the statistics of ``count`` images of a dataset split are cached."""
  directory = directory or os.path.join(inception.cache_dir(), 'fid_stats')
  return os.path.join(directory, f'{dataset}-{split}-{image_size}px-{count}.npz')


def reference_statistics(network, batches: Callable[[], Iterable], count: int,
                         cache_path: str | None = None,
                         progress: bool = False) -> Statistics:
  """Statistics of the first ``count`` images of ``batches()``, cached.

  ``batches`` is called only when the cache at ``cache_path`` (see
  ``reference_cache_path``) is missing or was made with other weights or
  preprocessing; the features are kept, so the cache serves FID and KID.
  """
  extractor = as_extractor(network)
  if cache_path and os.path.isfile(cache_path):
    stats, meta = Statistics.load(cache_path)
    if meta.get('network') == extractor.fingerprint and stats.features is not None:
      logging.info('Reference statistics from %s.', cache_path)
      return stats
    logging.info('%s was made with other weights; computing it again.', cache_path)
  stats = Statistics.of(extractor.of_batches(batches(), limit=count,
                                             progress=progress))
  if cache_path:
    stats.save(cache_path, network=extractor.fingerprint)
    logging.info('Reference statistics of %d images cached in %s.', stats.count,
                 cache_path)
  return stats


def _as_statistics(reference, extractor: FeatureExtractor) -> Statistics:
  if isinstance(reference, Statistics):
    return reference
  if isinstance(reference, (str, os.PathLike)):
    stats, meta = Statistics.load(os.fspath(reference))
    if meta.get('network', extractor.fingerprint) != extractor.fingerprint:
      raise UserError(f'{os.fspath(reference)} was computed with other Inception '
                      'weights or preprocessing; delete it to compute it again.')
    return stats
  images = np.asarray(reference)
  inception.check_images(images.shape)
  return Statistics.of(extractor.of_batches([images]))


def fid_for_generator(sample_fn: Callable[[jax.Array, int], jax.Array],
                      reference, network=None, num: int = DEFAULT_NUM_SAMPLES,
                      batch_size: int | None = None,
                      metrics: Sequence[str] = ('fid',), seed: int = 0,
                      kid_subsets: int = KID_SUBSETS,
                      kid_subset_size: int = KID_SUBSET_SIZE,
                      progress: bool = False) -> dict[str, float]:
  """FID and/or KID of ``num`` samples of a generator against a reference.

  Args:
    sample_fn: ``(key, n) -> images (n, H, W, 1 or 3)`` in [-1, 1] on the
      device, e.g. ``lambda key, n: sample(variables, jax.random.normal(key,
      (n, nz)))``; called with ``n = batch_size``.
    reference: ``Statistics`` (e.g. from ``reference_statistics``), the path of
      a statistics ``.npz`` (this package's, pytorch-fid's or TTUR's; KID
      needs one with features), or real images (N, H, W, C) in [-1, 1].
    network: a ``FeatureExtractor``, the network's variables, a weight file,
      or None for the default converted weights.
    num: generated samples (50k, the convention published FIDs use).
    batch_size: images per compiled forward pass (default: the extractor's,
      or 100).
    metrics: any of 'fid', 'kid'.

  Returns:
    ``{'fid', 'kid', 'kid_std'}`` (those asked for), ``num_samples`` and
    ``num_reference``.
  """
  unknown = [m for m in metrics if m not in METRICS]
  if unknown or not metrics:
    raise UserError(f'metrics={list(metrics)}: choose from {", ".join(METRICS)}.')
  if num < 2:
    raise UserError(f'num={num}: FID and KID need at least 2 samples.')
  extractor = as_extractor(network, batch_size or DEFAULT_BATCH_SIZE)
  if batch_size and extractor.batch_size != batch_size:
    extractor = FeatureExtractor(extractor.variables, batch_size,
                                 extractor.quantize, extractor.model)
  ref = _as_statistics(reference, extractor)
  if 'kid' in metrics and ref.features is None:
    raise UserError('KID needs the reference features, and these reference '
                    'statistics hold only mu and sigma; compute them with '
                    'fid.reference_statistics instead.')
  features = extractor.of_generator(sample_fn, num, seed, progress)
  result: dict[str, float] = {}
  if 'fid' in metrics:
    mu, sigma = mean_and_covariance(features)
    result['fid'] = frechet_distance(mu, sigma, ref.mu, ref.sigma)
  if 'kid' in metrics:
    result['kid'], result['kid_std'] = kernel_inception_distance(
        ref.features, features, kid_subsets, kid_subset_size, seed)
  result.update(num_samples=len(features), num_reference=ref.count)
  return result


def images_sample_fn(images) -> Callable[[jax.Array, int], jax.Array]:
  """A ``sample_fn`` that draws from a fixed set of images, with replacement:
  the FID of one image set against another, and tests."""
  images = jnp.asarray(images, jnp.float32)

  @functools.partial(jax.jit, static_argnums=1)
  def sample(key, n):
    return images[jax.random.randint(key, (n,), 0, images.shape[0])]

  return sample
