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

from .conftest import tiny_config

LR, CLIP = 0.05, 0.3


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


def _dcgan_state(**overrides):
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


def test_every_critic_parameter_is_clipped_after_every_step():
  config, state = _dcgan_state(lr_critic=0.1)
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


def test_critic_step_leaves_generator_weights_alone():
  config, state = _dcgan_state()
  step = jax.jit(functools.partial(steps.critic_step, clip=config.clip))  # op by op: 2x slower
  new, _ = step(state, *_batch(config, 0))
  assert _leaves_equal(new.generator.params, state.generator.params)
  assert _leaves_equal(new.generator.opt_state, state.generator.opt_state)
  assert int(new.gen_iter) == 0
  # As in the reference, the generator runs in training mode: its BatchNorm
  # running statistics move.
  assert not _leaves_equal(new.generator.batch_stats, state.generator.batch_stats)
  assert not _leaves_equal(new.critic.params, state.critic.params)


def test_generator_step_leaves_critic_weights_alone():
  config, state = _dcgan_state()
  _, z = _batch(config, 0)
  new, _ = jax.jit(steps.generator_step)(state, z)
  assert _leaves_equal(new.critic.params, state.critic.params)
  assert _leaves_equal(new.critic.opt_state, state.critic.opt_state)
  assert not _leaves_equal(new.generator.params, state.generator.params)


def test_clip_before_clips_the_weights_the_update_starts_from():
  config, state = _dcgan_state()
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


def test_adam_option_matches_optax_adam_with_beta1():
  config = tiny_config(optimizer='adam', beta1=0.3)
  tx = state_lib.make_optimizer(config, 1e-3)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([0.5, 0.25])}
  updates, _ = tx.update(grads, tx.init(params), params)
  ref_updates, _ = optax.adam(1e-3, b1=0.3, b2=0.999, eps=1e-8).update(
      grads, optax.adam(1e-3).init(params), params)
  np.testing.assert_allclose(updates['w'], ref_updates['w'])


def test_critic_schedule_follows_reference():
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
