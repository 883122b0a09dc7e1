r"""What two CPU optimisations buy, measured in CPU time (robust to other load).

  python experiments/cpu_speed_factors.py --out=experiments/results/cpu_speed_factors.json

* allocator: our training step (``benchmark.OursRunner``, one thread, so CPU
  time is work and not spinning) with and without ``runtime.tune_malloc``
  (``WGAN_JAX_TUNE_MALLOC=0``), and the reference's loop for comparison:
  CPU ms, system ms and minor page faults per generator iteration.
* transposed conv: the generator's last layer (64 -> 3 channels) in its three
  formulations, forward alone (as the critic steps use it) and forward plus
  both gradients (the generator step).

Each setting runs in its own process, twice, alternating; the table gives
the smaller of the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

_MODELS = flags.DEFINE_list('models', ['mlp', 'dcgan32', 'dcgan64'], 'Models (wgan_jax.benchmark).')
_ITERS = flags.DEFINE_integer('iters', 3, 'Timed generator iterations per process.')
_OUT = flags.DEFINE_string('out', '', 'Write the results here (JSON).')

_STEP = r'''
import json, resource, sys, time
side, model, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
from wgan_jax import benchmark, runtime
runtime.tune_malloc()  # a no-op with WGAN_JAX_TUNE_MALLOC=0
spec = benchmark.MODELS[model]
data = benchmark.bench_data(spec, 1024)
if side == 'torch':
  runner = benchmark.TorchRunner(spec, data, 'cpu', 1)
else:
  runner = benchmark.OursRunner(spec, {}, data)
runner.warm_up(); runner.run(1)
before = resource.getrusage(resource.RUSAGE_SELF)
runner.run(iters)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    'cpu_ms': 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / iters,
    'sys_ms': 1000 * (after.ru_stime - before.ru_stime) / iters,
    'minor_faults': (after.ru_minflt - before.ru_minflt) / iters}))
'''

_CONVT = r'''
import json, time, numpy as np, jax, jax.numpy as jnp
from wgan_jax import models
def cpu_ms(f, n=20):
  f(); f()
  start = time.process_time()
  for _ in range(n):
    f()
  return 1000 * (time.process_time() - start) / n
out = {}
for size in (16, 32):  # the last layer of the 32px and 64px generators
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, size, size, 64), np.float32))
  k = jnp.asarray(rng.standard_normal((4, 4, 64, 3), np.float32))
  for name in ('subpixel', 'dilated', 'mixed'):
    f = getattr(models, f'conv_transpose_{name}')
    fwd = jax.jit(f)
    both = jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
    out[f'{size}px_{name}'] = {
        'forward_ms': cpu_ms(lambda: fwd(x, k).block_until_ready()),
        'forward_and_gradients_ms': cpu_ms(lambda: jax.block_until_ready(both(x, k))),
    }
print(json.dumps(out))
'''


def _python(code: str, *args: str, **env) -> dict:
  env = {**os.environ, 'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false', **env}
  out = subprocess.run([sys.executable, '-c', code, *args], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv):
  del argv
  results = {'load_average_1_5_15min_start': os.getloadavg(), 'allocator': {},
             'threads': 1}
  started = time.time()
  for model in _MODELS.value:
    runs = {'ours_tuned': [], 'ours_untuned': [], 'torch': []}
    for _ in range(2):
      runs['ours_tuned'].append(_python(_STEP, 'ours', model, str(_ITERS.value)))
      runs['ours_untuned'].append(_python(_STEP, 'ours', model, str(_ITERS.value),
                                          WGAN_JAX_TUNE_MALLOC='0'))
      runs['torch'].append(_python(_STEP, 'torch', model, str(_ITERS.value),
                                   OMP_NUM_THREADS='1'))
    results['allocator'][model] = {k: min(v, key=lambda r: r['cpu_ms'])
                                   for k, v in runs.items()}
    for k, r in results['allocator'][model].items():
      print(f'{model:8s} {k:13s} CPU {r["cpu_ms"]:7.0f} ms/it  system {r["sys_ms"]:5.0f} ms/it  '
            f'minor faults {r["minor_faults"]:8.0f}/it', flush=True)
  convt = [_python(_CONVT) for _ in range(2)]
  results['last_transposed_conv'] = {
      k: {m: min(c[k][m] for c in convt) for m in convt[0][k]} for k in convt[0]}
  for k, r in results['last_transposed_conv'].items():
    print(f'last convt {k:14s} forward {r["forward_ms"]:6.1f} ms  forward + gradients '
          f'{r["forward_and_gradients_ms"]:6.1f} ms')
  results['load_average_1_5_15min_end'] = os.getloadavg()
  results['wall_seconds'] = time.time() - started
  if _OUT.value:
    with open(_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
