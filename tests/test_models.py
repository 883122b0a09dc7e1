"""Models: shapes, parameter counts against the reference, init, layers vs PyTorch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from wgan_jax import layers, models
from wgan_jax.errors import UserError

from wgan_jax.reference import torch_model as ref


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


@pytest.mark.parametrize('impl', ['subpixel', 'dilated', 'auto'])
@pytest.mark.parametrize('stride', [1, 2])
def test_conv_transpose_equals_pytorch(impl, stride):
  rng = np.random.default_rng(0)
  hw = 1 if stride == 1 else 5
  x = rng.standard_normal((3, hw, hw, 6)).astype(np.float32)
  # 'auto' has another formulation for outputs of up to 4 channels.
  layer = layers.ConvTranspose(3 if impl == 'auto' else 7, stride, impl=impl)
  variables = layer.init(jax.random.PRNGKey(0), x)
  kernel = np.array(variables['params']['kernel'])
  ours = np.asarray(layer.apply(variables, x))
  theirs = torch.nn.functional.conv_transpose2d(
      torch.from_numpy(x).permute(0, 3, 1, 2),
      torch.from_numpy(kernel).permute(2, 3, 0, 1), stride=stride,
      padding=0 if stride == 1 else 1).permute(0, 2, 3, 1).numpy()
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_conv_transpose_formulations_have_equal_gradients():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 4, 4, 5)).astype(np.float32))
  kernel = jnp.asarray(rng.standard_normal((4, 4, 5, 3)).astype(np.float32))
  grads = [jax.jit(jax.grad(lambda k, x: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1)))(
      kernel, x) for f in (layers.conv_transpose_subpixel, layers.conv_transpose_dilated,
                           layers.conv_transpose_mixed)]
  for other in grads[1:]:
    for a, b in zip(grads[0], other):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_batchnorm_matches_pytorch_in_both_modes():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((6, 3, 3, 4)).astype(np.float32) * 3 + 1
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, use_running_average=False)
  t_bn = torch.nn.BatchNorm2d(4)
  with torch.no_grad():
    t_bn.weight.copy_(torch.from_numpy(np.array(variables['params']['scale'])))
  t_x = torch.from_numpy(x).permute(0, 3, 1, 2)
  for _ in range(2):  # two updates of the running statistics
    y, mutated = bn.apply(variables, x, use_running_average=False,
                          mutable=['batch_stats'])
    variables = {**variables, **mutated}
    t_y = t_bn.train()(t_x).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(y, t_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(variables['batch_stats']['mean'],
                             t_bn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(variables['batch_stats']['var'],
                             t_bn.running_var.numpy(), rtol=1e-6)
  y_eval = bn.apply(variables, x, use_running_average=True)
  t_eval = t_bn.eval()(t_x).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(y_eval, t_eval, rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize('channels', [3, 6])  # the patch-matrix and per-tap paths
def test_strided_conv_taps_gradient_equals_xla(channels):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, channels)).astype(np.float32))
  kernel = jnp.asarray(rng.standard_normal((4, 4, channels, 5)).astype(np.float32))
  results = [jax.jit(jax.value_and_grad(lambda k, x: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1)))(
      kernel, x) for f in (layers.conv_stride2, layers.conv_stride2_taps)]
  (value_a, grads_a), (value_b, grads_b) = results
  np.testing.assert_allclose(value_a, value_b, rtol=1e-6)
  for a, b in zip(grads_a, grads_b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  theirs = torch.nn.functional.conv2d(
      torch.from_numpy(np.array(x)).permute(0, 3, 1, 2),
      torch.from_numpy(np.array(kernel)).permute(3, 2, 0, 1), stride=2, padding=1)
  np.testing.assert_allclose(layers.conv_stride2_taps(x, kernel),
                             theirs.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


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
