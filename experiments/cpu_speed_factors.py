r"""What two CPU optimisations buy, measured in CPU time (robust to other load).

  python experiments/cpu_speed_factors.py --out=experiments/results/cpu_speed_factors.json

* allocator: our training step (``benchmark.OursRunner``, one thread, so CPU
  time is work and not spinning) with and without ``runtime.tune_malloc``
  (``WGAN_JAX_TUNE_MALLOC=0``), and the reference's loop for comparison:
  CPU ms, system ms and minor page faults per generator iteration.
* transposed conv: the generator's last layer (64 -> 3 channels) in its three
  formulations, forward alone (as the critic steps use it) and forward plus
  both gradients (the generator step).
* strided conv: the kernel gradient of each of the 64px critic's 4x4
  stride-2 convs, XLA's against ``layers.conv_stride2_taps``, with the
  forward for scale.
* XLA flags: our training step under each of ``--xla_flag_sets`` (CPU time,
  one thread), against no flags.

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
_FLAG_SETS = flags.DEFINE_list(
    'xla_flag_sets', ['--xla_cpu_use_onednn=true', '--xla_cpu_use_xnnpack=true',
                      '--xla_cpu_experimental_ynn_fusion_type='],
    'XLA flags to try (each alone) on --flags_model.')
_FLAGS_MODEL = flags.DEFINE_string('flags_model', 'dcgan32', 'Model for the XLA flags.')

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

_TIMER = r'''
import json, time, numpy as np, jax, jax.numpy as jnp
from wgan_jax import layers
def cpu_ms(f, n=20):
  f(); f()
  start = time.process_time()
  for _ in range(n):
    f()
  return 1000 * (time.process_time() - start) / n
'''

_CONVT = _TIMER + r'''
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

_CONV = _TIMER + r'''
out = {}
for size, cin, cout in ((64, 3, 64), (32, 64, 128), (16, 128, 256), (8, 256, 512)):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, size, size, cin), np.float32))
  k = jnp.asarray(rng.standard_normal((4, 4, cin, cout), np.float32))
  g = jnp.asarray(rng.standard_normal((64, size // 2, size // 2, cout), np.float32))
  row = {'forward_ms': cpu_ms(lambda: jax.jit(layers.conv_stride2)(x, k).block_until_ready(), n=10)}
  for name in ('conv_stride2', 'conv_stride2_taps'):
    f = getattr(models, name)
    dk = jax.jit(lambda x, g, f=f: jax.vjp(lambda k: f(x, k), k)[1](g)[0])
    row[f'kernel_gradient_ms_{name}'] = cpu_ms(lambda: dk(x, g).block_until_ready(), n=10)
  out[f'{size}px_{cin}-{cout}'] = row
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
  conv = [_python(_CONV) for _ in range(2)]
  results['critic_strided_conv'] = {
      k: {m: min(c[k][m] for c in conv) for m in conv[0][k]} for k in conv[0]}
  for k, r in results['critic_strided_conv'].items():
    print(f'critic conv {k:16s} forward {r["forward_ms"]:6.1f} ms  kernel gradient: XLA '
          f'{r["kernel_gradient_ms_conv_stride2"]:6.1f} ms, taps '
          f'{r["kernel_gradient_ms_conv_stride2_taps"]:6.1f} ms')
  results['xla_flags'] = {}
  for flag in [''] + _FLAG_SETS.value:
    r = _python(_STEP, 'ours', _FLAGS_MODEL.value, str(_ITERS.value),
                XLA_FLAGS=f'--xla_cpu_multi_thread_eigen=false {flag}'.strip())
    results['xla_flags'][flag or 'none'] = r
    print(f'{_FLAGS_MODEL.value} XLA flags {flag or "none":42s} CPU {r["cpu_ms"]:7.0f} ms/it',
          flush=True)
  results['load_average_1_5_15min_end'] = os.getloadavg()
  results['wall_seconds'] = time.time() - started
  if _OUT.value:
    with open(_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
