"""Per-layer formulations chosen by measurement: the Winograd form, the
choice, its cache, and the nets it builds."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_jax import layers, models, tuning
from wgan_jax.errors import UserError


@pytest.fixture
def tuning_on(monkeypatch, tmp_path):
  """Tuning as a user gets it, with its cache in a temporary directory."""
  monkeypatch.setenv('WGAN_JAX_CONV_TUNING', '1')
  monkeypatch.setenv('WGAN_JAX_CACHE_DIR', str(tmp_path))
  monkeypatch.setattr(tuning, '_memory', {})
  return tmp_path / 'conv_formulations.json'


@pytest.mark.parametrize('size,channels', [(8, 3), (16, 6), (4, 5)])
def test_winograd_conv_and_its_gradients_equal_xla(size, channels):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((2, size, size, channels)).astype(np.float32))
  kernel = jnp.asarray(rng.standard_normal((4, 4, channels, 7)).astype(np.float32))
  loss = lambda f: jax.jit(jax.value_and_grad(  # noqa: E731
      lambda k, x: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1)))(kernel, x)
  (value_a, grads_a), (value_b, grads_b) = loss(layers.conv_stride2), loss(
      layers.conv_stride2_winograd)
  np.testing.assert_allclose(layers.conv_stride2_winograd(x, kernel),
                             layers.conv_stride2(x, kernel), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
  for a, b in zip(grads_a, grads_b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_winograd_refuses_sides_that_do_not_tile():
  assert layers.winograd_fits((1, 8, 8, 3)) and not layers.winograd_fits((1, 6, 6, 3))
  conv = layers.Conv4x4Stride2(4, impl='winograd')
  with pytest.raises(UserError, match='multiple of 8'):
    conv.init(jax.random.key(0), jnp.ones((1, 6, 6, 3)))


def test_the_choice_is_measured_once_and_then_read_from_the_cache(tuning_on, monkeypatch):
  args = ('conv', (2, 8, 8, 4), (4, 4, 4, 8), jnp.float32, ('taps', 'xla', 'winograd'), 'taps')
  choice = tuning.choose(*args)
  saved = json.loads(tuning_on.read_text())
  (entry,) = saved.values()
  assert entry['choice'] == choice == min(entry['ms'], key=entry['ms'].get)
  assert set(entry['ms']) == {'taps', 'xla', 'winograd'}
  assert all(ms > 0 for ms in entry['ms'].values())
  # A new process (an empty memory) reads the file instead of measuring.
  monkeypatch.setattr(tuning, '_memory', {})
  monkeypatch.setattr(tuning, 'measure', lambda *a: pytest.fail('measured again'))
  assert tuning.choose(*args) == choice
  # Another shape is another entry.
  monkeypatch.undo()
  monkeypatch.setenv('WGAN_JAX_CONV_TUNING', '1')
  monkeypatch.setenv('WGAN_JAX_CACHE_DIR', str(tuning_on.parent))
  tuning.choose('convt', (2, 4, 4, 8), (4, 4, 8, 4), jnp.float32, ('subpixel', 'mixed'),
                'subpixel')
  assert len(json.loads(tuning_on.read_text())) == 2


def test_off_or_with_one_candidate_the_default_is_taken(monkeypatch):
  monkeypatch.setattr(tuning, 'measure', lambda *a: pytest.fail('measured'))
  monkeypatch.setenv('WGAN_JAX_CONV_TUNING', '0')
  assert tuning.choose('conv', (2, 8, 8, 4), (4, 4, 4, 8), jnp.float32,
                       ('taps', 'xla'), 'taps') == 'taps'
  monkeypatch.setenv('WGAN_JAX_CONV_TUNING', '1')
  assert tuning.choose('conv', (2, 8, 8, 4), (4, 4, 4, 8), jnp.float32, ('xla',), 'xla') == 'xla'


def test_an_unwritable_cache_keeps_the_choice_in_memory(tuning_on, monkeypatch):
  blocker = tuning_on.parent / 'file'
  blocker.write_text('')
  monkeypatch.setenv('WGAN_JAX_CACHE_DIR', str(blocker / 'sub'))  # under a file
  choice = tuning.choose('conv', (2, 8, 8, 4), (4, 4, 4, 8), jnp.float32, ('taps', 'xla'),
                         'taps')
  assert choice in ('taps', 'xla') and list(tuning._memory.values()) == [choice]  # pylint: disable=protected-access


def test_nets_built_with_tuned_layers_compute_what_the_static_rule_does(
    tuning_on, monkeypatch, tiny_config):
  config = tiny_config('stacked_digits', image_size=16, ngf=8, ndf=8)
  shape = (16, 16, 3)
  z = jax.random.normal(jax.random.key(1), (4, config.nz))
  x = jax.random.normal(jax.random.key(2), (4, *shape))

  def outputs():
    gen, critic = models.make_generator(config, shape), models.make_critic(config, shape)
    g_vars, c_vars = gen.init(jax.random.key(0), z), critic.init(jax.random.key(0), x)
    fake = gen.apply(g_vars, z, mutable=['batch_stats'])[0]
    return fake, critic.apply(c_vars, x, mutable=['batch_stats'])[0]

  tuned = outputs()
  assert len(json.loads(tuning_on.read_text())) == 4  # 2 critic, 2 generator layers
  monkeypatch.setenv('WGAN_JAX_CONV_TUNING', '0')
  static = outputs()
  for a, b in zip(tuned, static):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv_tuning_false_takes_the_static_rule(tuning_on, monkeypatch, tiny_config):
  monkeypatch.setattr(tuning, 'measure', lambda *a: pytest.fail('measured'))
  config = tiny_config('stacked_digits', image_size=16, ngf=8, ndf=8, conv_tuning=False)
  shape = (16, 16, 3)
  models.make_critic(config, shape).init(jax.random.key(0), jnp.ones((2, *shape)))
  models.make_generator(config, shape).init(jax.random.key(0), jnp.ones((2, config.nz)))
  assert not tuning_on.exists()


def test_initialising_the_state_times_nothing(tuning_on, monkeypatch, tiny_config):
  from wgan_jax import state  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tuning, 'measure', lambda *a: pytest.fail('measured a dummy batch'))
  config = tiny_config('stacked_digits', image_size=16, ngf=8, ndf=8)
  state.create_state(config, (16, 16, 3), jax.random.key(0))
  assert not tuning_on.exists() and tuning.enabled()


def test_each_kind_is_weighted_by_its_passes_per_iteration(monkeypatch):
  # A forward alone costs 1 ms, one with its gradients 100 ms: a critic layer
  # runs 11 of the latter per generator iteration, a generator layer 5 of the
  # former (the critic steps' fakes) and 1 of the latter (the generator step).
  monkeypatch.setattr(tuning, '_best_ms',
                      lambda call, *a: 100.0 if isinstance(call(), tuple) else 1.0)
  conv = tuning.measure('conv', (2, 8, 8, 4), (4, 4, 4, 8), jnp.float32, ('taps', 'xla'))
  convt = tuning.measure('convt', (2, 4, 4, 8), (4, 4, 8, 4), jnp.float32, ('subpixel', 'gemm'))
  assert conv == {'taps': 1100.0, 'xla': 1100.0}
  assert convt == {'subpixel': 105.0, 'gemm': 105.0}
