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
(``parallel.DeviceResidentSource``), fetching the metrics once per
repeat as training does every ``log_every`` iterations; ``torch`` is the
reference's loop (``reference.torch_model.ReferenceTraining``, which reads its
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
import math
import os
import statistics
import time

from wgan_jax import files, runtime
from wgan_jax.benchmark.report import SPEC_PEAK_TFLOPS, ceilings, spec_peak, table  # noqa: F401
from wgan_jax.benchmark.runners import OursRunner, TorchRunner, Worker  # noqa: F401
from wgan_jax.benchmark.settings import (BATCH_SIZE, CHANNELS, GEMM_SECONDS,  # noqa: F401
                                         MODELS, N_CRITIC, Variant, bench_config,
                                         bench_data, parse_variant)
from wgan_jax.errors import UserError

__all__ = ['BATCH_SIZE', 'CHANNELS', 'GEMM_SECONDS', 'MODELS', 'N_CRITIC', 'SPEC_PEAK_TFLOPS',
           'OursRunner', 'TorchRunner', 'Variant', 'Worker', 'bench_config', 'bench_data',
           'benchmark_model', 'ceilings', 'parse_variant', 'run', 'spec_peak', 'table']

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


def run(models, variants, options, out: str = '', log=print) -> dict:
  """Benchmarks ``models`` (names of MODELS) for ``variants``; writes ``out``."""
  for model in models:
    if model not in MODELS:
      raise UserError(f'--models: unknown model {model!r}; choose from {", ".join(MODELS)}.')
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise UserError(f'--variant: labels must differ, got {", ".join(labels)}.')
  report = {'machine': runtime.machine(), 'options': options,
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
    report['complete'] = len(report['models']) == len(models)
    # After every model: a run stopped at a lease's time limit keeps what it measured.
    if out:
      files.write_json(out, report, indent=2)
  return report
