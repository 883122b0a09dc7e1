r"""Where K seeds written out in one program gain or lose, piece by piece.

  python experiments/seeds_pieces.py --model=dcgan32 --num_seeds=5
  XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false python experiments/seeds_pieces.py

For one model of ``wgan_jax.benchmark.MODELS`` (batch 64) times the pieces of
``experiments/step_pieces.py`` (the generator's forward, the critic's forward
and weight gradient on a real and a fake batch, the generator's forward and
weight gradient through the critic) once as one jitted call of one seed and
once as K seeds written out one after another in one jitted program (as
``--seeds_mode=unroll`` trains them), each seed with its own parameters.
Prints the milliseconds per seed of each and the gain (one seed's time over
the per-seed time of K); above 1 the K seeds overlap on the cores. Medians
of ``--calls`` calls; XLA_FLAGS and WGAN_JAX_CONV_TUNING from the environment
apply. Writes ``--out`` (JSON) with the machine.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app, flags

_MODEL = flags.DEFINE_string('model', 'dcgan32', 'A model of wgan_jax.benchmark.')
_K = flags.DEFINE_integer('num_seeds', 5, 'Seeds written out in one program.')
_CALLS = flags.DEFINE_integer('calls', 6, 'Timed calls of each piece.')
_OUT = flags.DEFINE_string('out', '', 'Where the JSON goes (empty: nowhere).')


def _median_ms(fn, args, calls: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def main(argv):
  del argv
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from wgan_jax import runtime  # pylint: disable=g-import-not-at-top
  from wgan_jax.benchmark import pieces  # pylint: disable=g-import-not-at-top
  runtime.configure()
  k = _K.value
  results = {}
  for name, (fn, args) in pieces.step_pieces(_MODEL.value).items():
    def written_out(params, *rest, fn=fn):
      # Each seed its own parameters, so that XLA cannot share work between them.
      return [fn(jax.tree.map(lambda a, s=s: a * (1 + 0.01 * s), params), *rest)
              for s in range(k)]
    one = _median_ms(jax.jit(fn), args, _CALLS.value)
    per_seed = _median_ms(jax.jit(written_out), args, _CALLS.value) / k
    results[name] = {'one_seed_ms': one, f'per_seed_ms_of_{k}': per_seed, 'gain': one / per_seed}
    print(f'{name}: one seed {one:.1f} ms, {k} written out {per_seed:.1f} ms per seed, '
          f'gain {one / per_seed:.2f}x', flush=True)
  if _OUT.value:
    info = {**runtime.machine(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'conv_tuning': os.environ.get('WGAN_JAX_CONV_TUNING', '1')}
    with open(_OUT.value, 'w') as f:
      json.dump({'machine': info, 'model': _MODEL.value, 'num_seeds': k, 'pieces': results},
                f, indent=1)


if __name__ == '__main__':
  app.run(main)
