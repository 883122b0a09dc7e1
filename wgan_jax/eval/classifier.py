"""The digits classifier and the measures of digits and stacked digits.

* ``digits``: a small classifier (``DigitsNet``) trained here on scikit-learn's
  digits (a fixed, stratified two-thirds: ``digits_split``), its accuracy
  measured on the held-out third. Its 128-d penultimate features give the
  Frechet distance and KID (``wgan_jax.eval.fid``'s estimators) against the
  held-out digits; its predictions give the class histogram and its KL
  divergence to uniform (0: balanced; log 10: one class only).
* ``stacked_digits``: each channel classified apart, giving a mode
  ``100 * d0 + 10 * d1 + d2``; the modes covered (at least ``min_count``
  samples, 1 in the Stacked-MNIST tables of the Unrolled GAN, VEEGAN and
  PacGAN papers, on 26,000 samples) and the KL divergence of the mode
  histogram to uniform, ``KL(generated || uniform)`` as the PacGAN code
  computes it; and the Frechet distance of the three channels' features,
  concatenated.

* ``mnist5k``, ``stacked_mnist5k`` (5,000 real MNIST digits): the same
  measures with a small convnet trained on 4,000 of them, plus KID for the
  stacks and the modes covered per channel: ``wgan_jax.eval.mnist_classifier``.

Each distance comes with its floor: the same measure on real data of the same
size.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import linen as nn
from flax import serialization

from wgan_jax import files, pixels
from wgan_jax.data import embedded
from wgan_jax.errors import UserError
from wgan_jax.eval import fid
from wgan_jax.eval.points import MIN_COUNT

NUM_CLASSES = 10
NUM_STACKED_MODES = 1000
STACKED_REFERENCE = 5000  # held-out stacked digits the Frechet distance compares with


# --- the digits classifier ------------------------------------------------------

TEST_SHARE = 1 / 3
SPLIT_SEED = 0
CLASSIFIER_MAX_SIZE = 16  # larger images are shrunk to this first
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
EVAL_BATCH = 1000


def digits_split() -> tuple[np.ndarray, np.ndarray]:
  """Indices of the classifier's training and held-out digits: a fixed,
  class-stratified split of scikit-learn's 1797 (1198 and 599)."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  labels = embedded.digit_labels()
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=TEST_SHARE, stratify=labels,
      random_state=SPLIT_SEED)
  return np.sort(train), np.sort(test)


class DigitsNet(nn.Module):
  """A perceptron with two hidden layers, 256 and 128 wide: (features, logits).

  Images above 16px are first shrunk to 16px (antialiased, as
  ``wgan_jax.data`` resizes): the digits hold 8x8 pixels of information.
  Small convnets score a little higher (98.5% against 98%) but train three
  times slower on a CPU, and seconds matter more here.
  """
  hidden: int = 256
  features: int = 128

  @nn.compact
  def __call__(self, x):
    n, size = x.shape[0], x.shape[1]
    if size > CLASSIFIER_MAX_SIZE:
      x = jax.image.resize(x, (n, CLASSIFIER_MAX_SIZE, CLASSIFIER_MAX_SIZE, x.shape[-1]),
                           'linear')
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(n, -1)))
    features = nn.relu(nn.Dense(self.features)(x))
    return features, nn.Dense(NUM_CLASSES)(features)


_NET = DigitsNet()
# Names the training recipe in cache files, so a changed recipe retrains.
RECIPE = hashlib.sha256(repr((_NET, EPOCHS, BATCH_SIZE, LEARNING_RATE, TEST_SHARE,
                              SPLIT_SEED, CLASSIFIER_MAX_SIZE)).encode()).hexdigest()[:10]


@jax.jit
def _forward(params, images):
  return _NET.apply({'params': params}, images)


def float_images(images) -> np.ndarray:
  """uint8 pixels or floats in [-1, 1] -> float32 in [-1, 1]."""
  return np.asarray(pixels.to_float(np.asarray(images)), np.float32)


@dataclasses.dataclass(frozen=True)
class DigitsClassifier:
  """The trained ``DigitsNet`` for one image size, with its held-out accuracy."""
  image_size: int
  params: Any
  test_accuracy: float

  def outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) and logits (N, 10) of grey images (N, S, S, 1)."""
    images = float_images(images)
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 1):
      raise UserError(f'the digits classifier takes images of shape (N, '
                      f'{self.image_size}, {self.image_size}, 1); got {images.shape}.')
    features, logits = [], []
    for start in range(0, len(images), EVAL_BATCH):
      chunk = images[start:start + EVAL_BATCH]
      # One compiled shape: the last chunk is padded.
      padded = np.pad(chunk, [(0, EVAL_BATCH - len(chunk))] + [(0, 0)] * 3)
      f, l = jax.device_get(_forward(self.params, padded))
      features.append(f[:len(chunk)])
      logits.append(l[:len(chunk)])
    return np.concatenate(features), np.concatenate(logits)

  def features(self, images) -> np.ndarray:
    """Penultimate-layer features (N, 128) of grey images (N, S, S, 1)."""
    return self.outputs(images)[0]

  def predict(self, images) -> np.ndarray:
    """The most likely class (N,) of grey images (N, S, S, 1)."""
    return np.argmax(self.outputs(images)[1], axis=1)


def fit(net, tx, params, batches):
  """``params`` of ``net`` (which returns (features, logits)) trained with
  ``tx`` on softmax cross-entropy, one step per (images, labels) of ``batches``."""
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      _, logits = net.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  for x, y in batches:
    params, opt_state = step(params, opt_state, x, y)
  return params


def train_digits_classifier(image_size: int, seed: int = 0) -> DigitsClassifier:
  """Trains ``DigitsNet`` on the training split of the digits at
  ``image_size`` (Adam, cross-entropy); deterministic given ``seed``."""
  images = embedded.load_digits(image_size)
  labels = embedded.digit_labels()
  train, test = digits_split()
  params = _NET.init(jax.random.key(seed), images[:1])['params']
  x_train, y_train = jnp.asarray(images[train]), jnp.asarray(labels[train])
  rng = np.random.default_rng(seed)

  def batches():
    for _ in range(EPOCHS):
      order = rng.permutation(len(train))
      # Whole batches only: one compiled shape.
      for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
        batch = order[start:start + BATCH_SIZE]
        yield x_train[batch], y_train[batch]

  params = fit(_NET, optax.adam(LEARNING_RATE), params, batches())
  classifier = DigitsClassifier(image_size, jax.device_get(params), 0.0)
  accuracy = float(np.mean(classifier.predict(images[test]) == labels[test]))
  return dataclasses.replace(classifier, test_accuracy=accuracy)


_CLASSIFIERS: dict[tuple[int, int], DigitsClassifier] = {}


def classifier_cache_path(cache_dir: str, image_size: int, seed: int) -> str:
  return os.path.join(cache_dir, f'digits_classifier-{image_size}px-seed{seed}-{RECIPE}.msgpack')


def digits_classifier(image_size: int, seed: int = 0,
                      cache_dir: str | None = None) -> DigitsClassifier:
  """The classifier for ``image_size``: trained once per process (a few
  seconds on a CPU), and kept in ``cache_dir`` if given, to be read back by
  later processes."""
  key = (image_size, seed)
  if key in _CLASSIFIERS:
    return _CLASSIFIERS[key]
  path = classifier_cache_path(cache_dir, image_size, seed) if cache_dir else None
  classifier = None
  if path and os.path.isfile(path):
    try:
      with open(path, 'rb') as f:
        saved = serialization.msgpack_restore(f.read())
      classifier = DigitsClassifier(image_size, saved['params'],
                                    float(saved['test_accuracy']))
    except (OSError, ValueError, KeyError) as e:
      logging.warning('Cannot read the digits classifier in %s (%s); training '
                      'it again.', path, e)
  if classifier is None:
    classifier = train_digits_classifier(image_size, seed)
    logging.info('Digits classifier (%dpx): held-out accuracy %.4f.', image_size,
                 classifier.test_accuracy)
    if path:
      os.makedirs(cache_dir, exist_ok=True)
      files.write_atomic(path, lambda f: f.write(serialization.msgpack_serialize(
          {'params': classifier.params, 'test_accuracy': classifier.test_accuracy})))
  _CLASSIFIERS[key] = classifier
  return classifier


# --- digits and stacked digits ----------------------------------------------------


def class_histogram(labels, num_classes: int) -> np.ndarray:
  """The share of each class 0..num_classes-1 among ``labels``."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  return counts / max(counts.sum(), 1)


def kl_to_uniform(histogram) -> float:
  """KL(p || uniform) of a histogram (counts or shares): log K - entropy(p)."""
  p = np.asarray(histogram, np.float64)
  p = p / p.sum()
  nonzero = p > 0
  return float(np.sum(p[nonzero] * np.log(p[nonzero] * len(p))))


KID_SUBSETS = 20  # the held-out digits are fewer than 1000: each subset is most of them


def feature_distances(features, reference, seed: int = 0) -> dict[str, float]:
  """Frechet distance and KID (mean and std over ``KID_SUBSETS`` subsets) of
  two feature sets, with ``wgan_jax.eval.fid``'s estimators: ``{'fd', 'kid',
  'kid_std'}``."""
  mu, sigma = fid.mean_and_covariance(features)
  mu_ref, sigma_ref = fid.mean_and_covariance(reference)
  kid, kid_std = fid.kernel_inception_distance(reference, features, KID_SUBSETS,
                                               seed=seed)
  return {'fd': fid.frechet_distance(mu, sigma, mu_ref, sigma_ref), 'kid': kid,
          'kid_std': kid_std}


def checked_images(samples, channels: tuple[int, ...], dataset_name: str) -> np.ndarray:
  """``samples`` as float images (N, S, S, C) with C in ``channels``, or a UserError."""
  images = float_images(samples)
  if images.ndim != 4 or images.shape[1] != images.shape[2] or (
      images.shape[3] not in channels) or not len(images):
    raise UserError(f'{dataset_name} measures need images (N, S, S, '
                    f'{" or ".join(map(str, channels))}); got {images.shape}.')
  return images


# References and floors depend only on their arguments: computed once per
# process, however many checkpoints are evaluated.


@functools.lru_cache(maxsize=8)
def _digits_reference(image_size: int, classifier_seed: int, cache_dir: str | None):
  """Classifier features of the held-out digits."""
  classifier = digits_classifier(image_size, classifier_seed, cache_dir)
  return classifier.features(embedded.load_digits(image_size)[digits_split()[1]])


def _digits_scores(images, image_size: int, seed: int, classifier_seed: int,
                   cache_dir: str | None) -> dict[str, float]:
  classifier = digits_classifier(image_size, classifier_seed, cache_dir)
  features, logits = classifier.outputs(images)
  result = feature_distances(features, _digits_reference(image_size, classifier_seed,
                                                         cache_dir), seed)
  result['class_kl'] = kl_to_uniform(class_histogram(np.argmax(logits, axis=1),
                                                     NUM_CLASSES))
  return result


@functools.lru_cache(maxsize=32)
def _digits_floor(image_size: int, n: int, seed: int, classifier_seed: int,
                  cache_dir: str | None) -> dict[str, float]:
  """The scores of ``n`` training-split digits (drawn with replacement only
  where ``n`` exceeds them)."""
  train = digits_split()[0]
  picks = np.random.default_rng([seed, 3]).choice(train, n, replace=n > len(train))
  images = embedded.load_digits(image_size)[picks]
  return _digits_scores(images, image_size, seed, classifier_seed, cache_dir)


def digits_metrics(samples, *, seed: int = 0, classifier_seed: int = 0,
                   cache_dir: str | None = None) -> dict[str, float]:
  """Digit images (N, S, S, 1 or 3; colour is averaged to grey) against the
  held-out digits: ``fd``, ``kid``, ``kid_std``, ``class_kl``, with
  ``fd_floor``, ``kid_floor``, ``class_kl_floor`` from as many real
  training-split digits, and the classifier's ``classifier_accuracy``."""
  images = checked_images(samples, (1, 3), 'digits').mean(axis=-1, keepdims=True)
  size, n = images.shape[1], len(images)
  result = _digits_scores(images, size, seed, classifier_seed, cache_dir)
  floor = _digits_floor(size, n, seed, classifier_seed, cache_dir)
  result.update({f'{k}_floor': v for k, v in floor.items() if k != 'kid_std'})
  result.update(
      classifier_accuracy=digits_classifier(size, classifier_seed, cache_dir).test_accuracy,
      num_samples=float(n))
  return result


def _stacked_outputs(images, classifier: DigitsClassifier) -> tuple[np.ndarray, np.ndarray]:
  images = checked_images(images, (3,), 'stacked_digits')
  outputs = [classifier.outputs(images[..., c:c + 1]) for c in range(3)]
  features = np.concatenate([f for f, _ in outputs], axis=1)
  digits = [np.argmax(logits, axis=1) for _, logits in outputs]
  return features, 100 * digits[0] + 10 * digits[1] + digits[2]


def stacked_modes(images, classifier: DigitsClassifier) -> np.ndarray:
  """The mode ``100 * d0 + 10 * d1 + d2`` (N,) of stacked digits (N, S, S, 3),
  each channel's digit d told by ``classifier``."""
  return _stacked_outputs(images, classifier)[1]


def stacked_features(images, classifier: DigitsClassifier) -> np.ndarray:
  """The three channels' classifier features, concatenated: (N, 384)."""
  return _stacked_outputs(images, classifier)[0]


@functools.lru_cache(maxsize=8)
def _stacked_reference(image_size: int, seed: int, classifier_seed: int,
                       cache_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """Feature mean and covariance of ``STACKED_REFERENCE`` stacks of
  held-out digits."""
  real, labels = embedded.load_digits(image_size)[..., 0], embedded.digit_labels()
  test = digits_split()[1]
  stacks, _ = embedded.stack_digits(real[test], labels[test], STACKED_REFERENCE,
                                          np.random.default_rng([seed, 4]))
  classifier = digits_classifier(image_size, classifier_seed, cache_dir)
  return fid.mean_and_covariance(stacked_features(stacks, classifier))


def _stacked_scores(images, image_size: int, seed: int, min_count: int,
                    classifier_seed: int, cache_dir: str | None) -> dict[str, float]:
  classifier = digits_classifier(image_size, classifier_seed, cache_dir)
  features, modes = _stacked_outputs(images, classifier)
  counts = np.bincount(modes, minlength=NUM_STACKED_MODES)
  mu, sigma = fid.mean_and_covariance(features)
  return {'modes': float(np.sum(counts >= min_count)), 'mode_kl': kl_to_uniform(counts),
          'fd': fid.frechet_distance(mu, sigma, *_stacked_reference(
              image_size, seed, classifier_seed, cache_dir))}


@functools.lru_cache(maxsize=32)
def _stacked_floor(image_size: int, n: int, seed: int, min_count: int,
                   classifier_seed: int, cache_dir: str | None) -> dict[str, float]:
  """The scores of ``n`` stacks of training-split digits."""
  real, labels = embedded.load_digits(image_size)[..., 0], embedded.digit_labels()
  train = digits_split()[0]
  stacks, _ = embedded.stack_digits(real[train], labels[train], n,
                                          np.random.default_rng([seed, 5]))
  return _stacked_scores(stacks, image_size, seed, min_count, classifier_seed, cache_dir)


def stacked_digits_metrics(samples, *, seed: int = 0, classifier_seed: int = 0,
                           cache_dir: str | None = None,
                           min_count: int = MIN_COUNT) -> dict[str, float]:
  """Stacked digits (N, S, S, 3): ``modes`` covered (of ``modes_total`` =
  1000; at least ``min_count`` samples each), ``mode_kl`` to uniform, and
  ``fd`` against ``STACKED_REFERENCE`` stacks of held-out digits, each with a
  ``*_floor`` from N stacks of training-split digits; and
  ``classifier_accuracy`` (per digit; a stack is right with about its cube)."""
  if min_count < 1:
    raise UserError(f'min_count={min_count}: must be at least 1.')
  images = checked_images(samples, (3,), 'stacked_digits')
  size, n = images.shape[1], len(images)
  result = _stacked_scores(images, size, seed, min_count, classifier_seed, cache_dir)
  floor = _stacked_floor(size, n, seed, min_count, classifier_seed, cache_dir)
  result.update({f'{k}_floor': v for k, v in floor.items()})
  result.update(
      modes_total=float(NUM_STACKED_MODES),
      classifier_accuracy=digits_classifier(size, classifier_seed, cache_dir).test_accuracy,
      num_samples=float(n))
  return result
