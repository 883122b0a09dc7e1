"""The GAN and WGAN-GP objectives, and the per-loss defaults of the config."""

import functools

import jax
import numpy as np
import pytest

from wgan_jax import configs, losses, models, steps, train, writers
from wgan_jax import state as state_lib


LR = 0.05


def _softplus(x):
  return np.logaddexp(0.0, x)


# The gradient penalty.

def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one():
  # f(x) = x . w has input gradient w at every x: penalty (|w| - 1)^2.
  w = np.array([3.0, -4.0, 12.0], np.float32)  # |w| = 13
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  penalty = losses.gradient_penalty(lambda x: x @ w, x)
  np.testing.assert_allclose(penalty, 144.0, rtol=1e-6)


def test_gradient_penalty_equals_per_example_gradients_of_an_mlp():
  critic = models.MLPCritic(ndf=16)
  x = np.random.default_rng(1).normal(size=(4, 4, 3, 2)).astype(np.float32)
  params = critic.init(jax.random.key(0), x)
  fn = lambda x: critic.apply(params, x)
  one = jax.jit(jax.grad(lambda e: fn(e[None])[0]))
  expected = []
  for example in x:  # one example at a time, by the definition
    expected.append((np.linalg.norm(np.asarray(one(example)).ravel()) - 1.0) ** 2)
  penalty = jax.jit(lambda x: losses.gradient_penalty(fn, x))(x)
  np.testing.assert_allclose(penalty, np.mean(expected), rtol=1e-5)


def test_interpolates_take_one_weight_per_example():
  real = np.ones((3, 2, 2, 1), np.float32)
  fake = np.zeros((3, 2, 2, 1), np.float32)
  out = losses.interpolates(real, fake, np.array([0.0, 0.25, 1.0], np.float32))
  np.testing.assert_array_equal(out[:, 0, 0, 0], [0.0, 0.25, 1.0])
  assert np.all(out == out[:, :1, :1])


# The standard GAN.

LOGITS_REAL = np.array([2.0, -1.0, 0.5, 60.0], np.float32)
LOGITS_FAKE = np.array([-3.0, 0.25, 1.0, -60.0], np.float32)


def test_gan_losses_are_the_sigmoid_cross_entropies():
  # -log sigmoid(a) = log(1 + e^-a), -log(1 - sigmoid(a)) = log(1 + e^a).
  d_loss = losses.gan_discriminator_loss(LOGITS_REAL, LOGITS_FAKE)
  expected = _softplus(-LOGITS_REAL.astype(np.float64)).mean() + \
      _softplus(LOGITS_FAKE.astype(np.float64)).mean()
  np.testing.assert_allclose(d_loss, expected, rtol=1e-6)
  g_loss = losses.gan_generator_loss(LOGITS_FAKE)
  np.testing.assert_allclose(g_loss, _softplus(-LOGITS_FAKE.astype(np.float64)).mean(),
                             rtol=1e-6)
  # Saturated logits stay finite (and -log D(G(z)) of a confident rejection is large).
  assert np.isfinite(g_loss) and g_loss > 15


# Short runs.

def _tiny(tiny_config, dataset, loss, **overrides):
  config = configs.get_config(dataset, loss)
  tiny = tiny_config(dataset)
  for name in ('image_size', 'ngf', 'ndf', 'nz', 'batch_size', 'sample_every',
               'num_samples', 'log_every', 'progress_bar'):
    config[name] = tiny[name]
  config.update(num_gen_iters=2, **overrides)
  return config


@pytest.mark.slow
def test_wgan_gp_trains_the_dcgan_critic_without_batchnorm(tiny_config):
  config = _tiny(tiny_config, 'digits', 'wgan-gp')
  state = state_lib.create_state(config, (16, 16, 1), state_lib.root_key(config))
  assert not any('bn' in name for name in state.critic.params)
  assert any('bn' in name for name in state.generator.params)
  rng = np.random.default_rng(0)
  real = rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32)
  z = rng.standard_normal((8, config.nz)).astype(np.float32)
  eps = rng.uniform(size=8).astype(np.float32)
  step = jax.jit(functools.partial(steps.critic_step, clip=config.clip,
                                   loss='wgan-gp', gp_weight=config.gp_weight))
  new, metrics = step(state, real, z, eps)
  # Weights drawn from N(0, 0.02) give input gradients far below norm 1.
  assert 0.9 < float(metrics['gradient_penalty']) <= 1.0
  np.testing.assert_allclose(metrics['critic_loss'], -metrics['wasserstein']
                             + 10 * metrics['gradient_penalty'], rtol=1e-6)
  # Adam's first step moves every weight by about the learning rate.
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
                       new.critic.params, state.critic.params)
  for leaf in jax.tree.leaves(moved):
    np.testing.assert_allclose(leaf, config.lr_critic, rtol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize('loss, keys, curve', [
    ('gan', {'critic_loss', 'generator_loss', 'd_real', 'd_fake'},
     'discriminator_loss.png'),
    ('wgan-gp', {'critic_loss', 'generator_loss', 'wasserstein', 'gradient_penalty'},
     'wasserstein.png'),
])
def test_a_short_run_of_each_loss_has_finite_metrics(tmp_path, loss, keys, curve, tiny_config):
  config = _tiny(tiny_config, 'gaussians8', loss, n_critic=2)
  final = train.train(config, str(tmp_path))
  records = writers.read_metrics(str(tmp_path / 'metrics.jsonl'))
  assert [r['gen_iter'] for r in records] == [1, 2]
  for r in records:
    assert set(r) >= keys
    assert all(np.isfinite(v) for v in r.values())
  if loss == 'gan':
    assert all(0 < r['d_real'] < 1 and 0 < r['d_fake'] < 1 for r in records)
  else:
    assert all(r['gradient_penalty'] > 0 for r in records)
  assert int(final.critic.step) == 4  # no warm-up: 2 critic steps per iteration
  assert (tmp_path / curve).stat().st_size > 1000
