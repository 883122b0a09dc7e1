"""Step functions: hand-computed losses and updates, clipping, what each step leaves alone."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from wgan_jax import state as state_lib
from wgan_jax import steps


LR, CLIP = 0.05, 0.3


def _softplus(x):
  return np.logaddexp(0.0, x)


class Linear(nn.Module):
  """x -> x @ w, for outputs a test can compute by hand."""
  features: int
  init_value: np.ndarray

  @nn.compact
  def __call__(self, x, train=True):
    w = self.param('w', lambda *_: jnp.asarray(self.init_value))
    out = x @ w
    return out[:, 0] if self.features == 1 else out


def _linear_state():
  g_w = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)  # z: 3 -> x: 2
  c_w = np.array([[0.2], [-0.1]], np.float32)  # x: 2 -> score
  tx = optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  make = lambda module, w: state_lib.TrainState.create(
      apply_fn=module.apply, params={'w': jnp.asarray(w)}, batch_stats={}, tx=tx)
  return state_lib.WGANState(
      generator=make(Linear(2, g_w), g_w), critic=make(Linear(1, c_w), c_w),
      gen_iter=jnp.zeros((), jnp.int32), rng=jnp.zeros(4, jnp.uint32)), g_w, c_w


def _rmsprop_first_update(grad):
  # PyTorch RMSprop from zero state: v = 0.01 g^2, step = lr g / (sqrt(v) + eps).
  return -LR * grad / (np.sqrt(0.01 * grad**2) + 1e-8)


REAL = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]], np.float32)
Z = np.array([[0.1, 0.2, 0.3], [-0.4, 0.5, 0.6], [0.7, -0.8, 0.9], [1.0, 1.1, -1.2]],
             np.float32)


def test_critic_step_matches_hand_computation():
  state, g_w, c_w = _linear_state()
  new, metrics = steps.critic_step(state, REAL, Z, clip=CLIP)
  fake = Z @ g_w
  f_real, f_fake = REAL @ c_w[:, 0], fake @ c_w[:, 0]
  w_est = f_real.mean() - f_fake.mean()
  np.testing.assert_allclose(metrics['wasserstein'], w_est, rtol=1e-6)
  np.testing.assert_allclose(metrics['critic_loss'], -w_est, rtol=1e-6)
  np.testing.assert_allclose(metrics['critic_real'], f_real.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics['critic_fake'], f_fake.mean(), rtol=1e-6)
  # d(-W)/dw = E[fake] - E[real]; then RMSProp, then the clip.
  grad = (fake.mean(0) - REAL.mean(0))[:, None]
  expected = np.clip(c_w + _rmsprop_first_update(grad), -CLIP, CLIP)
  np.testing.assert_allclose(new.critic.params['w'], expected, rtol=1e-6)


def test_generator_step_matches_hand_computation():
  state, g_w, c_w = _linear_state()
  new, metrics = steps.generator_step(state, Z)
  f_fake = (Z @ g_w) @ c_w[:, 0]
  np.testing.assert_allclose(metrics['generator_loss'], -f_fake.mean(), rtol=1e-6)
  # d(-E f(zW))/dW = -E[z]^T c^T.
  grad = -np.outer(Z.mean(0), c_w[:, 0])
  np.testing.assert_allclose(new.generator.params['w'],
                             g_w + _rmsprop_first_update(grad), rtol=1e-6)
  assert int(new.gen_iter) == 1


def _dcgan_state(tiny_config, **overrides):
  config = tiny_config(**overrides)
  return config, state_lib.create_state(config, (16, 16, 1),
                                        state_lib.root_key(config))


def _batch(config, seed):
  rng = np.random.default_rng(seed)
  real = rng.uniform(-1, 1, (config.batch_size, 16, 16, 1)).astype(np.float32)
  z = rng.standard_normal((config.batch_size, config.nz)).astype(np.float32)
  return real, z


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_every_critic_parameter_is_clipped_after_every_step(tiny_config):
  config, state = _dcgan_state(tiny_config, lr_critic=0.1)
  step = jax.jit(functools.partial(steps.critic_step, clip=config.clip))
  for i in range(3):
    state, _ = step(state, *_batch(config, i))
    leaves = jax.tree.leaves(state.critic.params)
    assert len(leaves) == 5  # 3 conv kernels, one BatchNorm's scale and bias
    for leaf in leaves:
      assert float(jnp.max(jnp.abs(leaf))) <= config.clip
    # BatchNorm scales start near 1, so the clip is what keeps them in range.
    assert float(jnp.max(jnp.abs(state.critic.params['pyramid_0_bn']['scale']))) == \
        pytest.approx(config.clip)


def test_critic_step_leaves_generator_weights_alone(tiny_config):
  config, state = _dcgan_state(tiny_config)
  step = jax.jit(functools.partial(steps.critic_step, clip=config.clip))  # op by op: 2x slower
  new, _ = step(state, *_batch(config, 0))
  assert _leaves_equal(new.generator.params, state.generator.params)
  assert _leaves_equal(new.generator.opt_state, state.generator.opt_state)
  assert int(new.gen_iter) == 0
  # As in the reference, the generator runs in training mode: its BatchNorm
  # running statistics move.
  assert not _leaves_equal(new.generator.batch_stats, state.generator.batch_stats)
  assert not _leaves_equal(new.critic.params, state.critic.params)


def test_generator_step_leaves_critic_weights_alone(tiny_config):
  config, state = _dcgan_state(tiny_config)
  _, z = _batch(config, 0)
  new, _ = jax.jit(steps.generator_step)(state, z)
  assert _leaves_equal(new.critic.params, state.critic.params)
  assert _leaves_equal(new.critic.opt_state, state.critic.opt_state)
  assert not _leaves_equal(new.generator.params, state.generator.params)


@pytest.mark.slow
def test_clip_before_clips_the_weights_the_update_starts_from(tiny_config):
  config, state = _dcgan_state(tiny_config)
  big = jax.tree.map(lambda p: p * 100.0, state.critic.params)
  state = state.replace(critic=state.critic.replace(params=big))
  real, z = _batch(config, 1)
  before, m_before = steps.critic_step(state, real, z, clip=config.clip,
                                       clip_when='before')
  clipped = state.replace(critic=state.critic.replace(
      params=steps.clip_params(big, config.clip)))
  manual, m_manual = steps.critic_step(clipped, real, z, clip=math.inf)
  assert _leaves_equal(before.critic.params, manual.critic.params)
  assert float(m_before['critic_loss']) == float(m_manual['critic_loss'])
  # The update itself can leave [-c, c] again: 'before' does not clip after.
  assert max(float(jnp.max(jnp.abs(x)))
             for x in jax.tree.leaves(before.critic.params)) > config.clip


def test_adam_option_matches_optax_adam_with_beta1(tiny_config):
  config = tiny_config(optimizer='adam', beta1=0.3)
  tx = state_lib.make_optimizer(config, 1e-3)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([0.5, 0.25])}
  updates, _ = tx.update(grads, tx.init(params), params)
  ref_updates, _ = optax.adam(1e-3, b1=0.3, b2=0.999, eps=1e-8).update(
      grads, optax.adam(1e-3).init(params), params)
  np.testing.assert_allclose(updates['w'], ref_updates['w'])


def test_critic_schedule_follows_reference(tiny_config):
  config = tiny_config(n_critic=5, n_critic_warmup=100, warmup_gen_iters=25,
                       boost_every=500)
  counts = [steps.critic_iterations(i, config) for i in range(1502)]
  assert counts[:25] == [100] * 25
  assert counts[25:30] == [5] * 5
  assert counts[500] == counts[1000] == counts[1500] == 100
  assert counts[499] == counts[501] == 5
  assert sum(counts) == 25 * 100 + 3 * 100 + (1502 - 28) * 5
  for i in (0, 1, 24, 25, 26, 499, 500, 501, 1501):
    assert steps.critic_steps_before(i, config) == sum(counts[:i])
  config.boost_every = 0
  assert steps.critic_iterations(500, config) == 5
  assert steps.critic_steps_before(600, config) == 25 * 100 + 575 * 5


# Steps with the other objectives (plain SGD, so updates are -LR times the gradient).

def _linear_state_sgd(c_w):
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


def test_wgan_gp_critic_step_matches_hand_computation():
  c_w = np.array([[0.6], [-0.3]], np.float32)
  state, g_w = _linear_state_sgd(c_w)
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


def test_gan_steps_match_hand_computation():
  c_w = np.array([[0.6], [-0.3]], np.float32)
  state, g_w = _linear_state_sgd(c_w)
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
  state, _ = _linear_state_sgd(c_w)
  new, _ = steps.critic_step(state, REAL, Z, clip=0.0)
  assert np.abs(np.asarray(new.critic.params['w'])).max() > 0.3
