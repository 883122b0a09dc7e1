"""How the K seeds of a ``--num_seeds`` run share one compiled step.

Every leaf of a run of seeds has a leading seed axis; ``over_seeds`` maps a
function of one seed's arguments over it, as ``--seeds_mode`` says. All modes
give the numbers of K single runs; they differ in speed (docs/multihost.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from wgan_jax import configs

MODES = configs.CHOICES['seeds_mode'][0]


def resolve_mode(mode: str, config=None) -> str:
  """How the K seeds of a ``--num_seeds`` run share one compiled step.

  'vmap' batches them: a seed axis on every array, so XLA sees one K-times
  larger problem (a convolution with per-seed weights becomes a grouped
  one); 'map' runs them one after another in a ``lax.map`` loop inside the
  step; 'unroll' one after another, written out K times; 'hybrid' vmaps all
  but the convolutions with per-seed weights, which are written out K times.
  'auto' (measured with experiments/seeds_benchmark.py, on a 2-core CPU):
  'vmap' on GPUs and TPUs; on CPU 'unroll' when a net of ``config`` is a
  DCGAN (XLA:CPU runs grouped convolutions several times slower than the K
  convolutions one by one), else 'vmap' (MLPs: as fast or faster, and it
  compiles the step once, not K times).
  """
  configs.check_choice('seeds_mode', mode)
  if mode == 'auto':
    if jax.default_backend() != 'cpu':
      return 'vmap'
    mlps = config is not None and config.generator == config.critic == 'mlp'
    return 'vmap' if mlps else 'unroll'
  return mode


def over_seeds(fn: Callable, mode: str) -> Callable:
  """``fn`` of one seed's arguments -> ``fn`` of the K seeds' (a leading
  seed axis on every argument and result), in seeds mode ``mode``."""
  if mode == 'vmap':
    return jax.vmap(fn)
  if mode == 'map':
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)
  if mode == 'hybrid':
    vmapped = jax.vmap(fn)

    def hybrid(*args):
      with _convs_seed_by_seed():
        return vmapped(*args)
    return hybrid

  def unrolled(*args):
    k = jax.tree.leaves(args)[0].shape[0]
    outs = [fn(*jax.tree.map(lambda x, i=i: x[i], args)) for i in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


@contextlib.contextmanager
def _convs_seed_by_seed():
  """While tracing: vmap writes a convolution whose input and kernel both have
  the vmapped axis as one convolution per index of that axis (instead of a
  grouped convolution, which XLA:CPU runs slowly)."""
  from jax._src.interpreters import batching  # pylint: disable=g-import-not-at-top
  prim = jax.lax.conv_general_dilated_p
  batchers = batching.fancy_primitive_batchers
  default = batchers[prim]

  def rule(axis_data, batched_args, batch_dims, **params):
    (lhs, rhs), (lhs_dim, rhs_dim) = batched_args, batch_dims
    if lhs_dim is None or rhs_dim is None:
      return default(axis_data, batched_args, batch_dims, **params)
    outs = [prim.bind(jax.lax.index_in_dim(lhs, i, lhs_dim, keepdims=False),
                      jax.lax.index_in_dim(rhs, i, rhs_dim, keepdims=False), **params)
            for i in range(lhs.shape[lhs_dim])]
    return jnp.stack(outs), 0

  batchers[prim] = rule
  try:
    yield
  finally:
    batchers[prim] = default
