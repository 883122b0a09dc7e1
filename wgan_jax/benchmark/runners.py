"""The two sides of the benchmark, each in its own process (``Worker``):
ours (``OursRunner``) and the reference's loop (``TorchRunner``)."""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback

import numpy as np

from wgan_jax.benchmark.settings import GEMM_SECONDS, N_CRITIC, Variant, bench_config, bench_data

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
    from wgan_jax import parallel, state  # pylint: disable=g-import-not-at-top
    from wgan_jax.data import Dataset  # pylint: disable=g-import-not-at-top
    from wgan_jax.benchmark import flops  # pylint: disable=g-import-not-at-top
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
    self.source = parallel.DeviceResidentSource(
        Dataset('benchmark', data), config.batch_size, config.seed,
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
  """The reference's training loop (``torch_model.ReferenceTraining``)."""

  def __init__(self, spec: dict, data: np.ndarray, device: str, threads: int):
    import torch  # pylint: disable=g-import-not-at-top
    from wgan_jax.reference import torch_model  # pylint: disable=g-import-not-at-top
    self._torch = torch
    torch.set_num_threads(threads)
    self.device = torch.device(device)
    if self.device.type == 'cuda':
      torch.cuda.reset_peak_memory_stats(self.device)
    self.rss_before_mb = _rss_mb()
    config = bench_config(spec)
    net_g, net_d = torch_model.make_models(config, data.shape[1:])
    net_g.to(self.device)
    net_d.to(self.device)
    self.trainer = torch_model.make_trainer(config, net_g, net_d)
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
    from wgan_jax.benchmark import flops  # pylint: disable=g-import-not-at-top
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
        if options.get('backend') == 'gpu':
          # 'gpu' is no plugin name: with it jax also tries ROCm and fails on a
          # CUDA machine (and the reverse); left to itself it takes the GPU.
          os.environ.pop('JAX_PLATFORMS', None)
        elif options.get('backend'):
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
