"""Model FLOPs of a training iteration, counted from the step functions.

The count is the convention of model-FLOP utilisation: 2 per multiply-add of
every matrix product and convolution the steps need (forward passes, and the
gradients autodiff asks for: no input gradient of the critic on data), and
nothing for elementwise work, BatchNorm, the optimiser or clipping. It is
read off the jaxprs of ``steps.critic_step`` and ``steps.generator_step``
with XLA's plain conv formulations: the sub-pixel form does the same
multiply-adds, but a custom VJP's jaxpr holds every cotangent (XLA drops the
unused ones only when compiling). The same numbers describe the reference,
which computes the same products.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from wgan_jax import state as state_lib
from wgan_jax import steps


def _conv_flops(eqn) -> float:
  rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial)
  taps = math.prod(rhs.shape[d] for d in rhs_spec[2:])
  in_features = rhs.shape[rhs_spec[1]]
  # An lhs-dilated conv (a transposed conv, or a strided conv's input
  # gradient) multiplies the inserted zeros too; 1 tap in prod(dilation) is real.
  real = 1 / math.prod(eqn.params['lhs_dilation'])
  return 2.0 * math.prod(out.shape) * in_features * taps * real


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
      lhs.shape[d] for d in lhs_contract)


def _sub_jaxprs(params):
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, jax_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax_core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr) -> float:
  """Matrix-product and convolution FLOPs of a (closed) jaxpr, sub-jaxprs
  included (a scan's body times its length; a cond's costliest branch)."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'cond':
      total += max(jaxpr_flops(b) for b in eqn.params['branches'])
    elif name == 'while':
      raise ValueError('a while loop: its FLOPs depend on its trip count')
    else:
      inner = sum(jaxpr_flops(j) for j in _sub_jaxprs(eqn.params))
      total += inner * eqn.params.get('length', 1) if name == 'scan' else inner
  return total


def iteration_flops(config, data_shape: Sequence[int], batch_size: int | None = None,
                    n_critic: int | None = None) -> dict:
  """FLOPs of one critic step, one generator step and one generator iteration
  (``n_critic`` critic steps and a generator step; default ``config.n_critic``)
  at ``batch_size`` (default ``config.batch_size``) on one device."""
  config = config.copy_and_resolve_references()
  config.unlock()
  config.conv_impl, config.convt_impl = 'xla', 'dilated'
  batch = batch_size or config.batch_size
  n_critic = config.n_critic if n_critic is None else n_critic
  init = jax.eval_shape(functools.partial(state_lib.create_state, config, tuple(data_shape)),
                        jax.random.key(0))
  real = jax.ShapeDtypeStruct((batch, *data_shape), jnp.float32)
  z = jax.ShapeDtypeStruct((batch, config.nz), jnp.float32)
  eps = jax.ShapeDtypeStruct((batch,), jnp.float32)
  critic = functools.partial(steps.critic_step, clip=config.clip, clip_when=config.clip_when,
                             loss=config.loss, gp_weight=config.gp_weight)
  gen = functools.partial(steps.generator_step, loss=config.loss)
  critic_flops = jaxpr_flops(jax.make_jaxpr(critic)(init, real, z, eps))
  gen_flops = jaxpr_flops(jax.make_jaxpr(gen)(init, z))
  return {'critic_step': critic_flops, 'generator_step': gen_flops,
          'generator_iteration': n_critic * critic_flops + gen_flops}


def best_seconds(run, sync, seconds: float = 1.0) -> float:
  """The fastest of repeated ``run()`` calls (``sync`` waits for the result)
  for about ``seconds``, after one to warm up."""
  sync(run())
  best = float('inf')
  deadline = time.perf_counter() + seconds
  while best == float('inf') or time.perf_counter() < deadline:
    start = time.perf_counter()
    sync(run())
    best = min(best, time.perf_counter() - start)
  return best


def dense_gemm_rate(matmul, sync, n: int, seconds: float = 1.0) -> float:
  """FLOP/s of ``matmul()``, an n x n by n x n product (``sync`` waits for its
  result), at its best over about ``seconds``."""
  return 2.0 * n ** 3 / best_seconds(matmul, sync, seconds)


def jax_gemm_rate(n: int = 2048, seconds: float = 1.0) -> float:
  """The float32 matrix-product FLOP/s jax reaches on its default device, at
  its default precision (TF32 on recent NVIDIA GPUs)."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n), np.float32))
  b = jnp.asarray(rng.standard_normal((n, n), np.float32))
  f = jax.jit(jnp.matmul)
  return dense_gemm_rate(lambda: f(a, b), jax.block_until_ready, n, seconds)
