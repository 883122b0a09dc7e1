"""The GAN and WGAN-GP objectives, and the per-loss defaults of the config."""

import functools
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from flax import linen as nn

from wgan_jax import cli, configs, losses, models, steps, train, writers
from wgan_jax import state as state_lib

from .conftest import tiny_config
from .test_steps import REAL, Z, Linear

LR = 0.05


def _softplus(x):
  return np.logaddexp(0.0, x)


def _linear_state(c_w):
  """G(z) = z @ g_w, f(x) = x @ c_w, both trained by plain SGD (updates that
  are the gradient times -LR, easy to check)."""
  g_w = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)
  make = lambda module, w: state_lib.TrainState.create(
      apply_fn=module.apply, params={'w': jnp.asarray(w)}, batch_stats={},
      tx=optax.sgd(LR))
  state = state_lib.WGANState(
      generator=make(Linear(2, g_w), g_w), critic=make(Linear(1, c_w), c_w),
      gen_iter=jnp.zeros((), jnp.int32), rng=jnp.zeros(4, jnp.uint32))
  return state, g_w


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


def test_wgan_gp_critic_step_matches_hand_computation():
  c_w = np.array([[0.6], [-0.3]], np.float32)
  state, g_w = _linear_state(c_w)
  eps = np.array([0.1, 0.5, 0.9, 0.3], np.float32)
  new, metrics = steps.critic_step(state, REAL, Z, eps, clip=0.0, loss='wgan-gp',
                                   gp_weight=10.0)
  fake = Z @ g_w
  w = c_w[:, 0]
  norm = np.linalg.norm(w)
  w_est = (REAL @ w).mean() - (fake @ w).mean()
  np.testing.assert_allclose(metrics['wasserstein'], w_est, rtol=1e-5)
  np.testing.assert_allclose(metrics['gradient_penalty'], (norm - 1) ** 2, rtol=1e-5)
  np.testing.assert_allclose(metrics['critic_loss'], -w_est + 10 * (norm - 1) ** 2,
                             rtol=1e-5)
  # d/dw [-W + 10 (|w| - 1)^2] = E[fake] - E[real] + 20 (|w| - 1) w / |w|; no clip.
  grad = fake.mean(0) - REAL.mean(0) + 20 * (norm - 1) * w / norm
  np.testing.assert_allclose(new.critic.params['w'][:, 0], w - LR * grad, rtol=1e-5)


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


def test_gan_steps_match_hand_computation():
  c_w = np.array([[0.6], [-0.3]], np.float32)
  state, g_w = _linear_state(c_w)
  w = c_w[:, 0]
  fake = Z @ g_w
  f_real, f_fake = REAL @ w, fake @ w
  new, metrics = steps.critic_step(state, REAL, Z, clip=0.0, loss='gan')
  np.testing.assert_allclose(
      metrics['critic_loss'], _softplus(-f_real).mean() + _softplus(f_fake).mean(),
      rtol=1e-5)
  sig = lambda a: 1 / (1 + np.exp(-a))
  np.testing.assert_allclose(metrics['d_real'], sig(f_real).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['d_fake'], sig(f_fake).mean(), rtol=1e-5)
  assert 'wasserstein' not in metrics
  # d/dw softplus(-x.w) = -sigmoid(-x.w) x; d/dw softplus(x.w) = sigmoid(x.w) x.
  grad = (-(sig(-f_real)[:, None] * REAL).mean(0)
          + (sig(f_fake)[:, None] * fake).mean(0))
  np.testing.assert_allclose(new.critic.params['w'][:, 0], w - LR * grad, rtol=1e-5)

  new, metrics = steps.generator_step(state, Z, loss='gan')
  np.testing.assert_allclose(metrics['generator_loss'], _softplus(-f_fake).mean(),
                             rtol=1e-5)
  # Non-saturating: d/dG mean softplus(-z G w) = -mean sigmoid(-f) z w^T.
  grad = -(sig(-f_fake)[:, None, None] * Z[:, :, None] * w[None, None, :]).mean(0)
  np.testing.assert_allclose(new.generator.params['w'], g_w - LR * grad, rtol=1e-5)


def test_clip_zero_does_not_clip():
  c_w = np.array([[0.6], [-0.3]], np.float32)
  state, _ = _linear_state(c_w)
  new, _ = steps.critic_step(state, REAL, Z, clip=0.0)
  assert np.abs(np.asarray(new.critic.params['w'])).max() > 0.3


# Per-loss defaults.

def _flag_config(*args):
  argv = ['train', *args]
  flag_values = flags.FlagValues()
  # ml_collections defines the --config.FIELD flags from sys.argv.
  with mock.patch.object(sys, 'argv', argv):
    cli.define_config_flags(flag_values)
    flag_values(argv)
  return cli.build_config(flag_values)


def test_wgan_defaults_are_the_default_config():
  for dataset in ('digits', 'gaussians8'):
    assert configs.get_config(dataset, 'wgan') == configs.get_config(dataset)
  fields = {frozenset(v) for v in configs.LOSS_DEFAULTS.values()}
  assert len(fields) == 1  # every loss names every field
  for preset in configs.PRESETS.values():  # presets do not fight the losses
    assert not set(preset) & set(configs.LOSS_DEFAULTS['wgan'])


def test_each_loss_sets_its_paper_defaults():
  gp = _flag_config('--loss=wgan-gp')
  assert (gp.optimizer, gp.lr_critic, gp.lr_gen, gp.beta1, gp.beta2, gp.clip,
          gp.n_critic, gp.warmup_gen_iters, gp.boost_every, gp.critic_bn,
          gp.gp_weight) == ('adam', 1e-4, 1e-4, 0.0, 0.9, 0.0, 5, 0, 0, False, 10.0)
  gan = _flag_config('--loss=gan', '--dataset=gaussians8')
  assert (gan.optimizer, gan.lr_critic, gan.lr_gen, gan.beta1, gan.beta2, gan.clip,
          gan.n_critic, gan.warmup_gen_iters, gan.boost_every, gan.critic_bn) == (
              'adam', 2e-4, 2e-4, 0.5, 0.999, 0.0, 1, 0, 0, True)
  assert gan.ngf == 512  # the dataset's preset stays
  wgan = _flag_config()
  assert (wgan.optimizer, wgan.lr_critic, wgan.clip, wgan.n_critic,
          wgan.warmup_gen_iters) == ('rmsprop', 5e-5, 0.01, 5, 25)


def test_flags_win_over_the_loss_defaults():
  config = _flag_config('--loss=wgan-gp', '--lr_gen=3e-4', '--critic_bn',
                        '--beta2=0.99', '--n_critic=2')
  assert (config.lr_critic, config.lr_gen, config.critic_bn, config.beta2,
          config.n_critic, config.optimizer) == (1e-4, 3e-4, True, 0.99, 2, 'adam')
  config = _flag_config('--loss=gan', '--optimizer=rmsprop', '--clip=0.05')
  assert (config.optimizer, config.clip, config.lr_critic) == ('rmsprop', 0.05, 2e-4)


def test_a_config_file_counts_as_explicit(tmp_path):
  path = tmp_path / 'my_config.py'
  # Built on the plain default: only the loss and beta1 are the file's own.
  path.write_text('from wgan_jax.configs import default\n'
                  'def get_config():\n'
                  '  c = default.get_config()\n'
                  '  c.loss, c.beta1, c.lr_gen = "gan", 0.3, 1e-3\n'
                  '  return c\n')
  config = _flag_config(f'--config={path}')
  assert (config.loss, config.optimizer, config.beta1, config.lr_gen,
          config.lr_critic, config.n_critic) == ('gan', 'adam', 0.3, 1e-3, 2e-4, 1)
  # --config.FIELD is the file's too; a --loss flag replaces the file's loss
  # defaults but not what the file set.
  config = _flag_config(f'--config={path}', '--config.lr_critic=0.002',
                        '--loss=wgan-gp')
  assert (config.loss, config.beta1, config.beta2, config.lr_gen,
          config.lr_critic, config.critic_bn) == ('wgan-gp', 0.3, 0.9, 1e-3, 0.002,
                                                  False)
  # Built on another loss's defaults: those are not the file's own choices.
  path.write_text('from wgan_jax import configs\n'
                  'def get_config():\n'
                  '  return configs.get_config("swissroll", loss="gan")\n')
  config = _flag_config(f'--config={path}', '--loss=wgan-gp')
  assert (config.dataset, config.lr_gen, config.beta1, config.n_critic) == (
      'swissroll', 1e-4, 0.0, 5)
  config = _flag_config(f'--config={path}')
  assert (config.loss, config.lr_gen, config.n_critic) == ('gan', 2e-4, 1)


def test_help_says_what_each_loss_sets():
  flag_values = flags.FlagValues()
  cli.define_config_flags(flag_values)
  assert '(default: 0.01). --loss=wgan-gp and gan set 0.0.' in flag_values['clip'].help
  assert '--loss=wgan-gp sets 0.0001. --loss=gan sets 0.0002.' in \
      flag_values['lr_gen'].help
  for text in ('wgan-gp: optimizer=adam', 'beta2=0.9', 'gan: optimizer=adam'):
    assert text in flag_values['loss'].help
  assert 'seed_<seed>' in flag_values['num_seeds'].help


@pytest.mark.parametrize('overrides, message', [
    (dict(loss='lsgan'), "--loss='lsgan': choose wgan, wgan-gp, gan"),
    (dict(gp_weight=-1.0), '--gp_weight=-1.0: must not be negative'),
    (dict(num_seeds=0), '--num_seeds=0: must be at least 1'),
])
def test_bad_loss_settings_are_user_errors(overrides, message):
  from wgan_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError) as info:
    train.validate(tiny_config(**overrides))
  assert message in str(info.value)


# Short runs.

def _tiny(dataset, loss, **overrides):
  config = configs.get_config(dataset, loss)
  tiny = tiny_config(dataset)
  for name in ('image_size', 'ngf', 'ndf', 'nz', 'batch_size', 'sample_every',
               'num_samples', 'log_every', 'progress_bar'):
    config[name] = tiny[name]
  config.update(num_gen_iters=2, **overrides)
  return config


def test_wgan_gp_trains_the_dcgan_critic_without_batchnorm():
  config = _tiny('digits', 'wgan-gp')
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


@pytest.mark.parametrize('loss, keys, curve', [
    ('gan', {'critic_loss', 'generator_loss', 'd_real', 'd_fake'},
     'discriminator_loss.png'),
    ('wgan-gp', {'critic_loss', 'generator_loss', 'wasserstein', 'gradient_penalty'},
     'wasserstein.png'),
])
def test_a_short_run_of_each_loss_has_finite_metrics(tmp_path, loss, keys, curve):
  config = _tiny('gaussians8', loss, n_critic=2)
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
