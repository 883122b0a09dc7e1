"""Test set-up: four simulated CPU devices, so the pmap paths run for real.

XLA reads the flag when jax is first imported, hence the top of conftest.
"""

import os

NUM_TEST_DEVICES = 4
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''),
     f'--xla_force_host_platform_device_count={NUM_TEST_DEVICES}']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from wgan_jax import configs  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_config(dataset='digits', **overrides):
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
