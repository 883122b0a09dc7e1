"""Test set-up: four simulated CPU devices, so the pmap paths run for real;
the fixtures shared by the test modules.

XLA reads the flag when jax is first imported, hence the top of conftest.
"""

import os

NUM_TEST_DEVICES = 4
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''),
     f'--xla_force_host_platform_device_count={NUM_TEST_DEVICES}']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The static rule of wgan_jax.layers, not per-machine timings, picks each
# layer's formulation: the same programs on every run (tests/test_tuning.py
# turns tuning on where it is tested).
os.environ['WGAN_JAX_CONV_TUNING'] = '0'

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from wgan_jax import configs, parallel, steps  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _tiny_config(dataset='digits', **overrides):
  """A config small enough for a CPU test: 16px, narrow nets, short schedule."""
  config = configs.get_config(dataset)
  config.update(image_size=16, ngf=8, ndf=8, batch_size=8, nz=8,
                num_gen_iters=3, n_critic=2, n_critic_warmup=3,
                warmup_gen_iters=1, boost_every=0, sample_every=2,
                num_samples=16, log_every=1, progress_bar=False)
  if config.generator == 'mlp':
    config.update(ngf=16, ndf=16, nz=2, batch_size=16)
  config.update(overrides)
  return config


@pytest.fixture(scope='session')
def devices():
  assert jax.device_count() == NUM_TEST_DEVICES, 'XLA_FLAGS was set too late'
  return jax.local_devices()


@pytest.fixture(scope='session')
def tiny_config():
  """``tiny_config(dataset='digits', **overrides)``: a config small enough for
  a CPU test (16px, narrow nets, short schedule)."""
  return _tiny_config


def _train_iterations(config, iteration, devices, state, source, num_iters):
  """``num_iters`` generator iterations (with the config's critic schedule)
  of ``state`` on ``devices``; returns the state and each one's metrics."""
  p_state = parallel.replicate(state, devices)
  consumed, history = 0, []
  for i in range(num_iters):
    n = steps.critic_iterations(i, config)
    p_state, metrics = iteration(p_state, *source.batches(consumed, n))
    consumed += n
    history.append(jax.device_get(metrics))
  return parallel.unreplicate(p_state), history


@pytest.fixture(scope='session')
def train_iterations():
  """``train_iterations(config, iteration, devices, state, source, num_iters)``
  -> (final state, each iteration's metrics)."""
  return _train_iterations


def _assert_states_close(a, b, rtol=1e-4, atol=1e-6):
  for part in ('params', 'batch_stats', 'opt_state'):
    for net in ('generator', 'critic'):
      leaves_a = jax.tree.leaves(getattr(getattr(a, net), part))
      leaves_b = jax.tree.leaves(getattr(getattr(b, net), part))
      assert len(leaves_a) == len(leaves_b)
      assert leaves_a or part == 'batch_stats'
      for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                                   err_msg=f'{net}.{part}')
  assert int(a.gen_iter) == int(b.gen_iter)


@pytest.fixture(scope='session')
def assert_states_close():
  """``assert_states_close(a, b, rtol=1e-4, atol=1e-6)``: every parameter,
  BatchNorm statistic and optimiser state of two WGANStates agree."""
  return _assert_states_close
