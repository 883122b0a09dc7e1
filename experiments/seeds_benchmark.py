r"""What K seeds at once cost: whole training processes, K=1 against K>1.

  python experiments/seeds_benchmark.py                      # CPU, K=1,5, ~10 min
  python experiments/seeds_benchmark.py --backend=gpu --models=dcgan32 --num_seeds=1,8 \
      --seeds_modes=vmap,unroll --out=experiments/results/seeds_gpu.json

For each model and K, runs ``python -m wgan_jax.train`` for LONG generator
iterations, writing metrics every SHORT (``--iters``; the model's default
otherwise), and takes the steady-state time per generator iteration from the
wall times of its TensorBoard events of iterations SHORT and LONG (written
once those iterations are done; compilation falls before SHORT):
(t(LONG) - t(SHORT)) / (LONG - SHORT). Schedule: 5 critic steps per
generator iteration, no warm-up or boosts, no samples or checkpoints until
the end. Each K > 1 runs in every mode of ``--seeds_modes``. ``--repeats``
rounds go through every variant in turn (interleaved, so that a shared
machine's load falls on all of them alike); the medians are reported.

Prints the table (K=1 gen it/s, K gen it/s, seed-iterations/s of K seeds vs
K=1) and writes ``--out`` (JSON) with the machine and its load.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from wgan_jax import runtime

# name: (train flags, default (SHORT, LONG) iterations, description)
MODELS = {
    'digits': ([], (10, 60), 'digits preset (DCGAN 16px, ngf=ndf=32)'),
    'digits_mlp': (['--generator=mlp', '--critic=mlp'], (20, 220),
                   'digits, MLP generator and critic'),
    'gaussians8': (['--dataset=gaussians8'], (20, 220), 'gaussians8 preset (MLP 512)'),
    'dcgan32': (['--dataset=stacked_digits', '--image_size=32', '--ngf=64', '--ndf=64'],
                (4, 12), 'DCGAN 32px, ngf=ndf=64, 3 channels, batch 64'),
    'dcgan64': (['--dataset=stacked_digits', '--image_size=64', '--ngf=64', '--ndf=64'],
                (3, 9), 'DCGAN 64px, ngf=ndf=64, 3 channels, batch 64'),
}
COMMON = ['--n_critic=5', '--warmup_gen_iters=0', '--boost_every=0', '--progress_bar=false',
          '--sample_every=1000000', '--checkpoint_every=0']

_MODELS = flags.DEFINE_list('models', ['digits', 'digits_mlp', 'gaussians8', 'dcgan32'],
                            f'Models: {", ".join(MODELS)}.')
_NUM_SEEDS = flags.DEFINE_list('num_seeds', ['1', '5'], 'K values; the first is the baseline.')
_MODES = flags.DEFINE_list('seeds_modes', ['auto'],
                           '--seeds_mode values to time for each K > 1 (auto, vmap, map, unroll).')
_ITERS = flags.DEFINE_list('iters', None, 'SHORT,LONG generator iterations for every model '
                           "(default: each model's own).")
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Interleaved rounds; medians are reported.')
_BACKEND = flags.DEFINE_string('backend', 'cpu', 'Backend of the training processes: cpu | gpu | tpu.')
_EXTRA = flags.DEFINE_list('train_flags', [], 'More flags for every training process.')
_OUT = flags.DEFINE_string('out', 'experiments/results/seeds_cpu.json', 'Where the JSON goes.')



def _loadavg() -> str:
  try:
    with open('/proc/loadavg') as f:
      return ' '.join(f.read().split()[:3])
  except OSError:
    return ''


def platform_env(backend: str) -> dict:
  """The environment of a process on ``backend``: JAX_PLATFORMS, except for
  'gpu', which names no plugin (jax would also try ROCm on a CUDA machine and
  fail): left unset, jax takes the GPU."""
  env = dict(os.environ)
  if backend == 'gpu':
    env.pop('JAX_PLATFORMS', None)
  else:
    env['JAX_PLATFORMS'] = backend
  return env


def machine(backend: str) -> dict:
  info = {**runtime.machine(), 'backend': backend}
  probe = subprocess.run(
      [sys.executable, '-c', 'import jax; d = jax.devices()[0]; '
       'print(jax.__version__, "|", d.platform, "|", d.device_kind, "|", jax.device_count())'],
      capture_output=True, text=True, env=platform_env(backend),
      check=False)
  if probe.returncode == 0:
    version, plat, kind, count = (s.strip() for s in probe.stdout.strip().split('|'))
    info.update(jax=version, device_platform=plat, device=kind, device_count=int(count))
  else:
    info['device_error'] = probe.stderr.strip().splitlines()[-1:]
  return info


def _walltimes(workdir: str) -> dict[int, float]:
  """step -> wall time at which the run wrote that step's metrics (the first
  TensorBoard event file under ``workdir``: the first seed's)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  for root, _, files in sorted(os.walk(workdir)):
    for name in sorted(files):
      if 'tfevents' not in name:
        continue
      times = {}
      with open(os.path.join(root, name), 'rb') as f:
        data = f.read()
      pos = 0
      while pos + 12 <= len(data):  # TFRecords: length, crc, data, crc
        (length,) = struct.unpack('<Q', data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        if event.summary.value:
          times.setdefault(event.step, event.wall_time)
      return times
  raise RuntimeError(f'no TensorBoard events under {workdir}')


def run_train(args: list[str], short: int, long: int, backend: str) -> float:
  """Seconds per generator iteration of one training process of ``long``
  iterations, in steady state: from the wall times at which it wrote the
  metrics of iterations ``short`` and ``long`` (it writes every ``short``
  iterations, after waiting for them)."""
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, '-m', 'wgan_jax.train', f'--workdir={workdir}',
           f'--num_gen_iters={long}', *COMMON, f'--log_every={short}', *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=platform_env(backend))
    if proc.returncode:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    times = _walltimes(workdir)
  return (times[long] - times[short]) / (long - short)


def main(argv):
  del argv
  ks = [int(k) for k in _NUM_SEEDS.value]
  variants = [(ks[0], 'auto')] + [(k, m) for k in ks[1:] for m in _MODES.value]
  for name in _MODELS.value:
    if name not in MODELS:
      raise app.UsageError(f'--models: unknown {name!r}; choose from {", ".join(MODELS)}')
  info = machine(_BACKEND.value)
  info['load_before'] = _loadavg()
  print(json.dumps(info), flush=True)
  seconds: dict = {}  # (model, k, mode) -> [seconds per generator iteration]
  start = time.time()
  for r in range(_REPEATS.value):
    for name in _MODELS.value:
      args, iters, _ = MODELS[name]
      short, long = [int(i) for i in _ITERS.value] if _ITERS.value else iters
      for k, mode in variants:
        flags_ = [*args, f'--num_seeds={k}', f'--seeds_mode={mode}', *_EXTRA.value]
        if long % short:
          raise app.UsageError(f'--iters={short},{long}: LONG must be a multiple of SHORT')
        try:
          per_iter = run_train(flags_, short, long, _BACKEND.value)
        except (RuntimeError, KeyError) as e:  # report the others
          print(f'round {r}: {name} K={k} {mode}: FAILED {e!r}'[-3000:], flush=True)
          continue
        seconds.setdefault((name, k, mode), []).append(per_iter)
        print(f'round {r}: {name} K={k} {mode}: {1 / per_iter:.2f} gen it/s '
              f'(load {_loadavg()})', flush=True)
  info['load_after'] = _loadavg()
  info['minutes'] = round((time.time() - start) / 60, 1)

  rows = []
  base_k = ks[0]
  header = f'| model | K={base_k}: gen it/s |'
  for k, mode in variants[1:]:
    header += f' K={k} {mode}: gen it/s | K={k} {mode}: seed-it/s vs K={base_k} |'
  lines = [header, '|' + ' --- |' * (header.count('|') - 1)]
  for name in _MODELS.value:
    if (name, base_k, 'auto') not in seconds:
      continue
    base = 1 / statistics.median(seconds[(name, base_k, 'auto')])
    row = {'model': name, 'description': MODELS[name][2], f'K={base_k} gen_it_per_s': base,
           'runs': {f'K={k} {m}': seconds.get((name, k, m)) for k, m in variants}}
    line = f'| {name} | {base:.2f} |'
    for k, mode in variants[1:]:
      if (name, k, mode) not in seconds:
        line += ' failed | |'
        continue
      its = 1 / statistics.median(seconds[(name, k, mode)])
      ratio = k * its / (base_k * base)
      row[f'K={k} {mode} gen_it_per_s'] = its
      row[f'K={k} {mode} seed_it_ratio'] = ratio
      line += f' {its:.2f} | {ratio:.2f}x |'
    rows.append(row)
    lines.append(line)
  table = '\n'.join(lines)
  print(table)
  result = {'machine': info, 'command': ' '.join(sys.argv), 'common_train_flags': COMMON,
            'seconds_are': '(t(LONG) - t(SHORT)) / (LONG - SHORT) per generator iteration, '
                           'from the wall times of one process\'s TensorBoard events',
            'iters': {n: ([int(i) for i in _ITERS.value] if _ITERS.value else MODELS[n][1])
                      for n in _MODELS.value},
            'rows': rows, 'table': table}
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
