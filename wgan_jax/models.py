"""Generators and critics of the reference WGAN code, as Flax Linen modules.

Images are NHWC in [-1, 1]. Every module takes ``train``: in training mode
BatchNorm normalises with the batch's statistics and updates its running
averages, as PyTorch's ``BatchNorm2d`` does (the reference never leaves that
mode). The critic returns one score per example, shape ``(batch,)``. The
layers they are built of are in ``wgan_jax.layers``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from wgan_jax import configs
from wgan_jax.errors import UserError
from wgan_jax.layers import (BatchNorm, Conv4x4Stride2, ConvTranspose, conv_init,
                             torch_linear_bias_init, torch_linear_kernel_init)


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
  conv_tuning: bool = True
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
                          impl=self.convt_impl, tune=self.conv_tuning, dtype=self.dtype,
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
    x = ConvTranspose(self.channels, 2, impl=self.convt_impl, tune=self.conv_tuning,
                      dtype=self.dtype, name='final_convt')(x)
    return jnp.tanh(x).astype(jnp.float32)


class DCGANCritic(nn.Module):
  """The reference's DCGAN_D (``use_bn=True``) and DCGAN_D_nobn; no sigmoid."""
  image_size: int
  ndf: int = 64
  n_extra_layers: int = 0
  use_bn: bool = True
  axis_name: str | None = None
  conv_impl: str = 'auto'
  conv_tuning: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    _check_image_size(self.image_size)
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'critic built for {self.image_size}px got {x.shape}')

    def block(x, features, name, kernel, stride, pad, bn):
      if (kernel, stride, pad) == (4, 2, 1):
        x = Conv4x4Stride2(features, self.conv_impl, self.dtype, tune=self.conv_tuning,
                           name=f'{name}_conv')(x)
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


COMPUTE_DTYPES = configs.CHOICES['compute_dtype'][0]


def compute_dtype(config):
  """The nets' arithmetic dtype (``config.compute_dtype``). Parameters,
  optimiser states, BatchNorm and the losses stay float32 either way."""
  # (.get: configs saved before the option)
  return jnp.dtype(configs.check_choice('compute_dtype', config.get('compute_dtype', 'float32')))


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
                          convt_impl=config.convt_impl,
                          conv_tuning=config.get('conv_tuning', True), dtype=dtype)
  raise configs.choice_error('generator', config.generator)


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
                       conv_impl=config.get('conv_impl', 'auto'),
                       conv_tuning=config.get('conv_tuning', True), dtype=dtype)
  raise configs.choice_error('critic', config.critic)


def _require_images(data_shape, which):
  if len(data_shape) != 3:
    raise UserError(
        f'the dcgan {which} needs images, but this dataset has points of shape '
        f'{tuple(data_shape)}; pass --generator=mlp --critic=mlp.')


def generator_fn(config, data_shape: Sequence[int]):
  """jit'd ``G(variables, z)`` in training-mode BatchNorm (batch statistics),
  as the reference draws its sample grids; running statistics are left alone.
  (The variables are an argument, not baked into the program.) The one G(z)
  sampler of training's grids and of ``wgan_jax.generate``."""
  generator = make_generator(config, data_shape)

  @jax.jit
  def sample(variables, z):
    out, _ = generator.apply(variables, z, train=True, mutable=['batch_stats'])
    return out

  return sample


def sampler(config, data_shape: Sequence[int], variables):
  """``sample(key, n) -> (n, *data_shape)`` samples of the generator with
  ``variables``, on the device: latents N(0, 1) from ``key``, run through
  ``generator_fn`` in batches of the training batch size (the last one filled
  up with extra latents, then dropped)."""
  apply = generator_fn(config, data_shape)
  batch = config.batch_size
  variables = jax.device_put(variables)

  def sample(key, n: int):
    padded = -(-n // batch) * batch
    latents = jax.random.normal(key, (padded, config.nz), jnp.float32)
    chunks = [apply(variables, latents[i:i + batch]) for i in range(0, padded, batch)]
    return jnp.concatenate(chunks)[:n]

  return sample
