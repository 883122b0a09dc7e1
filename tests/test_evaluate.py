"""wgan_jax.evaluate: checkpoints chosen, the right measures per dataset, results kept."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from wgan_jax import evaluate, train
from wgan_jax.eval import fid
from wgan_jax.errors import UserError


def test_choose_steps():
  assert evaluate.choose_steps([2, 4, 6], 'newest') == [6]
  assert evaluate.choose_steps([2, 4, 6], 'all') == [2, 4, 6]
  assert evaluate.choose_steps([2, 4, 6], '4, 2') == [4, 2]
  with pytest.raises(UserError, match=r'no checkpoint of iteration\(s\) \[5\]'):
    evaluate.choose_steps([2, 4, 6], '5')
  with pytest.raises(UserError, match='give newest, all'):
    evaluate.choose_steps([2, 4, 6], 'last')
  with pytest.raises(UserError, match='no checkpoints'):
    evaluate.choose_steps([], 'newest')


def test_metric_set_follows_the_dataset():
  assert evaluate.metric_set('auto', 'gaussians8') == ('samples',)
  assert evaluate.metric_set('auto', 'stacked_digits') == ('samples',)
  assert evaluate.metric_set('auto', 'celeb_a') == ('fid', 'kid')
  assert evaluate.metric_set('FID', 'digits') == ('fid',)
  assert evaluate.metric_set('fid, kid', 'cifar10') == ('fid', 'kid')
  with pytest.raises(UserError, match='choose one of'):
    evaluate.metric_set('is', 'cifar10')
  with pytest.raises(UserError, match='use --metric=fid,kid'):
    evaluate.metric_set('samples', 'cifar10')


@pytest.fixture(scope='module')
def ring_run(tmp_path_factory, tiny_config):
  workdir = str(tmp_path_factory.mktemp('ring'))
  train.train(tiny_config('gaussians8', num_gen_iters=4, checkpoint_every=2), workdir)
  return workdir


def test_every_checkpoint_of_a_toy_run_gets_the_toy_measures(ring_run):
  records = evaluate.evaluate(ring_run, which='all', num_samples=200, progress=False)
  assert [r['gen_iter'] for r in records] == [2, 4]
  for r in records:
    assert r['modes_total'] == 8 and 0 <= r['modes'] <= 8
    assert 0 <= r['high_quality'] <= 1 and r['w1'] > r['w1_floor'] > 0
    assert r['num_samples'] == 200
  with open(f'{ring_run}/evaluation.jsonl') as f:
    kept = [json.loads(line) for line in f]
  assert kept[-2:] == records
  # Same seed, same numbers.
  again = evaluate.evaluate(ring_run, which='4', num_samples=200, progress=False)
  assert again == records[1:]
  with pytest.raises(UserError, match='FID and KID measure images'):
    evaluate.evaluate(ring_run, metric='fid', inception_weights=_stand_in(),
                      progress=False)


class StandIn(nn.Module):
  """A tiny image network in place of Inception (see tests/eval/test_fid.py)."""

  @nn.compact
  def __call__(self, images):
    x = jax.image.resize(images, (images.shape[0], 4, 4, images.shape[-1]), 'linear')
    return nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))


def _stand_in(channels=1):
  model = StandIn()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, channels)))
  return fid.FeatureExtractor(variables, 16, model=model)


@pytest.mark.slow
def test_fid_and_kid_of_an_image_run_with_cached_reference(tmp_path, monkeypatch, tiny_config):
  monkeypatch.setenv('WGAN_JAX_CACHE', str(tmp_path / 'cache'))
  workdir = str(tmp_path / 'digits')
  train.train(tiny_config('digits', num_gen_iters=1), workdir)
  [record] = evaluate.evaluate(workdir, metric='fid,kid', num_samples=64,
                               reference_samples=200, inception_weights=_stand_in(),
                               progress=False)
  assert record['gen_iter'] == 1 and record['metric'] == 'fid,kid'
  assert record['fid'] > 0 and np.isfinite(record['kid'])
  assert record['num_samples'] == 64 and record['num_reference'] == 200
  assert list((tmp_path / 'cache' / 'fid_stats').glob('digits-train-16px-200.npz'))
  # Without the Inception weights: one line that says where to get them.
  with pytest.raises(UserError, match='pytorch-fid/releases'):
    evaluate.evaluate(workdir, metric='fid', num_samples=8, progress=False)
