"""The pieces of a training step, one seed's, as functions to time apart.

For a model of ``MODELS`` (batch ``BATCH_SIZE``): the generator's forward
(each critic step runs it), the critic's forward and weight gradient on a
real and a fake batch (the rest of a critic step), and the generator's
forward and weight gradient through the critic (the generator step).
Optimiser updates, clipping and data are left out. Used by
experiments/step_pieces.py (ours against the reference's) and
experiments/seeds_pieces.py (one seed against K in one program).
"""

from __future__ import annotations

from wgan_jax.benchmark.settings import BATCH_SIZE, CHANNELS, MODELS, bench_config


def step_pieces(model: str) -> dict:
  """name -> (a function of one seed, not jitted; its arguments, the seed's
  parameters first)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from wgan_jax import models  # pylint: disable=g-import-not-at-top
  config = bench_config(MODELS[model])
  shape = (config.image_size, config.image_size, CHANNELS)
  gen, critic = models.make_generator(config, shape), models.make_critic(config, shape)
  key = jax.random.key(0)
  z = jax.random.normal(key, (BATCH_SIZE, config.nz))
  x = jax.random.uniform(key, (BATCH_SIZE, *shape), minval=-1, maxval=1)
  g_vars, c_vars = gen.init(key, z), critic.init(key, x)
  g_stats, c_stats = g_vars.get('batch_stats', {}), c_vars.get('batch_stats', {})  # MLPs: none

  def apply(module, params, stats, inputs):
    return module.apply({'params': params, 'batch_stats': stats}, inputs, train=True,
                        mutable=['batch_stats'])[0]

  def g_fwd(p, z):
    return apply(gen, p, g_stats, z)

  def c_grad(p, x, fake):
    return jax.grad(lambda p: jnp.mean(apply(critic, p, c_stats, fake))
                    - jnp.mean(apply(critic, p, c_stats, x)))(p)

  def g_grad(p, c_params, z):
    return jax.grad(lambda p: -jnp.mean(apply(critic, c_params, c_stats, g_fwd(p, z))))(p)

  fake = jax.jit(g_fwd)(g_vars['params'], z)
  return {'generator_forward': (g_fwd, (g_vars['params'], z)),
          'critic_forward_and_gradient': (c_grad, (c_vars['params'], x, fake)),
          'generator_forward_and_gradient': (g_grad, (g_vars['params'], c_vars['params'], z))}
