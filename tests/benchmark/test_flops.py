"""Model FLOP counts: known answers for products, convolutions and whole iterations."""

import time

import jax
import jax.numpy as jnp
import pytest

from wgan_jax import benchmark, layers
from wgan_jax.benchmark import flops


def _count(fn, *args):
  return flops.jaxpr_flops(jax.make_jaxpr(fn)(*args))


def test_products_and_scans_count_their_multiply_adds():
  a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
  assert _count(jnp.matmul, a, b) == 2 * 3 * 5 * 7
  batched = jnp.ones((4, 3, 5)), jnp.ones((4, 5, 7))
  assert _count(jnp.matmul, *batched) == 4 * 2 * 3 * 5 * 7

  def scanned(a, b):
    return jax.lax.scan(lambda c, _: (c @ b[:, :5], None), a, length=6)[0]
  assert _count(scanned, jnp.ones((3, 5)), jnp.ones((5, 5))) == 6 * 2 * 3 * 5 * 5


@pytest.mark.parametrize('cin,cout', [(3, 8), (8, 4)])
def test_convolutions_count_real_taps_in_every_formulation(cin, cout):
  x = jnp.ones((2, 8, 8, cin))
  k = jnp.ones((4, 4, cin, cout))
  forward = 2 * 2 * 4 * 4 * cout * 16 * cin  # out pixels x taps x in channels
  assert _count(layers.conv_stride2, x, k) == forward
  for wrt in (0, 1):  # each gradient is another product of the same size
    grad = lambda x, k, wrt=wrt: jax.grad(
        lambda *a: layers.conv_stride2(*a).sum(), argnums=wrt)(x, k)
    assert _count(grad, x, k) == 2 * forward

  # The transposed conv, 8x8 -> 16x16: dilated and sub-pixel forms alike.
  kt = jnp.ones((4, 4, cin, cout))
  convt = 2 * 2 * 8 * 8 * cin * 16 * cout  # in pixels x taps x channels
  for fn in (layers.conv_transpose_dilated, layers.conv_transpose_subpixel):
    assert _count(fn, x, kt) == convt
    grads = lambda x, k, fn=fn: jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1))(x, k)
    assert _count(grads, x, kt) == 3 * convt


def test_mlp_iteration_matches_the_count_by_hand(mlp_iteration_flops):
  config = benchmark.bench_config(benchmark.MODELS['mlp'])
  got = flops.iteration_flops(config, (64, 64, 3))
  assert got['generator_iteration'] == mlp_iteration_flops(64, 100, 512, 64 * 64 * 3, 5)
  assert got['generator_iteration'] == 5 * got['critic_step'] + got['generator_step']
  assert flops.iteration_flops(config, (64, 64, 3), batch_size=32)['critic_step'] \
      == got['critic_step'] / 2


def test_dcgan_iterations_match_the_quoted_sizes():
  # The issue quotes about 90 GFLOP (32px) and 532 GFLOP (64px) at batch 64.
  for model, quoted in (('dcgan32', 90e9), ('dcgan64', 532e9)):
    config = benchmark.bench_config(benchmark.MODELS[model])
    size = config.image_size
    got = flops.iteration_flops(config, (size, size, 3))['generator_iteration']
    assert got == pytest.approx(quoted, rel=0.01)


def test_gemm_rate_times_the_product():
  calls = []

  def product():  # a "product" of n = 100 that takes at least 10 ms
    calls.append(1)
    time.sleep(0.01)

  rate = flops.dense_gemm_rate(product, lambda r: r, n=100, seconds=0.05)
  assert len(calls) >= 2  # a warm-up call, then timed ones
  # 2 n^3 FLOP in the best (shortest) call: at most 10 ms' worth, and sleep
  # never returns early; a loaded machine may stretch the best call to 40 ms.
  assert 2e6 / 0.04 < rate <= 2e6 / 0.01
  # A real product: a CPU core does at least a few MFLOP/s, nothing here 100 TFLOP/s.
  assert 1e6 < flops.jax_gemm_rate(n=64, seconds=0.01) < 1e14
