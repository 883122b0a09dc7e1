r"""Our training against the reference's, side by side: ``python -m wgan_jax.benchmark``.

  python -m wgan_jax.benchmark                      # mlp, dcgan32, dcgan64 on this machine
  python -m wgan_jax.benchmark --models=dcgan32 --repeats=7 --out=bench.json
  python -m wgan_jax.benchmark --backend=gpu --torch_device=cuda
  python -m wgan_jax.benchmark --variant='unroll: iteration_mode=unroll' \
      --variant='onednn: xla_flags=--xla_cpu_use_onednn=true'

Both sides train the same models (``MODELS``) on the same data with the same
settings: batch 64, nz 100, RMSProp (lr 5e-5), the critic clamped to
[-0.01, 0.01] before each of its steps (the reference's order), and the
steady-state schedule, 5 critic steps per generator iteration (the 100-step
warm-up iterations of the schedule are left out). ``ours`` is
``parallel.TrainIteration`` on one device with the dataset resident there
(``input_pipeline.DeviceResidentSource``), fetching the metrics once per
repeat as training does every ``log_every`` iterations; ``torch`` is the
reference's loop (``reference_torch.ReferenceTraining``, which reads its
losses once per generator iteration, as main.py prints them) with the
dataset as one tensor on its device, batches gathered from it and noise
drawn there. Both take uint8 pixels and scale them to [-1, 1] per batch.

Each side runs in its own process (its own thread pool, memory and XLA
flags). After a warm-up iteration, the sides take turns: repeat r of every
side, in an order that rotates, then repeat r + 1, so that background load
hits all of them alike; the table gives medians. Compilation is measured
apart (jax's own trace, lowering and compile events) and never counted in the
throughput. Peak memory is the process's peak RSS on the CPU (framework and
dataset included; the RSS before building the models is given too), the
allocator's peak on accelerators.

Achieved FLOP/s: the model FLOPs of a generator iteration
(``flops.iteration_flops``: matrix products and convolutions, the same for
both sides) times the iterations per second; as a share of the dense
float32 matrix-product rate each side's framework reaches in the same
process (``gemm_gflops``), and on GPUs whose datasheet we list
(``SPEC_PEAK_TFLOPS``) of the card's peak.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from importlib import metadata

import numpy as np

from wgan_jax.errors import UserError

# The reference's models; 'mlp' is its MLP_G / MLP_D at the width its README
# trains them with (python main.py --mlp_G --ngf 512), on 64x64 colour images.
MODELS = {
    'mlp': dict(image_size=64, generator='mlp', critic='mlp', ngf=512, ndf=512),
    'dcgan32': dict(image_size=32),
    'dcgan64': dict(image_size=64),
}
BATCH_SIZE = 64
N_CRITIC = 5
CHANNELS = 3
GEMM_SECONDS = 3.0  # the GEMM rate is the best of this long: one slow second on a VM moves nothing

# Dense peak TFLOP/s from NVIDIA's datasheets (no sparsity): float32 on CUDA
# cores, TF32 and bfloat16 on tensor cores. Matched against the device name.
SPEC_PEAK_TFLOPS = {
    'H100 PCIe': {'float32': 51.2, 'tf32': 378.0, 'bfloat16': 756.0},
    'H100': {'float32': 66.9, 'tf32': 494.7, 'bfloat16': 989.4},  # SXM
    'H200': {'float32': 66.9, 'tf32': 494.7, 'bfloat16': 989.4},
    'A100': {'float32': 19.5, 'tf32': 156.0, 'bfloat16': 312.0},
}


def spec_peak(device_name: str) -> dict | None:
  """The datasheet peaks of a GPU named ``device_name`` (None: not listed)."""
  for name, peak in SPEC_PEAK_TFLOPS.items():  # the most specific name first
    if name.lower() in device_name.lower():
      return peak
  return None


def bench_config(spec: dict, **overrides):
  """Our config for a model ``spec`` (a value of MODELS): the reference's
  defaults, the steady-state schedule, then ``overrides`` (strings allowed)."""
  from wgan_jax import configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config()
  config.update(batch_size=BATCH_SIZE, nz=100, ngf=64, ndf=64, channels=CHANNELS,
                optimizer='rmsprop', lr_critic=5e-5, lr_gen=5e-5, clip=0.01,
                clip_when='before', n_critic=N_CRITIC, warmup_gen_iters=0,
                boost_every=0, progress_bar=False)
  config.update(spec)
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise UserError(f'--variant: {", ".join(unknown)} is not a config field '
                    '(see wgan_jax/configs/default.py).')
  for key, value in overrides.items():
    config[key] = type(config[key])(value) if not isinstance(config[key], bool) \
        else str(value).lower() in ('1', 'true', 'yes')
  return config


def bench_data(spec: dict, num_examples: int, seed: int = 0) -> np.ndarray:
  """The dataset both sides train on: uint8 pixels, (N, H, W, C)."""
  size = spec['image_size']
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (num_examples, size, size, CHANNELS), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One contender: ``torch`` (the reference) or ours with config overrides
  and XLA flags (None: the environment's, plus the package's defaults)."""
  label: str
  framework: str  # 'ours' | 'torch'
  overrides: tuple[tuple[str, str], ...] = ()
  xla_flags: str | None = None


def parse_variant(text: str) -> Variant:
  """'LABEL: field=value ... [xla_flags="--flag=v --flag2=v"]' -> a Variant of ours."""
  label, sep, rest = text.partition(':')
  label = label.strip()
  if not sep or not label or label == 'torch':
    raise UserError(f'--variant={text!r}: write LABEL: field=value ... '
                    "(e.g. 'unroll: iteration_mode=unroll'); LABEL is not 'torch'.")
  overrides, xla_flags = [], None
  for item in shlex.split(rest):
    key, eq, value = item.partition('=')
    if not eq:
      raise UserError(f'--variant={text!r}: {item!r} is not field=value.')
    if key == 'xla_flags':
      xla_flags = value
    else:
      overrides.append((key, value))
  return Variant(label, 'ours', tuple(overrides), xla_flags)


# ---------------------------------------------------------------------------
# The two sides, each in its own process.


def _rss_mb() -> float:
  with open('/proc/self/statm', encoding='ascii') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _peak_rss_mb() -> float:
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class OursRunner:
  """Our training: ``parallel.TrainIteration`` on one device."""

  def __init__(self, spec: dict, overrides: dict, data: np.ndarray):
    import jax  # pylint: disable=g-import-not-at-top
    from jax import monitoring  # pylint: disable=g-import-not-at-top
    from wgan_jax import flops, input_pipeline, parallel, state  # pylint: disable=g-import-not-at-top
    self._jax = jax
    self._flops = flops
    self.compile_seconds = 0.0
    config = bench_config(spec, **overrides)
    # Traced before the compile listener starts: tracing counts as compiling.
    self.flops = flops.iteration_flops(config, data.shape[1:], n_critic=N_CRITIC)

    def on_event(event, seconds, **_):
      if event.startswith('/jax/core/compile/'):
        self.compile_seconds += seconds

    monitoring.register_event_duration_secs_listener(on_event)
    self.rss_before_mb = _rss_mb()
    devices = parallel.local_devices(1)
    self.device = devices[0]
    initial = state.create_state(config, data.shape[1:], state.root_key(config),
                                 axis_name=parallel.AXIS)
    self.source = input_pipeline.DeviceResidentSource(
        input_pipeline.Dataset('benchmark', data), config.batch_size, config.seed,
        devices)
    self.iteration = parallel.TrainIteration(config, devices)
    self.p_state = parallel.replicate(initial, devices)
    jax.block_until_ready(self.p_state)
    self.consumed = 0
    self.description = {
        'backend': jax.default_backend(), 'device': self.device.device_kind,
        'iteration_mode': self.iteration.mode, 'convt_impl': config.convt_impl,
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
        'config': {k: config[k] for k in sorted(spec) + sorted(overrides)}}

  def warm_up(self) -> dict:
    before = self.compile_seconds
    seconds, _ = self.run(1)
    self._compiled_at_warm_up = self.compile_seconds
    return {'first_iteration_s': seconds,
            'compile_s': self.compile_seconds - before,
            'gflop_per_gen_iter': self.flops['generator_iteration'] / 1e9}

  def run(self, iters: int) -> tuple[float, float]:
    jax = self._jax
    start, cpu = time.perf_counter(), time.process_time()
    pending = []
    for _ in range(iters):
      self.p_state, metrics = self.iteration(
          self.p_state, *self.source.batches(self.consumed, N_CRITIC))
      self.consumed += N_CRITIC
      pending.append(metrics)
    jax.device_get(pending)
    jax.block_until_ready(self.p_state)
    return time.perf_counter() - start, time.process_time() - cpu

  def memory(self, gemm_seconds: float = GEMM_SECONDS) -> dict:
    stats = None
    try:
      stats = self.device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      pass  # the CPU backend may not report
    out = {'peak_rss_mb': _peak_rss_mb(), 'rss_before_models_mb': self.rss_before_mb,
           # Not zero: something compiled again while timed.
           'compile_s_while_timed': self.compile_seconds - self._compiled_at_warm_up}
    if stats and 'peak_bytes_in_use' in stats and self.device.platform != 'cpu':
      out['device_peak_mb'] = stats['peak_bytes_in_use'] / 2**20
    # Last, so that its buffers and its compile stay out of the figures above.
    out['gemm_gflops'] = self._flops.jax_gemm_rate(_gemm_size(self.device.platform),
                                                   gemm_seconds) / 1e9
    return out


class TorchRunner:
  """The reference's training loop (``reference_torch.ReferenceTraining``)."""

  def __init__(self, spec: dict, data: np.ndarray, device: str, threads: int):
    import torch  # pylint: disable=g-import-not-at-top
    from wgan_jax import reference_torch  # pylint: disable=g-import-not-at-top
    self._torch = torch
    torch.set_num_threads(threads)
    self.device = torch.device(device)
    if self.device.type == 'cuda':
      torch.cuda.reset_peak_memory_stats(self.device)
    self.rss_before_mb = _rss_mb()
    config = bench_config(spec)
    net_g, net_d = reference_torch.make_models(config, data.shape[1:])
    net_g.to(self.device)
    net_d.to(self.device)
    self.trainer = reference_torch.make_trainer(config, net_g, net_d)
    self.data = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous().to(self.device)
    self.batch, self.nz = config.batch_size, config.nz
    self.description = {
        'device': str(self.device) if self.device.type != 'cuda'
                  else torch.cuda.get_device_name(self.device),
        'threads': torch.get_num_threads()}

  def _real(self):
    torch = self._torch
    index = torch.randint(0, len(self.data), (self.batch,), device=self.device)
    return self.data[index].float().div_(127.5).sub_(1.0)

  def _noise(self):
    return self._torch.randn(self.batch, self.nz, device=self.device)

  def warm_up(self) -> dict:
    return {'first_iteration_s': self.run(1)[0], 'compile_s': None}

  def gemm_rate(self, n: int, seconds: float = GEMM_SECONDS) -> float:
    """The float32 matrix-product FLOP/s torch reaches on its device (its
    default precision: full float32 on GPUs)."""
    from wgan_jax import flops  # pylint: disable=g-import-not-at-top
    torch = self._torch
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(self.device) for _ in range(2))

    def sync(_):
      if self.device.type == 'cuda':
        torch.cuda.synchronize(self.device)
    return flops.dense_gemm_rate(lambda: torch.matmul(a, b), sync, n, seconds)

  def run(self, iters: int) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
      self.trainer.iteration(self._real, self._noise)
    if self.device.type == 'cuda':
      self._torch.cuda.synchronize(self.device)
    return time.perf_counter() - start, time.process_time() - cpu

  def memory(self, gemm_seconds: float = GEMM_SECONDS) -> dict:
    out = {'peak_rss_mb': _peak_rss_mb(), 'rss_before_models_mb': self.rss_before_mb}
    if self.device.type == 'cuda':
      out['device_peak_mb'] = self._torch.cuda.max_memory_allocated(self.device) / 2**20
    out['gemm_gflops'] = self.gemm_rate(_gemm_size(self.device.type), gemm_seconds) / 1e9
    return out


def _gemm_size(platform_name: str) -> int:
  return 2048 if platform_name == 'cpu' else 8192


def _serve(conn, variant: Variant, spec: dict, options: dict) -> None:
  """A worker: builds its side, then runs what the parent asks, in turn."""
  try:
    data = bench_data(spec, options['num_examples'])
    if variant.framework == 'torch':
      threads = int(dict(variant.overrides).get('threads', options['torch_threads']))
      runner = TorchRunner(spec, data, options['torch_device'], threads)
    else:
      from wgan_jax import runtime  # pylint: disable=g-import-not-at-top
      # What training sets up for itself (train.train calls runtime.configure).
      runtime.tune_malloc()
      runtime.set_compilation_cache(options.get('compilation_cache_dir', ''))
      runner = OursRunner(spec, dict(variant.overrides), data)
    conn.send(('ok', runner.description))
    while True:
      command, arg = conn.recv()
      if command == 'warm_up':
        conn.send(('ok', runner.warm_up()))
      elif command == 'run':
        conn.send(('ok', runner.run(arg)))
      elif command == 'stop':
        conn.send(('ok', runner.memory(options.get('gemm_seconds', GEMM_SECONDS))))
        return
  except BaseException:  # pylint: disable=broad-except
    conn.send(('error', traceback.format_exc()))


class Worker:
  """The parent's handle on one side's process."""

  def __init__(self, variant: Variant, spec: dict, options: dict):
    ctx = multiprocessing.get_context('spawn')
    self.variant = variant
    self.conn, child = ctx.Pipe()
    env = dict(os.environ)
    try:
      if variant.framework == 'ours':
        if options.get('backend'):
          os.environ['JAX_PLATFORMS'] = options['backend']
        if variant.xla_flags is not None:
          os.environ['XLA_FLAGS'] = variant.xla_flags
      self.process = ctx.Process(target=_serve, args=(child, variant, spec, options),
                                 daemon=True, name=f'benchmark-{variant.label}')
      self.process.start()  # spawn: the child starts with this environment
    finally:
      os.environ.clear()
      os.environ.update(env)
    child.close()
    self.description = self._reply()

  def _reply(self):
    try:
      status, value = self.conn.recv()
    except EOFError:
      self.process.join()
      raise RuntimeError(f'the {self.variant.label} worker died (exit code '
                         f'{self.process.exitcode})') from None
    if status == 'error':
      raise RuntimeError(f'the {self.variant.label} worker failed:\n{value}')
    return value

  def ask(self, command: str, arg=None):
    self.conn.send((command, arg))
    return self._reply()

  def stop(self) -> dict:
    memory = self.ask('stop')
    self.process.join()
    return memory

  def kill(self) -> None:
    if self.process.is_alive():
      self.process.kill()
      self.process.join()


# ---------------------------------------------------------------------------
# Orchestration.


def benchmark_model(model: str, variants: list[Variant], options: dict,
                    log=print, spec: dict | None = None) -> dict:
  """Times every variant on ``model`` (``spec``: its MODELS entry by
  default), repeats interleaved; a JSON-able dict."""
  spec = MODELS[model] if spec is None else spec
  workers: list[Worker] = []
  try:
    for variant in variants:
      log(f'[{model}] starting {variant.label} ...')
      workers.append(Worker(variant, spec, options))
    warm = {}
    for w in workers:
      warm[w.variant.label] = w.ask('warm_up')
      log(f'[{model}] {w.variant.label}: first iteration '
          f'{warm[w.variant.label]["first_iteration_s"]:.2f} s')
    iters = options['iters']
    if not iters:  # enough that the fastest side's repeat lasts min_repeat_s
      fastest = min(w.ask('run', 1)[0] for w in workers)
      iters = max(1, math.ceil(options['min_repeat_s'] / fastest))
    times = {w.variant.label: [] for w in workers}
    cpu_times = {w.variant.label: [] for w in workers}
    loads = []
    for r in range(options['repeats']):
      k = r % len(workers)
      for w in workers[k:] + workers[:k]:
        wall, cpu = w.ask('run', iters)
        times[w.variant.label].append(wall)
        cpu_times[w.variant.label].append(cpu)
      loads.append(os.getloadavg()[0])
      log(f'[{model}] repeat {r + 1}/{options["repeats"]}: ' + ', '.join(
          f'{label} {iters / t[-1]:.3f} it/s' for label, t in times.items()))
    memory = {w.variant.label: w.stop() for w in workers}
  finally:
    for w in workers:
      w.kill()
  batch = bench_config(spec).batch_size
  results = {}
  for w in workers:
    label = w.variant.label
    seconds = statistics.median(times[label])
    gen_per_s = iters / seconds
    results[label] = {
        'framework': w.variant.framework,
        'gen_iters_per_s': gen_per_s,
        'critic_steps_per_s': gen_per_s * N_CRITIC,
        'images_per_s': gen_per_s * N_CRITIC * batch,
        'ms_per_gen_iter': 1000 * seconds / iters,
        # Best repeat: the closest to an unloaded machine.
        'best_gen_iters_per_s': iters / min(times[label]),
        # CPU time of all the process's threads: less sensitive to other
        # processes' load than wall time (but it counts threads that spin).
        'cpu_ms_per_gen_iter': 1000 * statistics.median(cpu_times[label]) / iters,
        'repeat_seconds': times[label],
        'repeat_cpu_seconds': cpu_times[label],
        **warm[label], **memory[label],
        'description': w.description,
    }
  # The count is the same for every side; only ours computes it.
  gflop = next((r['gflop_per_gen_iter'] for r in results.values()
                if 'gflop_per_gen_iter' in r), None)
  for res in results.values():
    if gflop is not None:
      res['gflop_per_gen_iter'] = gflop
      res['achieved_gflops'] = gflop * res['gen_iters_per_s']
      res['share_of_gemm'] = res['achieved_gflops'] / res['gemm_gflops']
      peak = spec_peak(res['description'].get('device', ''))
      if peak and res['description'].get('backend', 'gpu') != 'cpu':
        res['spec_peak_tflops'] = peak
        res['share_of_spec_peak'] = {k: res['achieved_gflops'] / (1e3 * v)
                                     for k, v in peak.items()}
  torch_label = next((v.label for v in variants if v.framework == 'torch'), None)
  summary = {}
  ours_gemm = [r['gemm_gflops'] for r in results.values() if r['framework'] == 'ours']
  if gflop is not None and ours_gemm:
    # An upper bound: every model FLOP at the dense square-GEMM rate, nothing else.
    summary['gemm_ceiling_gen_iters_per_s'] = max(ours_gemm) / gflop
    if torch_label:
      summary['gemm_ceiling_speedup_vs_torch'] = (
          summary['gemm_ceiling_gen_iters_per_s'] / results[torch_label]['gen_iters_per_s'])
  if torch_label:
    base = results[torch_label]
    for res in results.values():
      res['speedup_vs_torch'] = res['gen_iters_per_s'] / base['gen_iters_per_s']
      res['best_speedup_vs_torch'] = (res['best_gen_iters_per_s']
                                      / base['best_gen_iters_per_s'])
      res['cpu_time_speedup_vs_torch'] = (base['cpu_ms_per_gen_iter']
                                          / res['cpu_ms_per_gen_iter'])
  return {'iters_per_repeat': iters, 'repeats': options['repeats'],
          'load_average_1min_per_repeat': loads, **summary, 'results': results}


def machine() -> dict:
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  versions = {}
  for package in ('jax', 'jaxlib', 'flax', 'torch'):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  return {'cpu': model, 'cores': len(os.sched_getaffinity(0)),
          'memory_gb': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30,
          'platform': platform.platform(), 'python': platform.python_version(),
          **versions}


def table(results: dict) -> str:
  """The results as a fixed-width text table."""
  head = ('model', 'side', 'gen it/s', 'vs torch', 'best it/s', 'vs torch',
          'CPU ms/it', 'vs torch', 'critic st/s', 'images/s', 'GFLOP/s',
          '% GEMM', 'compile s', 'peak MB')

  def ratio(r, key):
    return f'{r[key]:.2f}x' if key in r else '-'

  rows = [head]
  for model, res in results.items():
    for label, r in res['results'].items():
      mem = r.get('device_peak_mb', r['peak_rss_mb'])
      rows.append((model, label, f'{r["gen_iters_per_s"]:.3f}',
                   ratio(r, 'speedup_vs_torch'), f'{r["best_gen_iters_per_s"]:.3f}',
                   ratio(r, 'best_speedup_vs_torch'), f'{r["cpu_ms_per_gen_iter"]:.0f}',
                   ratio(r, 'cpu_time_speedup_vs_torch'),
                   f'{r["critic_steps_per_s"]:.2f}', f'{r["images_per_s"]:.0f}',
                   f'{r["achieved_gflops"]:.1f}' if 'achieved_gflops' in r else '-',
                   f'{100 * r["share_of_gemm"]:.0f}%' if 'share_of_gemm' in r else '-',
                   f'{r["compile_s"]:.1f}' if r['compile_s'] is not None else '-',
                   f'{mem:.0f}'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def ceilings(results: dict) -> str:
  """Per model: what every model FLOP at jax's dense-GEMM rate would give, and
  on listed GPUs each side's share of the datasheet peaks."""
  lines = []
  for model, res in results.items():
    if 'gemm_ceiling_gen_iters_per_s' not in res:
      continue
    ours_gemm = max(r['gemm_gflops'] for r in res['results'].values() if r['framework'] == 'ours')
    gflop = next(iter(res['results'].values()))['gflop_per_gen_iter']
    line = (f'{model}: {gflop:.1f} GFLOP per generator iteration; at jax\'s dense GEMM rate '
            f'({ours_gemm:.0f} GFLOP/s) {res["gemm_ceiling_gen_iters_per_s"]:.3f} it/s')
    if 'gemm_ceiling_speedup_vs_torch' in res:
      line += f', {res["gemm_ceiling_speedup_vs_torch"]:.2f}x torch'
    lines.append(line)
    for label, r in res['results'].items():
      if 'share_of_spec_peak' in r:
        lines.append(f'  {label}: ' + ', '.join(
            f'{100 * share:.1f}% of the {kind} peak ({r["spec_peak_tflops"][kind]:g} TFLOP/s)'
            for kind, share in r['share_of_spec_peak'].items()))
  return '\n'.join(lines)


def run(models, variants, options, out: str = '', log=print) -> dict:
  """Benchmarks ``models`` (names of MODELS) for ``variants``; writes ``out``."""
  for model in models:
    if model not in MODELS:
      raise UserError(f'--models: unknown model {model!r}; choose from {", ".join(MODELS)}.')
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise UserError(f'--variant: labels must differ, got {", ".join(labels)}.')
  report = {'machine': machine(), 'options': options,
            'variants': [dataclasses.asdict(v) for v in variants],
            'load_average_1_5_15min_start': os.getloadavg(),
            'settings': {'batch_size': BATCH_SIZE, 'n_critic': N_CRITIC,
                         'schedule': 'steady state: 5 critic steps per generator '
                                     'iteration, no 100-step warm-up iterations',
                         'optimizer': 'rmsprop lr 5e-5', 'clip': 0.01,
                         'clip_when': 'before', 'nz': 100, 'channels': CHANNELS},
            'models': {}}
  started = time.time()
  for model in models:
    report['models'][model] = benchmark_model(model, variants, options, log=log)
  report['load_average_1_5_15min_end'] = os.getloadavg()
  report['wall_seconds'] = time.time() - started
  if out:
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=2)
  return report


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if f.repeats <= 0 or f.iters < 0 or f.num_examples < BATCH_SIZE:
    raise UserError('--repeats must be positive, --iters not negative, and '
                    f'--num_examples at least {BATCH_SIZE}.')
  ours = [('convt_impl', f.convt_impl), ('iteration_mode', f.iteration_mode)]
  variants = []
  cores = len(os.sched_getaffinity(0))
  torch_threads = [int(t) for t in f.torch_threads] or [cores]
  if f.torch:  # the first thread count is 'torch', the one compared with
    variants += [Variant('torch' if i == 0 else f'torch_{t}threads', 'torch',
                         (('threads', str(t)),))
                 for i, t in enumerate(torch_threads)]
  if f.ours:
    variants.append(Variant('ours', 'ours', tuple(ours), f.xla_flags))
  variants += [parse_variant(text) for text in f.variant]
  if not variants:
    raise UserError('nothing to time: keep --ours or --torch, or add a --variant.')
  options = {'repeats': f.repeats, 'iters': f.iters, 'min_repeat_s': f.min_repeat_s,
             'num_examples': f.num_examples, 'backend': f.backend,
             'torch_device': f.torch_device,
             'torch_threads': torch_threads[0],
             'compilation_cache_dir': f.compilation_cache_dir}
  report = run(f.models, variants, options, out=f.out,
               log=lambda s: print(s, file=sys.stderr, flush=True))
  print(table(report['models']))
  print('\nCeilings (every model FLOP at the dense-GEMM rate, nothing else):')
  print(ceilings(report['models']))
  m = report['machine']
  print(f'\n{m["cpu"]}, {m["cores"]} cores; jax {m["jax"]}, torch {m["torch"]}; '
        f'load average {report["load_average_1_5_15min_start"][0]:.2f} at the start, '
        f'{report["load_average_1_5_15min_end"][0]:.2f} at the end.')
  if f.out:
    print(f'Written to {f.out}.')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  from wgan_jax import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list('models', list(MODELS), f'Models to time: {", ".join(MODELS)}.')
  flags.DEFINE_integer('repeats', 5, 'Timed repeats per side (the median is reported).')
  flags.DEFINE_integer('iters', 0, 'Generator iterations per repeat; 0: enough for '
                       '--min_repeat_s on the faster side.')
  flags.DEFINE_float('min_repeat_s', 3.0, 'With --iters=0, the shortest repeat, seconds.')
  flags.DEFINE_integer('num_examples', 1024, 'Examples in the in-memory dataset.')
  flags.DEFINE_boolean('torch', True, 'Time the PyTorch reference.')
  flags.DEFINE_boolean('ours', True, 'Time ours with the options below.')
  flags.DEFINE_list('torch_threads', [], 'torch.set_num_threads (default: the cores); '
                    'with several, the first is compared with, the others shown too.')
  flags.DEFINE_string('torch_device', 'cpu', "The reference's device: cpu | cuda | cuda:N.")
  flags.DEFINE_string('backend', '', "Our backend (JAX_PLATFORMS): cpu | gpu | tpu; '' "
                      "jax's default.")
  flags.DEFINE_string('iteration_mode', 'auto', 'Ours: auto | scan | unroll | steps.')
  flags.DEFINE_string('convt_impl', 'auto', 'Ours: auto | subpixel | dilated.')
  flags.DEFINE_string('xla_flags', None, 'Ours: XLA_FLAGS instead of the environment\'s '
                      "and the package's defaults.")
  flags.DEFINE_string('compilation_cache_dir', '', "Ours: jax's persistent "
                      'compilation cache directory.')
  flags.DEFINE_multi_string('variant', [], "More of ours: 'LABEL: field=value ... "
                            "[xla_flags='--flag=value ...']'.")
  flags.DEFINE_string('out', '', 'Write the results here (JSON).')
  app.run(cli.user_errors(main))
