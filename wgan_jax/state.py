"""The training state: both networks, their optimisers, the iteration counter, the key."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from wgan_jax import configs, models, tuning


class TrainState(train_state.TrainState):
  """flax's TrainState plus BatchNorm running statistics."""
  batch_stats: Any = None

  @property
  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


@struct.dataclass
class WGANState:
  """Everything a run carries from one generator iteration to the next.

  ``rng`` is the run's base key: generator iteration i draws its latents from
  ``fold_in(rng, i)``, so a resumed run draws the same numbers.
  """
  generator: TrainState
  critic: TrainState
  gen_iter: jax.Array  # int32 scalar: generator iterations done
  rng: jax.Array  # raw key data (uint32) of config.rng_impl


def make_optimizer(config, learning_rate: float) -> optax.GradientTransformation:
  """RMSProp or Adam with PyTorch's definitions (the reference's optimisers)."""
  if config.optimizer == 'rmsprop':
    # PyTorch RMSprop: alpha 0.99, eps 1e-8 added outside the square root.
    return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  if config.optimizer == 'adam':
    return optax.adam(learning_rate, b1=config.beta1, b2=config.beta2, eps=1e-8)
  raise configs.choice_error('optimizer', config.optimizer)


def root_key(config) -> jax.Array:
  """The run's root key: ``config.seed`` under ``config.rng_impl``.

  The default, ``rbg``, compiles several times faster than threefry on CPU
  (seconds per model init) and runs faster everywhere; its streams are
  reproducible on one backend, not across CPU/GPU/TPU. ``threefry2x32``
  gives the same numbers on every backend.
  """
  return jax.random.key(config.seed, impl=config.rng_impl)


def initial_randomness(config):
  """(the key that initialises the networks, the fixed noise of the sample grids)."""
  init_key, noise_key = jax.random.split(root_key(config))
  return init_key, jax.random.normal(noise_key, (config.num_samples, config.nz))


def create_state(config, data_shape: Sequence[int], rng: jax.Array,
                 axis_name: str | None = None) -> WGANState:
  """Initialises both networks as the reference does, and their optimisers.

  ``rng`` is a typed key (see ``root_key``). ``axis_name`` names the device
  axis the step functions will run under (BatchNorm statistics are averaged
  over it); ``None`` for one device.
  """
  generator = models.make_generator(config, data_shape, axis_name)
  critic = models.make_critic(config, data_shape, axis_name)
  g_key, c_key, run_key = jax.random.split(rng, 3)
  z = jnp.zeros((2, config.nz), jnp.float32)
  x = jnp.zeros((2, *data_shape), jnp.float32)
  # jit: one compile instead of one per op (seconds for large models). The
  # formulations do not change the parameters: no timing for a dummy batch.
  with tuning.suspended():
    g_vars = jax.jit(functools.partial(generator.init, train=False))(g_key, z)
    c_vars = jax.jit(functools.partial(critic.init, train=False))(c_key, x)

  def train_state_of(module, variables, lr):
    return TrainState.create(
        apply_fn=module.apply, params=variables['params'],
        batch_stats=variables.get('batch_stats', {}),
        tx=make_optimizer(config, lr))

  return WGANState(
      generator=train_state_of(generator, g_vars, config.lr_gen),
      critic=train_state_of(critic, c_vars, config.lr_critic),
      gen_iter=jnp.zeros((), jnp.int32),
      rng=jax.random.key_data(run_key))


def create_states(config, data_shape: Sequence[int], rngs: jax.Array,
                  axis_name: str | None = None) -> WGANState:
  """``create_state`` for each key of ``rngs`` (a 1-D key array), stacked on a
  leading seed axis; one compile.

  A loop (``lax.map``), not ``vmap``: under ``vmap`` ``rbg`` keys give other
  numbers, and state k must be the one ``create_state`` gives for key k.
  """
  return jax.lax.map(
      lambda key: create_state(config, data_shape, key, axis_name), rngs)
