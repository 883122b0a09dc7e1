"""Generators and critics of the reference WGAN code, as Flax Linen modules.

Images are NHWC in [-1, 1]. Every module takes ``train``: in training mode
BatchNorm normalises with the batch's statistics and updates its running
averages, as PyTorch's ``BatchNorm2d`` does (the reference never leaves that
mode). The critic returns one score per example, shape ``(batch,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from wgan_jax.errors import UserError

# The reference's weights_init: conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


# PyTorch's nn.Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# The reference leaves its MLPs at that default.
torch_linear_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')


def torch_linear_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics (eps 1e-5, momentum 0.1).

  Flax's own BatchNorm keeps the biased batch variance as its running
  average; PyTorch keeps the unbiased one. Matching it keeps running
  statistics (and so eval-mode outputs and imported checkpoints) identical to
  the reference. With ``axis_name`` the batch statistics are those of the
  global batch across devices.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool):
    # Statistics and normalisation in float32 whatever the compute dtype:
    # bfloat16's 8-bit mantissa would lose the variance of small activations.
    dtype, x = x.dtype, x.astype(jnp.float32)
    features = x.shape[-1]
    scale = self.param('scale', bn_scale_init, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,))
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      count = math.prod(x.shape[:-1])
      mean = jnp.mean(x, axes)
      if self.axis_name is not None:
        mean = jax.lax.pmean(mean, self.axis_name)
        count *= jax.lax.psum(1, self.axis_name)
      # Two passes, not E[x^2] - E[x]^2: the same numbers as PyTorch.
      var = jnp.mean(jnp.square(x - mean), axes)
      if self.axis_name is not None:
        var = jax.lax.pmean(var, self.axis_name)
      if not self.is_initializing():
        m = self.momentum
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(dtype)


_DN = ('NHWC', 'HWIO', 'NHWC')
# Sub-pixel form of ConvTranspose2d(k=4, s=2, p=1): output row 2m + a takes
# input rows m - 1, m (a = 0: taps 3, 1) or m, m + 1 (a = 1: taps 2, 0).
_PHASES = {0: ((1, 0), (3, 1)), 1: ((0, 1), (2, 0))}
CONVT_IMPLS = ('auto', 'subpixel', 'dilated')


def conv_transpose_dilated(x, kernel):
  """ConvTranspose2d(k=4, s=2, p=1) as XLA writes it: a conv over the
  2x-dilated input with the flipped kernel (its kernel gradient is slow in
  XLA on CPU and CUDA: jax issues 23783, 31662)."""
  return jax.lax.conv_general_dilated(
      x, kernel[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
      dimension_numbers=_DN)


def conv_transpose_subpixel(x, kernel):
  """The same ConvTranspose2d(k=4, s=2, p=1) as four 2x2 convs, one per output
  phase, interleaved: the same arithmetic, and gradients that are plain convs."""
  rows = []
  for a in (0, 1):
    cols = []
    for b in (0, 1):
      (pad_a, taps_a), (pad_b, taps_b) = _PHASES[a], _PHASES[b]
      k = kernel[jnp.array(taps_a)][:, jnp.array(taps_b)]
      cols.append(jax.lax.conv_general_dilated(
          x, k, (1, 1), (pad_a, pad_b), dimension_numbers=_DN))
    rows.append(jnp.stack(cols, axis=3))  # (B, H, W, b, C)
  y = jnp.stack(rows, axis=2)  # (B, H, a, W, b, C)
  n, h, _, w, _, c = y.shape
  return y.reshape(n, 2 * h, 2 * w, c)


@jax.custom_vjp
def conv_transpose_mixed(x, kernel):
  """The dilated form forward, the sub-pixel form's gradients: for outputs
  of a few channels (the generator's last layer) the dilated forward is the
  faster, its kernel gradient the slower (5x on a 2-core CPU)."""
  return conv_transpose_dilated(x, kernel)


def _mixed_fwd(x, kernel):
  return conv_transpose_dilated(x, kernel), (x, kernel)


def _mixed_bwd(residuals, g):
  # The sub-pixel form is linear: its forward is not needed, and XLA drops it.
  return jax.vjp(conv_transpose_subpixel, *residuals)[1](g)


conv_transpose_mixed.defvjp(_mixed_fwd, _mixed_bwd)


def conv_stride2(x, kernel):
  """Conv2d(k=4, s=2, p=1) as XLA computes it (the DCGAN critic's layers)."""
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=_DN)


def _tap_views(x, ho: int, wo: int):
  """The 16 views of the padded input that the 16 taps of a 4x4, stride-2,
  padding-1 conv multiply, each (B, ho, wo, C), in the kernel's tap order."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, u:u + 2 * ho:2, v:v + 2 * wo:2, :] for u in range(4) for v in range(4)]


@jax.custom_vjp
def conv_stride2_taps(x, kernel):
  """``conv_stride2`` with a faster kernel gradient on the CPU.

  XLA computes the kernel gradient of a strided conv as a conv dilated by
  the stride, slowly on the CPU (up to 13x its forward at 64px); here it is
  one matrix product per tap (for inputs of a few channels, one product
  with the patch matrix). The forward and the input gradient are XLA's.
  """
  return conv_stride2(x, kernel)


def _taps_fwd(x, kernel):
  return conv_stride2(x, kernel), (x, kernel)


def _taps_bwd(residuals, g):
  x, kernel = residuals
  dx = jax.vjp(lambda x: conv_stride2(x, kernel), x)[1](g)[0]  # dropped for data
  _, ho, wo, out = g.shape
  views = _tap_views(x, ho, wo)
  g = g.reshape(-1, out)
  if x.shape[-1] <= 4:
    patches = jnp.stack(views, axis=3).reshape(g.shape[0], -1)
    dk = patches.T @ g
  else:
    dk = jnp.stack([v.reshape(g.shape[0], -1).T @ g for v in views])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv_stride2_taps.defvjp(_taps_fwd, _taps_bwd)
CONV_IMPLS = ('auto', 'taps', 'xla')


def _kernel4x4(module: nn.Module, x, features: int):
  """A (4, 4, in, out) kernel parameter, initialised as the reference's, and
  ``x``, both in ``module.dtype``."""
  kernel = module.param('kernel', conv_init, (4, 4, x.shape[-1], features))
  return kernel.astype(module.dtype), x.astype(module.dtype)


class Conv4x4Stride2(nn.Module):
  """PyTorch's Conv2d(k=4, s=2, p=1, bias=False); parameters as ``nn.Conv``'s.

  ``impl``: 'xla' (XLA's conv and its gradients), 'taps'
  (``conv_stride2_taps``: the same numbers up to float rounding, a faster
  kernel gradient on the CPU), 'auto' (taps on the CPU, xla elsewhere).
  """
  features: int
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, x = _kernel4x4(self, x, self.features)
    impl = self.impl
    if impl == 'auto':
      impl = 'taps' if jax.default_backend() == 'cpu' else 'xla'
    if impl == 'taps':
      return conv_stride2_taps(x, kernel)
    if impl == 'xla':
      return conv_stride2(x, kernel)
    raise UserError(f'--conv_impl={self.impl!r}: choose one of {", ".join(CONV_IMPLS)}.')


class ConvTranspose(nn.Module):
  """PyTorch's ConvTranspose2d with a 4x4 kernel and no bias.

  ``stride=1`` is the generator's first layer (1x1 -> 4x4, padding 0),
  computed as a matrix product; ``stride=2`` doubles the size (padding 1).
  The kernel is (4, 4, in, out) in PyTorch's tap order, so a PyTorch weight
  maps to it by a transpose alone. ``impl`` picks the formulation of the
  stride-2 layer; ``auto`` takes the sub-pixel one except for outputs of a
  few channels, where the dilated conv's forward is faster
  (``conv_transpose_mixed``: it, with the sub-pixel gradients).
  """
  features: int
  stride: int
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, x = _kernel4x4(self, x, self.features)
    if self.stride == 1:
      if x.shape[1:3] != (1, 1):
        raise ValueError(f'the first ConvTranspose takes 1x1 inputs, got {x.shape}')
      return jnp.einsum('bi,hwio->bhwo', x[:, 0, 0], kernel)
    if self.impl == 'auto':
      if self.features <= 4:
        return conv_transpose_mixed(x, kernel)
      return conv_transpose_subpixel(x, kernel)
    impl = self.impl
    if impl == 'subpixel':
      return conv_transpose_subpixel(x, kernel)
    if impl == 'dilated':
      return conv_transpose_dilated(x, kernel)
    raise UserError(f'--convt_impl={self.impl!r}: choose one of {", ".join(CONVT_IMPLS)}.')


def _check_image_size(image_size: int) -> None:
  if image_size < 16 or image_size % 16:
    raise UserError(
        f'image_size={image_size}: DCGAN models need a multiple of 16 '
        '(16, 32, 64, 128, ...); pass e.g. --image_size=32.')


def generator_base_width(image_size: int, ngf: int) -> int:
  """Width of the generator's first layer: ngf * image_size / 8 (ngf*8 at 64px)."""
  _check_image_size(image_size)
  cngf, size = ngf // 2, 4
  while size != image_size:
    cngf, size = cngf * 2, size * 2
  return cngf


class DCGANGenerator(nn.Module):
  """The reference's DCGAN_G (``use_bn=True``) and DCGAN_G_nobn.

  z (batch, nz) -> 4x4 -> doubling to image_size, halving the width each
  time; optional 3x3 extra layers before the last upsampling; tanh output.
  """
  image_size: int
  channels: int
  ngf: int = 64
  n_extra_layers: int = 0
  use_bn: bool = True
  axis_name: str | None = None
  convt_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    cngf = generator_base_width(self.image_size, self.ngf)

    def block(x, features, name, kind):
      if kind == 'conv':
        x = nn.Conv(features, (3, 3), (1, 1), ((1, 1), (1, 1)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype,
                    name=f'{name}_conv')(x)
      else:
        x = ConvTranspose(features, 1 if kind == 'first' else 2,
                          impl=self.convt_impl, dtype=self.dtype,
                          name=f'{name}_convt')(x)
      if self.use_bn:
        x = BatchNorm(axis_name=self.axis_name, name=f'{name}_bn')(
            x, use_running_average=not train)
      return nn.relu(x)

    x = z.reshape(z.shape[0], 1, 1, -1).astype(self.dtype)
    x = block(x, cngf, 'initial', 'first')
    size, i = 4, 0
    while size < self.image_size // 2:
      cngf //= 2
      x = block(x, cngf, f'pyramid_{i}', 'convt')
      size, i = size * 2, i + 1
    for t in range(self.n_extra_layers):
      x = block(x, cngf, f'extra_{t}', 'conv')
    x = ConvTranspose(self.channels, 2, impl=self.convt_impl, dtype=self.dtype,
                      name='final_convt')(x)
    return jnp.tanh(x).astype(jnp.float32)


class DCGANCritic(nn.Module):
  """The reference's DCGAN_D (``use_bn=True``) and DCGAN_D_nobn; no sigmoid."""
  image_size: int
  ndf: int = 64
  n_extra_layers: int = 0
  use_bn: bool = True
  axis_name: str | None = None
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    _check_image_size(self.image_size)
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'critic built for {self.image_size}px got {x.shape}')

    def block(x, features, name, kernel, stride, pad, bn):
      if (kernel, stride, pad) == (4, 2, 1):
        x = Conv4x4Stride2(features, self.conv_impl, self.dtype, name=f'{name}_conv')(x)
      else:
        x = nn.Conv(features, (kernel, kernel), (stride, stride),
                    ((pad, pad), (pad, pad)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype,
                    name=f'{name}_conv')(x)
      if bn and self.use_bn:
        x = BatchNorm(axis_name=self.axis_name, name=f'{name}_bn')(
            x, use_running_average=not train)
      return nn.leaky_relu(x, 0.2)

    x = x.astype(self.dtype)
    cndf = self.ndf
    x = block(x, cndf, 'initial', 4, 2, 1, bn=False)
    for t in range(self.n_extra_layers):
      x = block(x, cndf, f'extra_{t}', 3, 1, 1, bn=True)
    size, i = self.image_size // 2, 0
    while size > 4:
      cndf *= 2
      x = block(x, cndf, f'pyramid_{i}', 4, 2, 1, bn=True)
      size, i = size // 2, i + 1
    x = nn.Conv(1, (4, 4), (1, 1), 'VALID', use_bias=False,
                kernel_init=conv_init, dtype=self.dtype, name='final_conv')(x)
    return x.reshape(x.shape[0]).astype(jnp.float32)


def _torch_dense(features: int, fan_in: int, name: str, dtype) -> nn.Dense:
  return nn.Dense(features, kernel_init=torch_linear_kernel_init,
                  bias_init=torch_linear_bias_init(fan_in), dtype=dtype, name=name)


class MLPGenerator(nn.Module):
  """The reference's MLP_G: 3 hidden ReLU layers of width ngf, no output tanh.

  ``out_shape`` is (H, W, C) for images or (2,) for points in the plane.
  """
  out_shape: Sequence[int]
  ngf: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    del train  # no BatchNorm; the argument keeps one calling convention
    x = z.reshape(z.shape[0], -1)
    for i in range(3):
      x = nn.relu(_torch_dense(self.ngf, x.shape[-1], f'hidden_{i}', self.dtype)(x))
    x = _torch_dense(math.prod(self.out_shape), x.shape[-1], 'out', self.dtype)(x)
    return x.reshape((z.shape[0], *self.out_shape)).astype(jnp.float32)


class MLPCritic(nn.Module):
  """The reference's MLP_D: 3 hidden ReLU layers of width ndf, a linear score."""
  ndf: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train
    x = x.reshape(x.shape[0], -1)
    for i in range(3):
      x = nn.relu(_torch_dense(self.ndf, x.shape[-1], f'hidden_{i}', self.dtype)(x))
    x = _torch_dense(1, x.shape[-1], 'out', self.dtype)(x)
    return x.reshape(x.shape[0]).astype(jnp.float32)


COMPUTE_DTYPES = ('float32', 'bfloat16')


def compute_dtype(config):
  """The nets' arithmetic dtype (``config.compute_dtype``). Parameters,
  optimiser states, BatchNorm and the losses stay float32 either way."""
  name = config.get('compute_dtype', 'float32')  # configs saved before the option
  if name not in COMPUTE_DTYPES:
    raise UserError(f'--compute_dtype={name!r}: choose {" or ".join(COMPUTE_DTYPES)}.')
  return jnp.dtype(name)


def make_generator(config, data_shape: Sequence[int],
                   axis_name: str | None = None) -> nn.Module:
  """The generator that ``config.generator`` names, for data of ``data_shape``."""
  dtype = compute_dtype(config)
  if config.generator == 'mlp':
    return MLPGenerator(out_shape=tuple(data_shape), ngf=config.ngf, dtype=dtype)
  if config.generator == 'dcgan':
    _require_images(data_shape, 'generator')
    return DCGANGenerator(image_size=data_shape[0], channels=data_shape[-1],
                          ngf=config.ngf, n_extra_layers=config.n_extra_layers,
                          use_bn=not config.no_bn, axis_name=axis_name,
                          convt_impl=config.convt_impl, dtype=dtype)
  raise UserError(f'--generator={config.generator!r}: choose dcgan or mlp.')


def make_critic(config, data_shape: Sequence[int],
                axis_name: str | None = None) -> nn.Module:
  """The critic that ``config.critic`` names, for data of ``data_shape``."""
  dtype = compute_dtype(config)
  if config.critic == 'mlp':
    return MLPCritic(ndf=config.ndf, dtype=dtype)
  if config.critic == 'dcgan':
    _require_images(data_shape, 'critic')
    return DCGANCritic(image_size=data_shape[0], ndf=config.ndf,
                       n_extra_layers=config.n_extra_layers,
                       use_bn=config.critic_bn, axis_name=axis_name,
                       conv_impl=config.get('conv_impl', 'auto'), dtype=dtype)
  raise UserError(f'--critic={config.critic!r}: choose dcgan or mlp.')


def _require_images(data_shape, which):
  if len(data_shape) != 3:
    raise UserError(
        f'the dcgan {which} needs images, but this dataset has points of shape '
        f'{tuple(data_shape)}; pass --generator=mlp --critic=mlp.')
