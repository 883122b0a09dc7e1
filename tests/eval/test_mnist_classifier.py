"""The mnist5k classifier and the measures built on it, on known answers.

The classifier is trained once per session (~10-40 s on a 2-core CPU) into a
temporary directory; nothing is written to the user's cache or downloaded.
"""

import math
import os
import time

import jax
import numpy as np
import pytest

from wgan_jax import evaluate, train
from wgan_jax.eval import metrics
from wgan_jax.data import mnist5k
from wgan_jax.errors import UserError
from wgan_jax.eval import mnist_classifier as mc


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('mnist5k_classifier'))


@pytest.fixture(scope='module')
def classifier(cache_dir):
  start = time.perf_counter()
  net = mc.classifier(0, cache_dir)
  print(f'MNIST classifier: held-out accuracy {net.test_accuracy:.4f} '
        f'({time.perf_counter() - start:.1f} s to train or read)')
  return net


@pytest.fixture(scope='module')
def real():
  return mnist5k.load_mnist5k(), mnist5k.labels(), *mnist5k.split()


def test_classifier_reaches_97_percent_on_the_held_out_digits(classifier, real):
  images, labels, _, test = real
  assert classifier.test_accuracy >= 0.97  # 0.984 with seed 0
  assert classifier.test_accuracy == np.mean(classifier.predict(images[test]) == labels[test])
  assert mc.classifier(0) is classifier  # once per process
  # uint8 pixels and floats in [-1, 1] are the same images.
  floats = images[test[:50]].astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(classifier.features(floats),
                             classifier.features(images[test[:50]]), atol=1e-5)
  # 16px digits are resized to 32px and still read.
  small = mnist5k.load_mnist5k(16)[test]
  assert np.mean(classifier.predict(small) == labels[test]) > 0.9


@pytest.mark.slow  # ~25 s: trains again
def test_training_is_deterministic(classifier):
  again = mc.train_classifier(0)
  assert again.test_accuracy == classifier.test_accuracy
  jax.tree.map(np.testing.assert_array_equal, again.params, classifier.params)


def test_classifier_cache_file(tmp_path, monkeypatch, classifier, real):
  images = real[0][:50]
  monkeypatch.setattr(mc, '_CLASSIFIERS', {})
  monkeypatch.setattr(mc, 'train_classifier', lambda seed: classifier)
  assert mc.classifier(0, str(tmp_path)) is classifier
  path = mc.cache_path(str(tmp_path), 0)
  assert os.path.isfile(path) and mc.RECIPE in path

  def no_training(seed):
    raise AssertionError('the cached classifier should have been read')

  monkeypatch.setattr(mc, '_CLASSIFIERS', {})
  monkeypatch.setattr(mc, 'train_classifier', no_training)
  loaded = mc.classifier(0, str(tmp_path))
  assert loaded.test_accuracy == classifier.test_accuracy
  np.testing.assert_array_equal(loaded.features(images), classifier.features(images))
  # A damaged file is trained again; None is the default cache directory.
  with open(path, 'wb') as f:
    f.write(b'not msgpack')
  monkeypatch.setattr(mc, '_CLASSIFIERS', {})
  monkeypatch.setattr(mc, 'train_classifier', lambda seed: classifier)
  assert mc.classifier(0, str(tmp_path)) is classifier
  monkeypatch.setenv('WGAN_JAX_CACHE', str(tmp_path / 'default'))
  monkeypatch.setattr(mc, '_CLASSIFIERS', {})
  mc.classifier(0)
  assert os.path.isfile(mc.cache_path(str(tmp_path / 'default'), 0))


def test_real_digits_cover_all_modes_at_the_floor(classifier, real, cache_dir):
  images, labels, train, test = real
  samples = images[np.random.default_rng(7).choice(train, 2000, replace=False)]
  result = metrics.evaluate_samples('mnist5k', samples, cache_dir=cache_dir)
  assert set(result) == {'modes', 'modes_total', 'mode_kl', 'fd', 'kid', 'kid_std',
                         'modes_floor', 'mode_kl_floor', 'fd_floor', 'kid_floor',
                         'classifier_accuracy', 'num_samples'}
  assert all(type(v) is float for v in result.values())
  assert result['modes'] == result['modes_floor'] == result['modes_total'] == 10
  assert result['mode_kl'] < 0.01 and result['mode_kl_floor'] < 0.01
  assert result['fd'] < 1.5 * result['fd_floor'] + 1
  assert result['classifier_accuracy'] == classifier.test_accuracy
  # One image over and over: one mode, KL log 10, far from the held-out digits.
  one = metrics.evaluate_samples('mnist5k', np.repeat(images[test[:1]], 2000, axis=0),
                                 cache_dir=cache_dir)
  assert (one['modes'], one['modes_total']) == (1, 10)
  assert one['mode_kl'] == pytest.approx(math.log(10))
  assert one['fd'] > 20 * result['fd']
  assert abs(result['kid'] - result['kid_floor']) < 0.01 * one['kid']
  # Only sevens: nearly one mode; colour copies and floats score as grey uint8.
  sevens = metrics.evaluate_samples('mnist5k', images[labels == 7], cache_dir=cache_dir)
  assert sevens['mode_kl'] > 0.9 * math.log(10) and sevens['fd'] > 10 * result['fd']
  colour = np.repeat(samples, 3, axis=-1).astype(np.float32) / 127.5 - 1
  assert metrics.evaluate_samples('mnist5k', colour, cache_dir=cache_dir)['fd'] == (
      pytest.approx(result['fd'], rel=1e-4))


def test_stacked_modes_are_the_digit_triples(classifier):
  images, modes = mnist5k.load_stacked_mnist5k(count=3000, seed=5)
  predicted = mc.stacked_modes(images, classifier)
  # Each digit is right ~99% of the time (most of these were trained on).
  assert np.mean(predicted == modes) > 0.93
  swapped = mc.stacked_modes(images[..., ::-1], classifier)
  np.testing.assert_array_equal(swapped, predicted % 10 * 100 + predicted // 10 % 10 * 10
                                + predicted // 100)


@pytest.mark.slow  # ~25 s: 3 x 21,600 digits through the classifier
def test_real_stacks_cover_all_modes_at_the_floor(classifier, cache_dir):
  real, _ = mnist5k.load_stacked_mnist5k(count=8000, seed=6)
  result = metrics.evaluate_samples('stacked_mnist5k', real, cache_dir=cache_dir)
  assert set(result) == {'modes', 'modes_total', 'mode_kl', 'fd', 'kid', 'kid_std',
                         'channel0_modes', 'channel1_modes', 'channel2_modes',
                         'modes_floor', 'mode_kl_floor', 'fd_floor', 'kid_floor',
                         'channel0_modes_floor', 'channel1_modes_floor',
                         'channel2_modes_floor', 'classifier_accuracy', 'num_samples'}
  # 8000 draws miss each of 1000 modes with probability e^-8.
  assert result['modes'] >= 995 and result['modes_floor'] >= 995
  assert result['modes_total'] == 1000
  assert all(result[f'channel{c}_modes'] == 10 for c in range(3))
  # KL of 8000 uniform draws over 1000 cells: ~ 999 / (2 * 8000) = 0.06.
  assert result['mode_kl'] < 0.1 and result['mode_kl_floor'] < 0.1
  assert result['fd'] < 1.5 * result['fd_floor'] + 1
  # One stack over and over: one mode, KL log 1000, one digit per channel.
  one = metrics.evaluate_samples('stacked_mnist5k', np.repeat(real[:1], 500, axis=0),
                                 cache_dir=cache_dir)
  assert one['modes'] == 1 and one['mode_kl'] == pytest.approx(math.log(1000))
  assert all(one[f'channel{c}_modes'] == 1 for c in range(3))
  assert one['fd'] > 20 * result['fd_floor']
  # With min_count=2, of 300 samples only the modes drawn twice count:
  # 1000 P(Poisson(0.3) >= 2) = 37 of them.
  few = metrics.evaluate_samples('stacked_mnist5k', real[:300], min_count=2,
                                 cache_dir=cache_dir)
  assert 15 < few['modes'] < 70 and 15 < few['modes_floor'] < 70


def test_evaluate_measures_both_datasets():
  for name in ('mnist5k', 'stacked_mnist5k'):
    assert name in metrics.DATASETS
    assert evaluate.metric_set('auto', name) == ('samples',)
  assert metrics.NUM_SAMPLES['mnist5k'] == 4000
  assert metrics.NUM_SAMPLES['stacked_mnist5k'] == 26_000
  with pytest.raises(UserError, match=r'stacked_mnist5k measures need images \(N, S, S, 3\)'):
    metrics.evaluate_samples('stacked_mnist5k', np.zeros((10, 32, 32, 1)))
  with pytest.raises(UserError, match='min_count=0'):
    metrics.evaluate_samples('mnist5k', np.zeros((10, 32, 32, 1)), min_count=0)


@pytest.mark.slow  # ~35 s each: compiling the nets, the floors
@pytest.mark.parametrize('name', ['mnist5k', 'stacked_mnist5k'])
def test_a_run_trains_and_is_evaluated(name, tmp_path, classifier, tiny_config):
  workdir = str(tmp_path / name)
  train.train(tiny_config(name, num_gen_iters=1), workdir)
  [record] = evaluate.evaluate(workdir, num_samples=300, cache_dir=str(tmp_path),
                               progress=False)
  assert record['dataset'] == name and record['metric'] == 'samples'
  assert record['classifier_accuracy'] == classifier.test_accuracy
  # One iteration of a tiny net: noise, far from its floor.
  assert record['fd'] > 5 * record['fd_floor']
