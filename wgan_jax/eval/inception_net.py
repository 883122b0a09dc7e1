"""The FID Inception-v3 network in Flax (pytorch-fid's port of the TTUR
reference's TensorFlow graph; see ``inception`` for the weights), and the
bilinear resize to its 299x299 input as PyTorch computes it."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from wgan_jax.errors import UserError

INPUT_SIZE = 299
FEATURES = 2048


def _interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) weights of PyTorch's bilinear ``align_corners=False``: output
  pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped to the
  first pixel, between two neighbours, with no antialiasing when shrinking.
  In float32 arithmetic, as PyTorch computes it (float64 positions would
  differ from pytorch-fid's by up to 1e-4 when shrinking)."""
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5),
                   f32(0.0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (src - lo).astype(f32)
  weights = np.zeros((out_size, in_size), f32)
  np.add.at(weights, (np.arange(out_size), lo), f32(1.0) - frac)
  np.add.at(weights, (np.arange(out_size), hi), frac)
  return weights


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """(N, h, w, C) -> (N, size, size, C) as pytorch-fid resizes: PyTorch's
  ``F.interpolate(mode='bilinear', align_corners=False)``, which, unlike
  ``jax.image.resize``, does not antialias when shrinking."""
  _, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  hp = jax.lax.Precision.HIGHEST
  rows, cols = _interpolation_matrix(h, size), _interpolation_matrix(w, size)
  x = jnp.einsum('oh,nhwc->nowc', rows, images, precision=hp)
  return jnp.einsum('pw,nowc->nopc', cols, x, precision=hp)


def check_images(shape) -> None:
  """FID and KID are for images: (N, H, W, 1 or 3)."""
  if len(shape) != 4 or shape[-1] not in (1, 3):
    raise UserError(f'FID and KID need images (N, H, W, 1 or 3 channels); got '
                    f'data of shape {tuple(shape)}.')


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv without bias, BatchNorm(eps=0.001), ReLU."""
  features: int
  kernel_size: Any  # int or (kh, kw)
  strides: int = 1
  padding: Any = 0  # int or (ph, pw), symmetric as PyTorch's
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                ((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TensorFlow's average pool: the zero padding is not counted (the FID patch).
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (FIDInceptionA)."""
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, 1, name='branch1x1')(x)
    b5 = conv(48, 1, name='branch5x5_1')(x)
    b5 = conv(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = conv(64, 1, name='branch3x3dbl_1')(x)
    b3 = conv(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = conv(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, the 35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, 3, strides=2, name='branch3x3')(x)
    bd = conv(64, 1, name='branch3x3dbl_1')(x)
    bd = conv(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = conv(96, 3, strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-e: factorised 7x7 convs (1x7, 7x1) (FIDInceptionC)."""
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(
        kernel_size=(7, 1), padding=(3, 0))
    b1 = conv(192, 1, name='branch1x1')(x)
    b7 = conv(c7, 1, name='branch7x7_1')(x)
    b7 = conv(c7, **row, name='branch7x7_2')(b7)
    b7 = conv(192, **col, name='branch7x7_3')(b7)
    bd = conv(c7, 1, name='branch7x7dbl_1')(x)
    bd = conv(c7, **col, name='branch7x7dbl_2')(bd)
    bd = conv(c7, **row, name='branch7x7dbl_3')(bd)
    bd = conv(c7, **col, name='branch7x7dbl_4')(bd)
    bd = conv(192, **row, name='branch7x7dbl_5')(bd)
    bp = conv(192, 1, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, the 17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, 1, name='branch3x3_1')(x)
    b3 = conv(320, 3, strides=2, name='branch3x3_2')(b3)
    b7 = conv(192, 1, name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, 3, strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (``pool='avg'``, FIDInceptionE_1) and Mixed_7c (``pool='max'``,
  FIDInceptionE_2: the TensorFlow graph max-pools here, unlike the paper)."""
  pool: str = 'avg'
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(
        kernel_size=(3, 1), padding=(1, 0))
    b1 = conv(320, 1, name='branch1x1')(x)
    b3 = conv(384, 1, name='branch3x3_1')(x)
    b3 = jnp.concatenate([conv(384, **row, name='branch3x3_2a')(b3),
                          conv(384, **col, name='branch3x3_2b')(b3)], axis=-1)
    bd = conv(448, 1, name='branch3x3dbl_1')(x)
    bd = conv(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([conv(384, **row, name='branch3x3dbl_3a')(bd),
                          conv(384, **col, name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.pool == 'avg':
      pooled = _avg_pool_3x3(x)
    else:  # padded with -inf, as PyTorch's max_pool2d
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    bp = conv(192, 1, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """Images (N, H, W, 1 or 3) in [-1, 1] -> pool3 features (N, 2048).

  Submodules carry the PyTorch names (``Mixed_6b/branch7x7_2/conv``), so a
  pytorch-fid weight maps to its variable by name. ``resize=False`` skips the
  resize to 299x299: any input of at least 75x75 runs (tests use that).
  ``precision`` of the convs: HIGHEST keeps float32 on GPUs (no TF32) and
  TPUs (no bfloat16), so features do not depend on the accelerator.
  """
  resize: bool = True
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    check_images(x.shape)
    if x.shape[-1] == 1:  # grayscale enters as RGB, as pytorch-fid reads it
      x = jnp.repeat(x, 3, axis=-1)
    if self.resize:
      x = resize_bilinear(x, INPUT_SIZE)
    conv = functools.partial(BasicConv2d, precision=self.precision)
    p = dict(precision=self.precision)
    x = conv(32, 3, strides=2, name='Conv2d_1a_3x3')(x)
    x = conv(32, 3, name='Conv2d_2a_3x3')(x)
    x = conv(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, 1, name='Conv2d_3b_1x1')(x)
    x = conv(192, 3, name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    x = InceptionA(32, **p, name='Mixed_5b')(x)
    x = InceptionA(64, **p, name='Mixed_5c')(x)
    x = InceptionA(64, **p, name='Mixed_5d')(x)
    x = InceptionB(**p, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, **p, name=name)(x)
    x = InceptionD(**p, name='Mixed_7a')(x)
    x = InceptionE('avg', **p, name='Mixed_7b')(x)
    x = InceptionE('max', **p, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))
