"""How the K seeds of a ``--num_seeds`` run share one compiled step.

Every leaf of a run of seeds has a leading seed axis; ``over_seeds`` maps a
function of one seed's arguments over it, as ``--seeds_mode`` says. All modes
give the numbers of K single runs; they differ in speed (docs/multihost.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

from wgan_jax import configs

MODES = configs.CHOICES['seeds_mode'][0]
# MLPs at least this wide keep a core busy on their own (the gaussians8
# preset's 512); narrower ones leave it idle between small products.
WIDE_MLP = 256


def resolve_mode(mode: str, config=None, one_process: bool = False) -> str:
  """How the K seeds of a ``--num_seeds`` run share one compiled step.

  'vmap' batches them: a seed axis on every array, so XLA sees one K-times
  larger problem (a convolution with per-seed weights becomes a grouped
  one); 'map' runs them one after another in a ``lax.map`` loop inside the
  step; 'unroll' one after another, written out K times; 'hybrid' vmaps all
  but the convolutions with per-seed weights, which are written out K times;
  'processes' is no way of sharing a step: each seed trains in a process of
  its own, on cores of its own where there are enough
  (``wgan_jax.seed_processes``; ``over_seeds`` does not take it).

  'auto' (measured with experiments/seeds_benchmark.py, on a 2-core CPU):
  'vmap' on GPUs and TPUs; on a CPU with more than one core, 'processes'
  (the digits preset 1.41x the seed-iterations per second of one seed,
  DCGAN 32px 1.10x, gaussians8 1.20x, against 1.09x, 0.90x and 1.02x in one
  program), except for MLPs narrower than ``WIDE_MLP``, which 'vmap' fills
  the cores with (a 32-wide MLP: 2.3x); in one process (one core, or a
  multi-process run) 'unroll' for DCGAN nets (XLA:CPU runs grouped
  convolutions several times slower than the K convolutions one by one),
  else 'vmap'. ``one_process``: the mode for seeds that share one process's
  step ('processes' becomes what 'auto' takes in one process).
  """
  configs.check_choice('seeds_mode', mode)
  if one_process and mode == 'processes':
    mode = 'auto'
  if mode == 'auto':
    if jax.default_backend() != 'cpu':
      return 'vmap'
    mlps = config is not None and config.generator == config.critic == 'mlp'
    narrow = mlps and max(config.ngf, config.ndf) < WIDE_MLP
    if (not one_process and len(os.sched_getaffinity(0)) > 1
        and jax.process_count() == 1 and not narrow):
      return 'processes'
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
