"""Models: shapes, parameter counts against the reference, init, the factories."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_jax import models
from wgan_jax.errors import UserError

torch = pytest.importorskip('torch')

from wgan_jax.reference import torch_model as ref  # noqa: E402  pylint: disable=wrong-import-position


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _init(module, x, seed=0):
  key = jax.random.key(seed, impl='rbg')
  return jax.jit(lambda k, x: module.init(k, x, train=False))(key, x)


@pytest.mark.parametrize('size', [16, 32, 64, 128])
@pytest.mark.parametrize('extra', [0, 1])
def test_dcgan_shapes_and_reference_parameter_counts(size, extra):
  nz, nc, ngf, ndf = 12, 3, 8, 8
  gen = models.DCGANGenerator(size, nc, ngf, n_extra_layers=extra)
  critic = models.DCGANCritic(size, ndf, n_extra_layers=extra)
  # Shapes only (jax.eval_shape): nothing is compiled or run.
  z = jax.ShapeDtypeStruct((2, nz), jnp.float32)
  key = jax.random.key(0, impl='rbg')
  g_vars = jax.eval_shape(lambda z: gen.init(key, z, train=False), z)
  images = jax.eval_shape(lambda v, z: gen.apply(v, z, train=False), g_vars, z)
  assert images.shape == (2, size, size, nc)
  c_vars = jax.eval_shape(lambda x: critic.init(key, x, train=False), images)
  scores = jax.eval_shape(lambda v, x: critic.apply(v, x, train=False), c_vars, images)
  assert scores.shape == (2,)

  t_gen = ref.DCGAN_G(size, nz, nc, ngf, extra)
  t_critic = ref.DCGAN_D(size, nz, nc, ndf, extra)
  assert _count(g_vars['params']) == ref.count_parameters(t_gen)
  assert _count(g_vars['batch_stats']) == ref.count_buffers(t_gen)
  assert _count(c_vars['params']) == ref.count_parameters(t_critic)
  assert _count(c_vars['batch_stats']) == ref.count_buffers(t_critic)


def test_reference_width_rule():
  # ngf * 8 at 64px, ngf * 4 at 32px, as the reference's DCGAN_G.
  assert models.generator_base_width(64, 64) == 512
  assert models.generator_base_width(32, 64) == 256
  assert models.generator_base_width(16, 64) == 128
  assert models.generator_base_width(128, 64) == 1024


def test_no_bn_variants_match_reference_counts():
  gen = models.DCGANGenerator(32, 1, 8, n_extra_layers=1, use_bn=False)
  g_vars = _init(gen, jnp.ones((2, 10)))
  assert 'batch_stats' not in g_vars
  assert _count(g_vars['params']) == ref.count_parameters(
      ref.DCGAN_G(32, 10, 1, 8, 1, use_bn=False))
  critic = models.DCGANCritic(32, 8, use_bn=False)
  c_vars = _init(critic, jnp.ones((2, 32, 32, 1)))
  assert _count(c_vars['params']) == ref.count_parameters(
      ref.DCGAN_D(32, 10, 1, 8, use_bn=False))


@pytest.mark.parametrize('shape', [(16, 16, 1), (32, 32, 3), (2,)])
def test_mlp_shapes_and_reference_counts(shape):
  gen = models.MLPGenerator(out_shape=shape, ngf=32)
  critic = models.MLPCritic(ndf=32)
  z = jnp.ones((5, 7))
  g_vars = _init(gen, z)
  out = gen.apply(g_vars, z)
  assert out.shape == (5, *shape)
  c_vars = _init(critic, out)
  assert critic.apply(c_vars, out).shape == (5,)
  if len(shape) == 3:
    size, nc = shape[0], shape[2]
    assert _count(g_vars['params']) == ref.count_parameters(ref.MLP_G(size, 7, nc, 32))
    assert _count(c_vars['params']) == ref.count_parameters(ref.MLP_D(size, 7, nc, 32))


def test_mlp_generator_has_no_tanh():
  gen = models.MLPGenerator(out_shape=(2,), ngf=16)
  variables = _init(gen, jnp.ones((4, 2)))
  big = jax.tree.map(lambda p: p * 50.0, variables)
  assert float(jnp.max(jnp.abs(gen.apply(big, jnp.ones((4, 2)))))) > 1.0


def test_dcgan_generator_output_is_tanh_bounded():
  gen = models.DCGANGenerator(16, 1, 8)
  variables = _init(gen, jnp.ones((4, 5)))
  big = jax.tree.map(lambda p: p * 50.0, variables)
  out, _ = gen.apply(big, jax.random.normal(jax.random.PRNGKey(1), (4, 5)),
                     train=True, mutable=['batch_stats'])
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert float(jnp.max(jnp.abs(out))) > 0.99  # saturates: it is a tanh


def test_initialisation_follows_reference():
  gen = models.DCGANGenerator(64, 3, 64)
  critic = models.DCGANCritic(64, 64)
  g_vars = _init(gen, jnp.ones((2, 100)))
  c_vars = _init(critic, jnp.ones((2, 64, 64, 3)))
  kernels, scales, biases = [], [], []
  for variables in (g_vars, c_vars):
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables['params'])[0]:
      name = jax.tree_util.keystr(path)
      (kernels if 'kernel' in name else scales if 'scale' in name else biases
      ).append(np.asarray(leaf).ravel())
  kernels, scales, biases = map(np.concatenate, (kernels, scales, biases))
  assert abs(kernels.mean()) < 1e-3 and abs(kernels.std() - 0.02) < 5e-4
  assert abs(scales.mean() - 1.0) < 3e-3 and abs(scales.std() - 0.02) < 3e-3
  assert np.all(biases == 0.0)


def test_mlp_initialisation_is_pytorch_linear_default():
  critic = models.MLPCritic(ndf=256)
  variables = _init(critic, jnp.ones((2, 400)))
  kernel = np.asarray(variables['params']['hidden_0']['kernel'])
  bias = np.asarray(variables['params']['hidden_0']['bias'])
  bound = 1 / math.sqrt(400)
  assert kernel.max() <= bound and kernel.min() >= -bound
  assert abs(kernel.std() - bound / math.sqrt(3)) < 1e-3  # uniform's std
  assert bias.max() <= bound and bias.min() >= -bound and bias.std() > 0


def test_factories_pick_models_and_refuse_bad_combinations(tiny_config):
  config = tiny_config()
  assert isinstance(models.make_generator(config, (16, 16, 1)), models.DCGANGenerator)
  assert isinstance(models.make_critic(config, (16, 16, 1)), models.DCGANCritic)
  with pytest.raises(UserError, match='--generator=mlp --critic=mlp'):
    models.make_generator(config, (2,))
  config.critic = 'resnet'
  with pytest.raises(UserError, match='choose dcgan or mlp'):
    models.make_critic(config, (16, 16, 1))
  with pytest.raises(UserError, match='multiple of 16'):
    models.generator_base_width(24, 8)


def test_critic_conv_impls_agree_and_keep_the_parameter_layout():
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32))
  key = jax.random.key(0, impl='rbg')  # threefry's init compiles for 20 s
  critics = [models.DCGANCritic(image_size=16, ndf=4, conv_impl=impl) for impl in ('xla', 'taps')]
  variables = jax.jit(critics[0].init)(key, x)
  assert jax.tree.structure(jax.eval_shape(critics[1].init, key, x)) == \
      jax.tree.structure(variables)

  def grads(critic):
    def loss(params):
      out, _ = critic.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
      return jnp.sum(out)
    return jax.jit(jax.grad(loss))(variables['params'])

  for a, b in zip(jax.tree.leaves(grads(critics[0])), jax.tree.leaves(grads(critics[1]))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(UserError, match='conv_impl'):
    jax.eval_shape(models.DCGANCritic(image_size=16, ndf=4, conv_impl='fast').init,
                   key, x)
