"""Pure per-device step functions of Algorithm 1, and the critic schedule.

Every input is explicit: the real batch, the latents and (WGAN-GP) the
interpolation weights are arguments, so a test can feed a reference
implementation the same numbers. Under ``pmap``
pass ``axis_name``; gradients and metrics are then averaged over it (and
BatchNorm, through the models, sees the global batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wgan_jax import losses
from wgan_jax.state import TrainState, WGANState


def clip_params(params, c: float):
  """The WGAN weight clipping: every parameter into [-c, c]."""
  return jax.tree.map(lambda p: jnp.clip(p, -c, c), params)


def _forward(ts: TrainState, params, batch_stats, x):
  """Training-mode forward; returns the output and the updated BN statistics."""
  out, mutated = ts.apply_fn({'params': params, 'batch_stats': batch_stats}, x,
                             train=True, mutable=['batch_stats'])
  return out, mutated.get('batch_stats', batch_stats)


def _pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def critic_step(state: WGANState, real_batch, latents, eps=None, *,
                clip: float, clip_when: str = 'after', loss: str = 'wgan',
                gp_weight: float = 10.0, axis_name: str | None = None):
  """One critic update of the ``loss`` objective (see ``losses``), then clip.

  As in the reference, real and fake go through the critic in two passes in
  training mode (each updating the running statistics), and the generator
  runs in training mode too (its running statistics move; its parameters do
  not). ``clip_when='before'`` clips before the update instead, as the
  reference code does; ``clip=0`` does not clip. ``eps`` (one uniform number
  per example) places the interpolates of the gradient penalty
  (``loss='wgan-gp'``); the penalty's pass leaves the running statistics as
  they are.
  """
  gen, critic = state.generator, state.critic
  fake, g_stats = _forward(gen, gen.params, gen.batch_stats, latents)
  fake = jax.lax.stop_gradient(fake)
  if clip and clip_when == 'before':
    critic = critic.replace(params=clip_params(critic.params, clip))

  def loss_fn(params):
    f_real, stats = _forward(critic, params, critic.batch_stats, real_batch)
    f_fake, stats = _forward(critic, params, stats, fake)
    extra = {}
    if loss == 'gan':
      value = losses.gan_discriminator_loss(f_real, f_fake)
    else:
      value = losses.critic_loss(f_real, f_fake)
    if loss == 'wgan-gp':
      penalty = losses.gradient_penalty(
          lambda x: _forward(critic, params, stats, x)[0],
          losses.interpolates(real_batch, fake, eps))
      extra['gradient_penalty'] = penalty
      value = value + gp_weight * penalty
    return value, (stats, f_real, f_fake, extra)

  (value, (c_stats, f_real, f_fake, extra)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(critic.params)
  grads = _pmean(grads, axis_name)
  critic = critic.apply_gradients(grads=grads, batch_stats=c_stats)
  if clip and clip_when == 'after':
    critic = critic.replace(params=clip_params(critic.params, clip))
  metrics = {'critic_loss': value}
  if loss != 'gan':
    metrics['wasserstein'] = losses.wasserstein_estimate(f_real, f_fake)
  metrics.update(critic_real=jnp.mean(f_real), critic_fake=jnp.mean(f_fake),
                 **extra)
  if loss == 'gan':  # the discriminator's mean probabilities
    metrics.update(d_real=jnp.mean(jax.nn.sigmoid(f_real)),
                   d_fake=jnp.mean(jax.nn.sigmoid(f_fake)))
  state = state.replace(generator=gen.replace(batch_stats=g_stats),
                        critic=critic)
  return state, _pmean(metrics, axis_name)


def generator_step(state: WGANState, latents, *, loss: str = 'wgan',
                   axis_name: str | None = None):
  """One generator update: maximise E[f(G(z))] (``loss='gan'``: minimise
  -E[log D(G(z))]); the critic's weights stay.

  The critic runs in training mode, so (as in the reference) its BatchNorm
  running statistics move; its parameters and optimiser state do not.
  """
  gen, critic = state.generator, state.critic
  objective = losses.gan_generator_loss if loss == 'gan' else losses.generator_loss

  def loss_fn(params):
    fake, g_stats = _forward(gen, params, gen.batch_stats, latents)
    f_fake, c_stats = _forward(critic, critic.params, critic.batch_stats, fake)
    return objective(f_fake), (g_stats, c_stats)

  (value, (g_stats, c_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(gen.params)
  grads = _pmean(grads, axis_name)
  gen = gen.apply_gradients(grads=grads, batch_stats=g_stats)
  state = state.replace(generator=gen,
                        critic=critic.replace(batch_stats=c_stats),
                        gen_iter=state.gen_iter + 1)
  return state, _pmean({'generator_loss': value}, axis_name)


def critic_iterations(gen_iter: int, config) -> int:
  """How many critic steps precede generator iteration ``gen_iter`` (0-based).

  The reference trains the critic ``n_critic_warmup`` (100) times for the
  first ``warmup_gen_iters`` (25) generator iterations and on every
  ``boost_every``-th (500th) one, so the critic stays near optimal; otherwise
  ``n_critic`` (5) times.
  """
  if gen_iter < config.warmup_gen_iters or (
      config.boost_every > 0 and gen_iter % config.boost_every == 0):
    return config.n_critic_warmup
  return config.n_critic


def critic_steps_before(gen_iter: int, config) -> int:
  """Critic steps (hence real batches) consumed by generator iterations [0, gen_iter)."""
  total = 0
  warm = min(gen_iter, config.warmup_gen_iters)
  total += warm * config.n_critic_warmup
  rest = range(warm, gen_iter)
  if config.boost_every > 0:
    boosts = sum(1 for i in range(0, gen_iter, config.boost_every)
                 if i >= config.warmup_gen_iters)
  else:
    boosts = 0
  total += boosts * config.n_critic_warmup + (len(rest) - boosts) * config.n_critic
  return total
