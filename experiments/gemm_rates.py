r"""Float32 matrix-product rates at the shapes the models use: jax, PyTorch, NumPy.

  python experiments/gemm_rates.py [--shapes=256x512x512,2048x2048x2048] [--out=FILE.json]

Each shape MxKxN is an (M, K) by (K, N) product; the rate is the best of
repeats for about a second (``benchmark.flops.best_seconds``). For jax also
the weight gradient of a dense layer with that forward, (M, K)^T by (M, N),
which contracts over the batch, and both batched over ``--seeds`` (a leading
axis, as ``--num_seeds`` vmaps them).
The gaussians8 preset's critic and generator run 256x512x512 products; the
benchmark's "share of GEMM" divides by the 2048 one. Says whether a model
that runs below the 2048 rate could run faster at all at its own shapes.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from wgan_jax import runtime
from wgan_jax.benchmark import flops

_SHAPES = flags.DEFINE_list('shapes', ['256x512x512', '512x512x512', '1280x512x512',
                                       '2048x2048x2048'], 'MxKxN products to time.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Products batched at once in the seeds columns.')
_OUT = flags.DEFINE_string('out', None, 'Also write the rates here (JSON).')


def best_rate(matmul, m: int, k: int, n: int) -> float:
  return 2.0 * m * k * n / flops.best_seconds(matmul, lambda result: result)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rows = []
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch = None
  k_seeds = _SEEDS.value
  print(f'| shape | jax GFLOP/s | jax, weight gradient | jax, {k_seeds} seeds | jax, {k_seeds} seeds, weight '
        'gradient | torch GFLOP/s | numpy GFLOP/s |\n' + '|' + ' --- |' * 7)
  for shape in _SHAPES.value:
    m, k, n = (int(v) for v in shape.split('x'))
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    f = jax.jit(jnp.matmul)
    jg = jnp.asarray(rng.standard_normal((m, n), np.float32))
    wgrad = jax.jit(lambda x, g: x.T @ g)
    sa, sb, sg = (jnp.stack([v] * k_seeds) for v in (ja, jb, jg))
    seeds_fwd = jax.jit(lambda x, w: jnp.einsum('smk,skn->smn', x, w))
    seeds_wgrad = jax.jit(lambda x, g: jnp.einsum('smk,smn->skn', x, g))
    row = {'shape': shape,
           'jax': best_rate(lambda: f(ja, jb).block_until_ready(), m, k, n) / 1e9,
           'jax_weight_grad': best_rate(lambda: wgrad(ja, jg).block_until_ready(), m, k, n) / 1e9,
           'jax_seeds': k_seeds * best_rate(
               lambda: seeds_fwd(sa, sb).block_until_ready(), m, k, n) / 1e9,
           'jax_seeds_weight_grad': k_seeds * best_rate(
               lambda: seeds_wgrad(sa, sg).block_until_ready(), m, k, n) / 1e9,
           'seeds': k_seeds,
           'numpy': best_rate(lambda: a @ b, m, k, n) / 1e9}
    if torch is not None:
      ta, tb = torch.from_numpy(a), torch.from_numpy(b)
      row['torch'] = best_rate(lambda: ta @ tb, m, k, n) / 1e9
    rows.append(row)
    print(f'| {shape} | {row["jax"]:.0f} | {row["jax_weight_grad"]:.0f} | {row["jax_seeds"]:.0f} | '
          f'{row["jax_seeds_weight_grad"]:.0f} | {row.get("torch", float("nan")):.0f} | '
          f'{row["numpy"]:.0f} |', flush=True)
  info = runtime.machine()
  if torch is not None:
    info['torch_threads'] = torch.get_num_threads()
  print(runtime.machine_text(info))
  if _OUT.value:
    with open(_OUT.value, 'w', encoding='utf-8') as f:
      json.dump({'machine': info, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
