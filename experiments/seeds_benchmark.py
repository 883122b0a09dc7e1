r"""What K seeds at once cost: whole training processes, K=1 against K>1.

  python experiments/seeds_benchmark.py                      # CPU, K=1,5, ~25 min
  python experiments/seeds_benchmark.py --backend=gpu --models=dcgan32 --num_seeds=1,8 \
      --seeds_modes=vmap,unroll --out=experiments/results/seeds_gpu.json
  python experiments/seeds_benchmark.py --merge=A.json,B.json --out=AB.json   # one table

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
K=1) and writes ``--out`` (JSON) with the machine and its load. With it, the
ceiling: each model's FLOPs per generator iteration (matrix products and
convolutions, ``benchmark.flops``), the FLOP/s one seed reaches, and jax's
dense float32 matrix-product rate measured in this process. K seeds can at
best run every FLOP at that rate, so K=1's share of it bounds what any way of
batching seeds can gain: ``ceiling`` = GEMM rate / K=1's FLOP/s.
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

from wgan_jax import files, runtime

# name: (train flags, default (SHORT, LONG) iterations, description)
MODELS = {
    'digits': ([], (10, 60), 'digits preset (DCGAN 16px, ngf=ndf=32)'),
    'digits_mlp': (['--generator=mlp', '--critic=mlp'], (20, 220),
                   'digits, MLP generator and critic'),
    'gaussians8': (['--dataset=gaussians8'], (20, 220), 'gaussians8 preset (MLP 512)'),
    'dcgan32': (['--dataset=stacked_digits', '--image_size=32', '--ngf=64', '--ndf=64'],
                (4, 24), 'DCGAN 32px, ngf=ndf=64, 3 channels, batch 64'),
    'dcgan64': (['--dataset=stacked_digits', '--image_size=64', '--ngf=64', '--ndf=64'],
                (2, 6), 'DCGAN 64px, ngf=ndf=64, 3 channels, batch 64'),
}
COMMON = ['--n_critic=5', '--warmup_gen_iters=0', '--boost_every=0', '--progress_bar=false',
          '--sample_every=1000000', '--checkpoint_every=0']

_MODELS = flags.DEFINE_list('models', ['digits', 'digits_mlp', 'gaussians8', 'dcgan32', 'dcgan64'],
                            f'Models: {", ".join(MODELS)}.')
_NUM_SEEDS = flags.DEFINE_list('num_seeds', ['1', '5'], 'K values; the first is the baseline.')
_MODES = flags.DEFINE_list('seeds_modes', ['auto'],
                           '--seeds_mode values to time for each K > 1 (auto, vmap, map, unroll, hybrid, processes).')
_ITERS = flags.DEFINE_list('iters', None, 'SHORT,LONG generator iterations for every model '
                           "(default: each model's own).")
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Interleaved rounds; medians are reported.')
_BACKEND = flags.DEFINE_string('backend', 'cpu', 'Backend of the training processes: cpu | gpu | tpu.')
_EXTRA = flags.DEFINE_list('train_flags', [], 'More flags for every training process.')
_MERGE = flags.DEFINE_list('merge', [], 'Instead of running: one table of these JSON files '
                            '(written to --out).')
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


def _walltimes(workdir: str) -> list[dict[int, float]]:
  """For each TensorBoard event file under ``workdir`` (each seed's): step ->
  wall time at which the run wrote that step's metrics."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
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
      out.append(times)
  if not out:
    raise RuntimeError(f'no TensorBoard events under {workdir}')
  return out


def _parse_flags(args: list[str]) -> dict:
  out = {}
  for arg in args:
    key, _, value = arg.removeprefix('--').partition('=')
    out[key] = value
  return out


def model_flops(args: list[str]) -> float:
  """FLOPs of one seed's generator iteration for a model's train flags (5
  critic steps, as ``COMMON`` trains)."""
  from wgan_jax import configs, data  # pylint: disable=g-import-not-at-top
  from wgan_jax.benchmark import flops  # pylint: disable=g-import-not-at-top
  given = _parse_flags([*args, *COMMON])
  config = configs.get_config(given.get('dataset'))
  for key, value in given.items():
    if key in config:
      config[key] = type(config[key])(value) if not isinstance(config[key], bool) \
          else value.lower() in ('1', 'true', 'yes')
  shape = data.get_dataset(config).data_shape
  return flops.iteration_flops(config, shape)['generator_iteration']


def run_train(args: list[str], short: int, long: int, backend: str) -> float:
  """Seconds per generator iteration of one training run of ``long``
  iterations, in steady state: from the wall times at which it wrote the
  metrics of iterations ``short`` and ``long`` (it writes every ``short``
  iterations, after waiting for them); with seeds, ``seconds_per_iteration``."""
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, '-m', 'wgan_jax.train', f'--workdir={workdir}',
           f'--num_gen_iters={long}', *COMMON, f'--log_every={short}', *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=platform_env(backend))
    if proc.returncode:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    times = _walltimes(workdir)
  return seconds_per_iteration(times, short, long)


def _done_at(times: dict[int, float], when: float) -> float:
  """Generator iterations a seed had done at wall time ``when`` (linear
  between the iterations it logged)."""
  points = sorted(times.items())
  for (s0, t0), (s1, t1) in zip(points, points[1:]):
    if t0 <= when <= t1:
      return s0 + (s1 - s0) * (when - t0) / max(t1 - t0, 1e-9)
  return points[0][0] if when < points[0][1] else points[-1][0]


def seconds_per_iteration(times: list[dict[int, float]], short: int, long: int) -> float:
  """Seconds per generator iteration, per seed, while every seed trains: over
  the time from the last seed's iteration ``short`` to the first seed's
  ``long``, the iterations all seeds did. (Seeds in one process log at the
  same moments, so this is (t(long) - t(short)) / (long - short); seeds in
  processes of their own start and end apart.)"""
  start, end = max(t[short] for t in times), min(t[long] for t in times)
  if end <= start:
    raise RuntimeError(f'the seeds never trained together between iterations {short} and '
                       f'{long}: pass a larger LONG with --iters')
  done = sum(_done_at(t, end) - _done_at(t, start) for t in times)
  return (end - start) * len(times) / done


def tabulate(info: dict, seconds: dict, variants: list, models: list) -> tuple[list, str]:
  """The rows (JSON) and the markdown table of ``seconds``: (model, K, mode) ->
  [seconds per generator iteration]; ``variants[0]`` is the baseline."""
  rows = []
  base_k = variants[0][0]
  header = f'| model | K={base_k}: gen it/s |'
  if 'jax_gemm_gflops' in info:
    header += (f' K={base_k}: GFLOP/s (share of GEMM {info["jax_gemm_gflops"]:.0f}) |'
               ' ceiling |')
  for k, mode in variants[1:]:
    header += f' K={k} {mode}: gen it/s | K={k} {mode}: seed-it/s vs K={base_k} |'
  lines = [header, '|' + ' --- |' * (header.count('|') - 1)]
  for name in models:
    if (name, base_k, 'auto') not in seconds:
      continue
    base = 1 / statistics.median(seconds[(name, base_k, 'auto')])
    row = {'model': name, 'description': MODELS[name][2], f'K={base_k} gen_it_per_s': base,
           'runs': {f'K={k} {m}': seconds.get((name, k, m)) for k, m in variants}}
    line = f'| {name} | {base:.2f} |'
    if 'jax_gemm_gflops' in info:
      gflops = model_flops(MODELS[name][0]) / 1e9
      row.update(gflop_per_iter=gflops, k1_gflops=gflops * base,
                 ceiling=info['jax_gemm_gflops'] / (gflops * base))
      line += f' {gflops * base:.0f} ({100 * gflops * base / info["jax_gemm_gflops"]:.0f}%) |' \
              f' {row["ceiling"]:.2f}x |'
    for k, mode in variants[1:]:
      if not seconds.get((name, k, mode)):
        line += ' - | - |'
        continue
      its = 1 / statistics.median(seconds[(name, k, mode)])
      ratio = k * its / (base_k * base)
      row[f'K={k} {mode} gen_it_per_s'] = its
      row[f'K={k} {mode} seed_it_ratio'] = ratio
      line += f' {its:.2f} | {ratio:.2f}x |'
    rows.append(row)
    lines.append(line)
  return rows, '\n'.join(lines)


def merge(paths: list[str]) -> None:
  """One table of several runs' JSON files (each model from the file that ran
  it; the machine of the first), written to ``--out``."""
  results = []
  for path in paths:
    with open(path, encoding='utf-8') as f:
      results.append(json.load(f))
  seconds, variants, models, iters = {}, [], [], {}
  for result in results:
    iters.update(result['iters'])
    for row in result['rows']:
      models.append(row['model'])
      for key, values in row['runs'].items():
        k, mode = key.removeprefix('K=').split(' ')
        if (int(k), mode) not in variants:
          variants.append((int(k), mode))
        seconds[(row['model'], int(k), mode)] = values
  first = variants[0]
  variants.sort(key=lambda v: (v != first, v[0]))
  info = results[0]['machine']
  rows, table = tabulate(info, seconds, variants, models)
  print(table)
  result = {**results[0], 'command': ' '.join(sys.argv), 'merged_from': paths,
            'commands': [r['command'] for r in results],
            'machines': [r['machine'] for r in results], 'iters': iters,
            'rows': rows, 'table': table}
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {_OUT.value}')


def main(argv):
  del argv
  if _MERGE.value:
    merge(_MERGE.value)
    return
  ks = [int(k) for k in _NUM_SEEDS.value]
  variants = [(ks[0], 'auto')] + [(k, m) for k in ks[1:] for m in _MODES.value]
  for name in _MODELS.value:
    if name not in MODELS:
      raise app.UsageError(f'--models: unknown {name!r}; choose from {", ".join(MODELS)}')
  info = machine(_BACKEND.value)
  info['load_before'] = _loadavg()
  if _BACKEND.value == 'cpu':
    from wgan_jax.benchmark import flops  # pylint: disable=g-import-not-at-top
    info['jax_gemm_gflops'] = flops.jax_gemm_rate(seconds=3.0) / 1e9
  print(json.dumps(info), flush=True)
  seconds: dict = {}  # (model, k, mode) -> [seconds per generator iteration]
  start = time.time()

  def write(complete: bool) -> str:
    # Rewritten after every process: a run stopped at a lease's limit keeps what it measured.
    info['load_after'] = _loadavg()
    info['minutes'] = round((time.time() - start) / 60, 1)
    rows, table = tabulate(info, seconds, variants, _MODELS.value)
    result = {'machine': info, 'command': ' '.join(sys.argv), 'common_train_flags': COMMON,
              'seconds_are': '(t(LONG) - t(SHORT)) / (LONG - SHORT) per generator iteration, '
                             'from the wall times of one process\'s TensorBoard events',
              'iters': {n: ([int(i) for i in _ITERS.value] if _ITERS.value else MODELS[n][1])
                        for n in _MODELS.value},
              'complete': complete, 'rows': rows, 'table': table}
    files.write_json(_OUT.value, result, indent=1)
    return table

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
        write(complete=False)
  print(write(complete=True))
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
