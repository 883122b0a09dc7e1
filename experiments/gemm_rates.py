r"""Float32 matrix-product rates at the shapes the models use: jax, PyTorch, NumPy.

  python experiments/gemm_rates.py [--shapes=256x512x512,2048x2048x2048] [--out=FILE.json]

Each shape MxKxN is an (M, K) by (K, N) product; the rate is the best of
repeats for about a second (``benchmark.flops.best_seconds``).
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
  print('| shape | jax GFLOP/s | torch GFLOP/s | numpy GFLOP/s |\n| --- | --- | --- | --- |')
  for shape in _SHAPES.value:
    m, k, n = (int(v) for v in shape.split('x'))
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    f = jax.jit(jnp.matmul)
    row = {'shape': shape,
           'jax': best_rate(lambda: f(ja, jb).block_until_ready(), m, k, n) / 1e9,
           'numpy': best_rate(lambda: a @ b, m, k, n) / 1e9}
    if torch is not None:
      ta, tb = torch.from_numpy(a), torch.from_numpy(b)
      row['torch'] = best_rate(lambda: ta @ tb, m, k, n) / 1e9
    rows.append(row)
    print(f'| {shape} | {row["jax"]:.0f} | {row.get("torch", float("nan")):.0f} | '
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
