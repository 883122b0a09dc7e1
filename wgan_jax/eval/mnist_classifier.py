"""The digit classifier of ``mnist5k`` and ``stacked_mnist5k``, and their measures.

``MnistNet``, a small Flax convnet (two strided 5x5 convolutions, 16 and 32
wide, then 128 features and 10 logits), is trained once on the 4,000
training digits of ``wgan_jax.data.mnist5k.split()`` at 32px (Adam, random
shifts of up to 2 pixels, a fixed seed: ~10-20 s on a 2-core CPU) and tested
on the other 1,000 (``test_accuracy``, 98-99%). It is kept in memory per
process and on disk, in ``cache_dir`` (default ``$WGAN_JAX_CACHE``, else
``~/.cache/wgan_jax``), named by the training recipe, so a changed recipe
trains again. Images of other sizes are resized to 32px first.

The measures mirror ``wgan_jax.metrics``' digits and stacked digits:

* ``mnist5k``: the classes the classifier sees (``modes`` covered of 10, at
  least ``min_count`` samples each) and the KL divergence of the class
  histogram to uniform (``mode_kl``: 0 balanced, log 10 one class); the
  Frechet distance and KID of its 128-d features against the 1,000 held-out
  digits.
* ``stacked_mnist5k``: each channel classified apart, the mode
  ``100 * d0 + 10 * d1 + d2``: ``modes`` covered of 1,000 and ``mode_kl``
  (the Stacked-MNIST protocol of the Unrolled GAN, VEEGAN and PacGAN papers:
  26,000 samples, a mode counts with one sample), the digits covered in each
  channel (``channel{c}_modes`` of 10), and FD and KID of the three channels'
  features concatenated (384-d) against ``STACKED_REFERENCE`` stacks of
  held-out digits.

Every measure comes with its ``*_floor``: the same measure of as many real
training-split digits (stacks), what a perfect generator scores.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any

import jax
import numpy as np
import optax
from absl import logging
from flax import linen as nn
from flax import serialization

from wgan_jax.data import mnist5k
from wgan_jax.errors import UserError
from wgan_jax.eval import classifier as digits_classifier
from wgan_jax.eval import points

IMAGE_SIZE = mnist5k.IMAGE_SIZE  # the classifier's input size; others are resized
NUM_CLASSES = mnist5k.NUM_CLASSES
NUM_STACKED_MODES = mnist5k.NUM_STACKED_MODES
EPOCHS = 16
BATCH_SIZE = 64
LEARNING_RATE = 2e-3  # the peak of a cosine decay
MAX_SHIFT = 2  # training images are shifted by up to this many pixels each way
EVAL_BATCH = 1000
STACKED_REFERENCE = 5000  # held-out stacks the stacked distances compare with
MIN_COUNT = points.MIN_COUNT
# wgan_jax.eval.metrics.NUM_SAMPLES has the default sample counts: 4,000 for mnist5k (as
# many as the classifier's training digits: the floor draws each once) and
# the Stacked-MNIST protocol's 26,000.


class MnistNet(nn.Module):
  """32px grey digits in [-1, 1] -> (features (N, 128), logits (N, 10))."""
  widths: tuple[int, ...] = (16, 32)
  features: int = 128

  @nn.compact
  def __call__(self, x):
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (5, 5), strides=(2, 2), padding='SAME')(x))
    features = nn.relu(nn.Dense(self.features)(x.reshape(len(x), -1)))
    return features, nn.Dense(NUM_CLASSES)(features)


_NET = MnistNet()
# Names the recipe in cache files: a changed net, schedule or split retrains.
RECIPE = hashlib.sha256(repr((_NET, EPOCHS, BATCH_SIZE, LEARNING_RATE, MAX_SHIFT,
                              IMAGE_SIZE, mnist5k.TEST_SIZE, mnist5k.SPLIT_SEED,
                              mnist5k.PAD)).encode()).hexdigest()[:10]


@jax.jit
def _forward(params, images):
  return _NET.apply({'params': params}, images)


def _to_classifier_size(images: np.ndarray) -> np.ndarray:
  """(N, S, S, 1) floats -> (N, 32, 32, 1) (bilinear, antialiased shrinking)."""
  if images.shape[1] == IMAGE_SIZE:
    return images
  return np.asarray(jax.image.resize(images, (len(images), IMAGE_SIZE, IMAGE_SIZE, 1),
                                     'linear'))


@dataclasses.dataclass(frozen=True)
class MnistClassifier:
  """The trained ``MnistNet``, with its accuracy on the 1,000 held-out digits."""
  params: Any
  test_accuracy: float

  def outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) and logits (N, 10) of grey images (N, S, S, 1),
    uint8 pixels or floats in [-1, 1]."""
    images = digits_classifier.float_images(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 1:
      raise UserError(f'the MNIST classifier takes grey images (N, S, S, 1); got '
                      f'{images.shape}.')
    features, logits = [], []
    for start in range(0, len(images), EVAL_BATCH):
      chunk = _to_classifier_size(images[start:start + EVAL_BATCH])
      n = len(chunk)
      # One compiled shape: the last chunk is padded.
      chunk = np.pad(chunk, [(0, EVAL_BATCH - n)] + [(0, 0)] * 3)
      f, l = jax.device_get(_forward(self.params, chunk))
      features.append(f[:n])
      logits.append(l[:n])
    return np.concatenate(features), np.concatenate(logits)

  def features(self, images) -> np.ndarray:
    return self.outputs(images)[0]

  def predict(self, images) -> np.ndarray:
    """The most likely digit (N,) of grey images (N, S, S, 1)."""
    return np.argmax(self.outputs(images)[1], axis=1)


def _shifted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each image moved by up to ``MAX_SHIFT`` pixels each way (black fill)."""
  n, size = len(images), images.shape[1]
  padded = np.pad(images, [(0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT),
                           (0, 0)], constant_values=-1.0)
  dy, dx = rng.integers(0, 2 * MAX_SHIFT + 1, (2, n))
  rows = dy[:, None] + np.arange(size)  # (n, size)
  cols = dx[:, None] + np.arange(size)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train_classifier(seed: int = 0) -> MnistClassifier:
  """Trains ``MnistNet`` on the 4,000 training digits at 32px (Adam,
  cross-entropy, random shifts); deterministic given ``seed``. Its
  ``test_accuracy`` is on the 1,000 held-out digits."""
  images = digits_classifier.float_images(mnist5k.load_mnist5k(IMAGE_SIZE))
  labels = mnist5k.labels()
  train, test = mnist5k.split()
  steps_per_epoch = len(train) // BATCH_SIZE
  # The learning rate falls to 0 along a cosine: ~1% better than a constant one.
  tx = optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, EPOCHS * steps_per_epoch))
  params = _NET.init(jax.random.key(seed), images[:1])['params']
  rng = np.random.default_rng(seed)
  x_train, y_train = images[train], labels[train]

  def batches():
    for _ in range(EPOCHS):
      order = rng.permutation(len(train))
      x_epoch = _shifted(x_train[order], rng)
      # Whole batches only: one compiled shape.
      for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
        yield (x_epoch[start:start + BATCH_SIZE],
               y_train[order[start:start + BATCH_SIZE]])

  params = digits_classifier.fit(_NET, tx, params, batches())
  classifier = MnistClassifier(jax.device_get(params), 0.0)
  accuracy = float(np.mean(classifier.predict(images[test]) == labels[test]))
  return dataclasses.replace(classifier, test_accuracy=accuracy)


def default_cache_dir() -> str:
  """$WGAN_JAX_CACHE, else $XDG_CACHE_HOME/wgan_jax, else ~/.cache/wgan_jax
  (where ``wgan_jax.inception`` keeps its weights)."""
  from wgan_jax.eval import inception  # pylint: disable=g-import-not-at-top
  return inception.cache_dir()


def cache_path(cache_dir: str, seed: int) -> str:
  return os.path.join(cache_dir, f'mnist5k_classifier-seed{seed}-{RECIPE}.msgpack')


_CLASSIFIERS: dict[int, MnistClassifier] = {}


def classifier(seed: int = 0, cache_dir: str | None = None) -> MnistClassifier:
  """The classifier of ``seed``: from memory, else from ``cache_dir``'s file
  (None: ``default_cache_dir()``; '' keeps it in memory only), else trained
  (and written there), with its held-out accuracy logged."""
  if seed in _CLASSIFIERS:
    return _CLASSIFIERS[seed]
  cache_dir = default_cache_dir() if cache_dir is None else cache_dir
  path = cache_path(cache_dir, seed) if cache_dir else None
  found = None
  if path and os.path.isfile(path):
    try:
      with open(path, 'rb') as f:
        saved = serialization.msgpack_restore(f.read())
      found = MnistClassifier(saved['params'], float(saved['test_accuracy']))
    except (OSError, ValueError, KeyError) as e:
      logging.warning('Cannot read the MNIST classifier in %s (%s); training it '
                      'again.', path, e)
  if found is None:
    found = train_classifier(seed)
    if path:
      try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'wb') as f:
          f.write(serialization.msgpack_serialize(
              {'params': found.params, 'test_accuracy': found.test_accuracy}))
        os.replace(tmp, path)
      except OSError as e:
        logging.warning('Cannot keep the MNIST classifier in %s (%s).', path, e)
  logging.info('MNIST classifier (seed %d): held-out accuracy %.4f on %d digits.',
               seed, found.test_accuracy, mnist5k.TEST_SIZE)
  _CLASSIFIERS[seed] = found
  return found


# --- the measures ---------------------------------------------------------------


def _with_floor(result: dict, floor: dict, modes_total: int, n: int, classifier_seed: int,
                cache_dir: str | None) -> dict[str, float]:
  """``result`` with each floor (but KID's std), the mode count and the
  classifier's held-out accuracy."""
  result.update({f'{k}_floor': v for k, v in floor.items() if k != 'kid_std'})
  result.update(modes_total=float(modes_total),
                classifier_accuracy=classifier(classifier_seed, cache_dir).test_accuracy,
                num_samples=float(n))
  return result


def _check_min_count(min_count: int) -> None:
  if min_count < 1:
    raise UserError(f'min_count={min_count}: must be at least 1.')


# References and floors depend only on their arguments: computed once per
# process, however many checkpoints are evaluated.


@functools.lru_cache(maxsize=8)
def _mnist_reference(image_size: int, classifier_seed: int,
                     cache_dir: str | None) -> np.ndarray:
  """Classifier features of the 1,000 held-out digits at ``image_size``."""
  held_out = mnist5k.load_mnist5k(image_size)[mnist5k.split()[1]]
  return classifier(classifier_seed, cache_dir).features(held_out)


def _mnist_scores(images, seed: int, min_count: int, classifier_seed: int,
                  cache_dir: str | None) -> dict[str, float]:
  features, logits = classifier(classifier_seed, cache_dir).outputs(images)
  counts = np.bincount(np.argmax(logits, axis=1), minlength=NUM_CLASSES)
  result = digits_classifier.feature_distances(
      features, _mnist_reference(images.shape[1], classifier_seed, cache_dir), seed)
  result.update(modes=float(np.sum(counts >= min_count)),
                mode_kl=digits_classifier.kl_to_uniform(counts))
  return result


@functools.lru_cache(maxsize=32)
def _mnist_floor(image_size: int, n: int, seed: int, min_count: int,
                 classifier_seed: int, cache_dir: str | None) -> dict[str, float]:
  """The scores of ``n`` training-split digits (drawn with replacement only
  where ``n`` exceeds their 4,000)."""
  train = mnist5k.split()[0]
  picks = np.random.default_rng([seed, 3]).choice(train, n, replace=n > len(train))
  images = mnist5k.load_mnist5k(image_size)[picks]
  return _mnist_scores(digits_classifier.float_images(images), seed, min_count, classifier_seed, cache_dir)


def mnist5k_metrics(samples, *, seed: int = 0, classifier_seed: int = 0,
                    cache_dir: str | None = None,
                    min_count: int = MIN_COUNT) -> dict[str, float]:
  """Digit images (N, S, S, 1 or 3; colour is averaged to grey): ``modes``
  (digits the classifier finds at least ``min_count`` times, of
  ``modes_total`` = 10), ``mode_kl`` (the class histogram's KL to uniform),
  ``fd``, ``kid``, ``kid_std`` against the 1,000 held-out digits; each (but
  ``kid_std``) with its ``*_floor`` from as many training-split digits; and
  the classifier's held-out ``classifier_accuracy``."""
  _check_min_count(min_count)
  images = digits_classifier.checked_images(samples, (1, 3), mnist5k.NAME).mean(axis=-1, keepdims=True)
  size, n = images.shape[1], len(images)
  result = _mnist_scores(images, seed, min_count, classifier_seed, cache_dir)
  floor = _mnist_floor(size, n, seed, min_count, classifier_seed, cache_dir)
  return _with_floor(result, floor, NUM_CLASSES, n, classifier_seed, cache_dir)


def stacked_outputs(images, net: MnistClassifier) -> tuple[np.ndarray, np.ndarray]:
  """Stacked digits (N, S, S, 3) -> the three channels' features
  concatenated (N, 384) and each channel's digit (N, 3)."""
  images = digits_classifier.checked_images(images, (3,), mnist5k.STACKED_NAME)
  outputs = [net.outputs(images[..., c:c + 1]) for c in range(3)]
  features = np.concatenate([f for f, _ in outputs], axis=1)
  digits = np.stack([np.argmax(logits, axis=1) for _, logits in outputs], axis=1)
  return features, digits


def stacked_modes(images, net: MnistClassifier) -> np.ndarray:
  """The mode ``100 * d0 + 10 * d1 + d2`` (N,) of stacked digits (N, S, S, 3)."""
  return stacked_outputs(images, net)[1] @ np.array([100, 10, 1])


@functools.lru_cache(maxsize=8)
def _stacked_reference(image_size: int, seed: int, classifier_seed: int,
                       cache_dir: str | None) -> np.ndarray:
  """Features of ``STACKED_REFERENCE`` stacks of held-out digits."""
  test = mnist5k.split()[1]
  stacks, _ = mnist5k.stack(mnist5k.load_mnist5k(image_size)[test, ..., 0],
                            mnist5k.labels()[test], STACKED_REFERENCE,
                            np.random.default_rng([seed, 4]))
  return stacked_outputs(stacks, classifier(classifier_seed, cache_dir))[0]


def _stacked_scores(images, seed: int, min_count: int, classifier_seed: int,
                    cache_dir: str | None) -> dict[str, float]:
  features, digits = stacked_outputs(images, classifier(classifier_seed, cache_dir))
  counts = np.bincount(digits @ np.array([100, 10, 1]), minlength=NUM_STACKED_MODES)
  result = digits_classifier.feature_distances(
      features, _stacked_reference(images.shape[1], seed, classifier_seed, cache_dir),
      seed)
  result.update(modes=float(np.sum(counts >= min_count)),
                mode_kl=digits_classifier.kl_to_uniform(counts))
  for c in range(3):
    channel = np.bincount(digits[:, c], minlength=NUM_CLASSES)
    result[f'channel{c}_modes'] = float(np.sum(channel >= min_count))
  return result


@functools.lru_cache(maxsize=32)
def _stacked_floor(image_size: int, n: int, seed: int, min_count: int,
                   classifier_seed: int, cache_dir: str | None) -> dict[str, float]:
  """The scores of ``n`` stacks of training-split digits."""
  train = mnist5k.split()[0]
  stacks, _ = mnist5k.stack(mnist5k.load_mnist5k(image_size)[train, ..., 0],
                            mnist5k.labels()[train], n, np.random.default_rng([seed, 5]))
  return _stacked_scores(stacks, seed, min_count, classifier_seed, cache_dir)


def stacked_mnist5k_metrics(samples, *, seed: int = 0, classifier_seed: int = 0,
                            cache_dir: str | None = None,
                            min_count: int = MIN_COUNT) -> dict[str, float]:
  """Stacked digits (N, S, S, 3): ``modes`` covered (at least ``min_count``
  samples, of ``modes_total`` = 1000), ``mode_kl`` to uniform,
  ``channel0_modes`` .. ``channel2_modes`` (digits covered per channel, of
  10), ``fd``, ``kid``, ``kid_std`` against ``STACKED_REFERENCE`` stacks of
  held-out digits; each (but ``kid_std``) with its ``*_floor`` from N stacks
  of training-split digits; and ``classifier_accuracy`` (per digit; a stack
  is right with about its cube)."""
  _check_min_count(min_count)
  images = digits_classifier.checked_images(samples, (3,), mnist5k.STACKED_NAME)
  size, n = images.shape[1], len(images)
  result = _stacked_scores(images, seed, min_count, classifier_seed, cache_dir)
  floor = _stacked_floor(size, n, seed, min_count, classifier_seed, cache_dir)
  return _with_floor(result, floor, NUM_STACKED_MODES, n, classifier_seed, cache_dir)


def evaluate_samples(dataset_name: str, samples, **kwargs) -> dict[str, float]:
  """``mnist5k_metrics`` or ``stacked_mnist5k_metrics`` (``kwargs``: seed,
  classifier_seed, cache_dir, min_count)."""
  if dataset_name == mnist5k.NAME:
    return mnist5k_metrics(samples, **kwargs)
  if dataset_name == mnist5k.STACKED_NAME:
    return stacked_mnist5k_metrics(samples, **kwargs)
  raise UserError(f'{dataset_name!r} is not one of {", ".join(mnist5k.DATASETS)}.')
