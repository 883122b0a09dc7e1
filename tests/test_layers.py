"""Layers: every conv formulation and BatchNorm against PyTorch and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_jax import layers

try:
  import torch
except ImportError:  # the newest-jax CI leg runs without PyTorch: the rest still runs there
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason='PyTorch is the oracle here')


@needs_torch
@pytest.mark.parametrize('impl', ['subpixel', 'dilated', 'mixed', 'gemm', 'auto'])
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
      kernel, x) for f in layers.CONVT_FORMS.values()]
  for other in grads[1:]:
    for a, b in zip(grads[0], other):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)



def test_conv_transpose_gemm_per_seed_and_in_bfloat16():
  # Under vmap (--num_seeds: a kernel per seed) its hand-written gradients
  # batch as the sub-pixel form's do; in bfloat16 they keep the dtypes.
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 2, 4, 4, 5)).astype(np.float32))
  kernel = jnp.asarray(rng.standard_normal((3, 4, 4, 5, 6)).astype(np.float32))
  grads = [jax.jit(jax.vmap(jax.grad(lambda k, x, f=f: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))))(
      kernel, x) for f in (layers.conv_transpose_subpixel, layers.conv_transpose_gemm)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  xb, kb = x[0].astype(jnp.bfloat16), kernel[0].astype(jnp.bfloat16)
  y, vjp = jax.vjp(layers.conv_transpose_gemm, xb, kb)
  dx, dk = vjp(jnp.ones_like(y))
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(layers.conv_transpose_subpixel(xb, kb), np.float32),
                             rtol=0.05, atol=0.05)


def test_batch_normalize_has_the_gradients_of_its_formula():
  # Its gradient is written by hand; autodiff of the plain two-pass formula
  # is the reference, the statistics' own cotangents included.
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((6, 3, 3, 4)) * 3 + 1, jnp.float32)
  scale, bias = (jnp.asarray(rng.standard_normal(4), jnp.float32) for _ in range(2))
  w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

  def plain(x, scale, bias, eps):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias, mean, var

  def objective(bn):
    def f(x, scale, bias):
      y, mean, var = bn(x, scale, bias, 1e-5)
      return jnp.sum(jnp.sin(y) * w) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
    return jax.jit(jax.grad(f, argnums=(0, 1, 2)))

  expected = objective(plain)(x, scale, bias)
  got = objective(layers.batch_normalize)(x, scale, bias)
  for a, b in zip(expected, got):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
  for a, b in zip(plain(x, scale, bias, 1e-5), layers.batch_normalize(x, scale, bias, 1e-5)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)

  # A gradient penalty through a BatchNorm critic differentiates the gradient.
  def penalty(bn):
    def f(scale, x):
      input_grad = jax.grad(lambda x: jnp.sum(jnp.sin(bn(x, scale, bias, 1e-5)[0]) * w))(x)
      return jnp.sum(input_grad ** 2)
    return jax.jit(jax.grad(f))(scale, x)

  np.testing.assert_allclose(penalty(layers.batch_normalize), penalty(plain), rtol=1e-4, atol=1e-5)


def test_batch_normalize_across_devices_has_the_gradients_of_its_formula():
  # The global batch's statistics under pmap: autodiff through pmean of the
  # plain formula is the reference for every device's gradients.
  devices = jax.devices()[:2]
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((2, 3, 2, 2, 4)) * 2 + 1, jnp.float32)
  w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  scale, bias = (jnp.asarray(rng.standard_normal(4), jnp.float32) for _ in range(2))

  def plain(x, scale, bias, eps, axis):
    mean = jax.lax.pmean(jnp.mean(x, (0, 1, 2)), axis)
    var = jax.lax.pmean(jnp.mean(jnp.square(x - mean), (0, 1, 2)), axis)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias, mean, var

  def grads(bn):
    def f(x, w, scale, bias):
      y, mean, var = bn(x, scale, bias, 1e-5, 'devices')
      return jnp.sum(jnp.sin(y) * w) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
    return jax.pmap(jax.grad(f, argnums=(0, 2, 3)), 'devices', devices=devices,
                    in_axes=(0, 0, None, None))(x, w, scale, bias)

  for a, b in zip(grads(plain), grads(layers.batch_normalize)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)

@needs_torch
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


@needs_torch
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
