"""The layers the networks are built of: the reference's initialisers,
PyTorch's BatchNorm, and the formulations of the 4x4 stride-2 convolution
and transposed convolution (``conv_impl``, ``convt_impl``: the same numbers,
different speed per backend)."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from wgan_jax import tuning
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
      y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon) * scale + bias
      return y.astype(dtype)
    count = math.prod(x.shape[:-1])
    if self.axis_name is not None:
      count *= jax.lax.psum(1, self.axis_name)
    y, mean, var = batch_normalize(x, scale, bias, self.epsilon, self.axis_name)
    if not self.is_initializing():
      m = self.momentum
      unbiased = var * (count / max(count - 1, 1))
      ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
      ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    return y.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_normalize(x, scale, bias, epsilon: float, axis_name: str | None = None):
  """Training-mode BatchNorm over every axis but the last: (y, the batch mean,
  its biased variance), over the global batch with ``axis_name``. Two passes
  for the statistics, not E[x^2] - E[x]^2: the same numbers as PyTorch. Its
  gradient is written out (the closed form: two reductions and one
  elementwise pass), which XLA runs 1.7x as fast on CPU as the autodiff of
  the forward; it is itself differentiable (a gradient penalty through a
  BatchNorm critic)."""
  return _bn_fwd(x, scale, bias, epsilon, axis_name)[0]


def _bn_fwd(x, scale, bias, epsilon, axis_name):
  x2 = x.reshape(-1, x.shape[-1])
  mean = _pmean(jnp.mean(x2, 0), axis_name)
  var = _pmean(jnp.mean(jnp.square(x2 - mean), 0), axis_name)
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x2 - mean) * (inv * scale) + bias).reshape(x.shape)
  return (y, mean, var), (x2, mean, inv, scale)


def _bn_bwd(epsilon, axis_name, residuals, cotangents):
  del epsilon
  x2, mean, inv, scale = residuals
  g, g_mean, g_var = cotangents
  g2 = g.reshape(x2.shape)
  centred = x2 - mean
  d_bias = jnp.sum(g2, 0)
  d_scale = jnp.sum(g2 * centred, 0) * inv
  # Across devices the statistics are shared, so their terms sum over the
  # devices' cotangents (as autodiff transposes pmean); the parameters'
  # gradients stay this device's own.
  n, sums = x2.shape[0], (d_bias, d_scale, g_mean, g_var)
  if axis_name is not None:
    n, sums = n * jax.lax.psum(1, axis_name), jax.lax.psum(sums, axis_name)
  all_bias, all_scale, g_mean, g_var = sums
  # dy/dx through the statistics, plus the statistics' own cotangents (zero
  # in training, where only the running averages read them).
  dx = (scale * inv) * (g2 - (all_bias + centred * (inv * all_scale)) / n)
  dx = dx + (g_mean + 2.0 * g_var * centred) / n
  return dx.reshape(g.shape), d_scale, d_bias


def _pmean(x, axis_name):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


batch_normalize.defvjp(_bn_fwd, _bn_bwd)


_DN = ('NHWC', 'HWIO', 'NHWC')
# Sub-pixel form of ConvTranspose2d(k=4, s=2, p=1): output row 2m + a takes
# input rows m - 1, m (a = 0: taps 3, 1) or m, m + 1 (a = 1: taps 2, 0).
_PHASES = {0: ((1, 0), (3, 1)), 1: ((0, 1), (2, 0))}


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


# The same taps seen from the input: output row 2m + a sums, over (d, tap),
# the product of input row m + d with kernel row tap.
_OVERLAPS = {0: ((-1, 3), (0, 1)), 1: ((0, 2), (1, 0))}


@jax.custom_vjp
def conv_transpose_gemm(x, kernel):
  """The same ConvTranspose2d(k=4, s=2, p=1) as one matrix product of every
  input pixel with the whole kernel, (B*H*W, in) by (in, 16*out), whose 16
  taps are then added into the output where they overlap (col2im). No
  products are wasted, and both gradients are one large matrix product each."""
  return _gemm_fwd(x, kernel)[0]


def _gemm_fwd(x, kernel):
  n, h, w, cin = x.shape
  c = kernel.shape[-1]
  k2 = kernel.transpose(2, 0, 1, 3).reshape(cin, 16 * c)
  cols = (x.reshape(n * h * w, cin) @ k2).reshape(n, h, w, 4, 4, c)
  rows = []
  for a in (0, 1):
    phases = []
    for b in (0, 1):
      phases.append(sum(_shifted(cols[:, :, :, ty, tx], dy, dx)
                        for dy, ty in _OVERLAPS[a] for dx, tx in _OVERLAPS[b]))
    rows.append(jnp.stack(phases, axis=3))  # (B, H, W, b, C)
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, c), (x, k2)


def _shifted(t, dy: int, dx: int):
  """t[:, m + dy, l + dx], zero where that is outside t."""
  h, w = t.shape[1:3]
  t = t[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
  return jnp.pad(t, ((0, 0), (max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0)), (0, 0)))


def _gemm_bwd(residuals, g):
  x, k2 = residuals
  n, h, w, cin = x.shape
  c = g.shape[-1]
  gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # Each input pixel's 16 taps read the output pixels it was added into.
  dcols = jnp.stack([jnp.stack([gp[:, ty:ty + 2 * h:2, tx:tx + 2 * w:2] for tx in range(4)], 3)
                     for ty in range(4)], 3).reshape(n * h * w, 16 * c)
  dx = (dcols @ k2.T).reshape(x.shape)
  dk = (x.reshape(n * h * w, cin).T @ dcols).reshape(cin, 4, 4, c).transpose(1, 2, 0, 3)
  return dx, dk


conv_transpose_gemm.defvjp(_gemm_fwd, _gemm_bwd)


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
CONVT_FORMS = {'subpixel': conv_transpose_subpixel, 'dilated': conv_transpose_dilated,
               'mixed': conv_transpose_mixed, 'gemm': conv_transpose_gemm}
CONVT_IMPLS = ('auto', *CONVT_FORMS)


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


def space_to_depth(x, kernel):
  """A 4x4 stride-2 conv (padding 1) as a 2x2 stride-1 VALID one: the padded
  input in 2x2 blocks (4x the channels) and the kernel to match."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  hb, wb = (h + 2) // 2, (w + 2) // 2
  blocks = xp.reshape(b, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hb, wb, 4 * c)
  k = kernel.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)
  return blocks, k


def _tile_rows(s, n: int):
  """Winograd F(2, 2)'s input transform along axis 1: for each 2-row output
  tile, its 3-row input window d0, d1, d2 as (d0 - d1, d1, d2 - d1)."""
  r0, r1, r2 = s[:, 0:n:2], s[:, 1:n + 1:2], s[:, 2:n + 2:2]
  return (r0 - r1, r1, r2 - r1)


def conv_stride2_winograd(x, kernel):
  """``conv_stride2`` as a 2x2 stride-1 conv over 2x2 blocks of the padded
  input (4x the channels), computed as Winograd F(2x2, 2x2): 9 matrix
  products over the channels per 2x2 output tile instead of 16 (0.56x the
  multiply-adds; transforms of +-1 only). Output sizes must be even."""
  blocks, k = space_to_depth(x, kernel)
  b, ho, wo = blocks.shape[0], blocks.shape[1] - 1, blocks.shape[2] - 1
  u = jnp.stack([t for r in _tile_rows(blocks, ho)
                 for t in _tile_rows(r.swapaxes(1, 2), wo)])  # (9, B, wo/2, ho/2, 4c)
  g = jnp.stack([t for a in (k[0], k[0] + k[1], k[1]) for t in (a[0], a[0] + a[1], a[1])])
  m = jnp.einsum('tbwhc,tco->tbwho', u, g).reshape(3, 3, b, wo // 2, ho // 2, -1)
  rows = jnp.stack([m[0] + m[1], m[1] + m[2]])  # the output transform, rows
  y = jnp.stack([rows[:, 0] + rows[:, 1], rows[:, 1] + rows[:, 2]], axis=1)  # and columns
  return y.transpose(2, 4, 0, 3, 1, 5).reshape(b, ho, wo, -1)


def winograd_fits(x_shape) -> bool:
  """Whether ``conv_stride2_winograd`` takes inputs of this (B, H, W, C) shape."""
  return x_shape[1] % 4 == 0 and x_shape[2] % 4 == 0


CONV_FORMS = {'xla': conv_stride2, 'taps': conv_stride2_taps, 'winograd': conv_stride2_winograd}
CONV_IMPLS = ('auto', *CONV_FORMS)


def _kernel4x4(module: nn.Module, x, features: int):
  """A (4, 4, in, out) kernel parameter, initialised as the reference's, and
  ``x``, both in ``module.dtype``."""
  kernel = module.param('kernel', conv_init, (4, 4, x.shape[-1], features))
  return kernel.astype(module.dtype), x.astype(module.dtype)


class Conv4x4Stride2(nn.Module):
  """PyTorch's Conv2d(k=4, s=2, p=1, bias=False); parameters as ``nn.Conv``'s.

  ``impl``: 'xla' (XLA's conv and its gradients), 'taps'
  (``conv_stride2_taps``: a faster kernel gradient on the CPU), 'winograd'
  (``conv_stride2_winograd``), all the same numbers up to float rounding;
  'auto': on the CPU the fastest for this layer's shapes (``tuning``; taps
  when tuning is off), xla elsewhere.
  """
  features: int
  impl: str = 'auto'
  dtype: Any = jnp.float32
  tune: bool = True  # False: the static rule for 'auto'

  @nn.compact
  def __call__(self, x):
    kernel, x = _kernel4x4(self, x, self.features)
    impl = self.impl
    if impl == 'auto':
      impl = 'xla'
      if jax.default_backend() == 'cpu':
        candidates = ('taps', 'xla') + (('winograd',) if winograd_fits(x.shape) else ())
        impl = tuning.choose('conv', x.shape, kernel.shape, x.dtype, candidates, 'taps',
                             self.tune)
    if impl == 'winograd' and not winograd_fits(x.shape):
      raise UserError(f'--conv_impl=winograd takes images whose side is a multiple of 8; '
                      f'a critic layer here gets {x.shape[1]}x{x.shape[2]}.')
    if impl not in CONV_FORMS:
      raise UserError(f'--conv_impl={self.impl!r}: choose one of {", ".join(CONV_IMPLS)}.')
    return CONV_FORMS[impl](x, kernel)


class ConvTranspose(nn.Module):
  """PyTorch's ConvTranspose2d with a 4x4 kernel and no bias.

  ``stride=1`` is the generator's first layer (1x1 -> 4x4, padding 0),
  computed as a matrix product; ``stride=2`` doubles the size (padding 1).
  The kernel is (4, 4, in, out) in PyTorch's tap order, so a PyTorch weight
  maps to it by a transpose alone. ``impl`` picks the formulation of the
  stride-2 layer (``CONVT_FORMS``); ``auto``: on the CPU the fastest of
  sub-pixel, mixed and gemm for this layer's shapes (``tuning``), elsewhere (and
  with tuning off) the sub-pixel one except for outputs of a few channels,
  where the dilated conv's forward is faster (``conv_transpose_mixed``: it,
  with the sub-pixel gradients).
  """
  features: int
  stride: int
  impl: str = 'auto'
  dtype: Any = jnp.float32
  tune: bool = True  # False: the static rule for 'auto'

  @nn.compact
  def __call__(self, x):
    kernel, x = _kernel4x4(self, x, self.features)
    if self.stride == 1:
      if x.shape[1:3] != (1, 1):
        raise ValueError(f'the first ConvTranspose takes 1x1 inputs, got {x.shape}')
      return jnp.einsum('bi,hwio->bhwo', x[:, 0, 0], kernel)
    impl = self.impl
    if impl == 'auto':
      impl = 'mixed' if self.features <= 4 else 'subpixel'
      if jax.default_backend() == 'cpu':
        impl = tuning.choose('convt', x.shape, kernel.shape, x.dtype,
                             ('subpixel', 'mixed', 'gemm'), impl, self.tune)
    if impl not in CONVT_FORMS:
      raise UserError(f'--convt_impl={self.impl!r}: choose one of {", ".join(CONVT_IMPLS)}.')
    return CONVT_FORMS[impl](x, kernel)
