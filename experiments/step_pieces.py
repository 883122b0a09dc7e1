r"""Where a training step's time goes, ours vs the PyTorch reference, piece by piece.

  python experiments/step_pieces.py --models=dcgan32,dcgan64 --threads=2

For the benchmark's models (``wgan_jax.benchmark.MODELS``, batch 64) times
three pieces on both sides, best of 3 rounds of ``--calls`` calls: the
generator's forward (each critic step runs it), the critic's forward and
weight gradient on a real and a fake batch (the rest of a critic step), and
the generator's forward and weight gradient through the critic (the generator
step). Optimiser updates, clipping and data are left out: the benchmark has
them. Our pieces are jitted, with the CPU defaults of training (allocator
tuning included); XLA_FLAGS from the environment apply. Writes
``--out`` (JSON) with the machine.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

_MODELS = flags.DEFINE_list('models', ['dcgan32', 'dcgan64'], 'Models of wgan_jax.benchmark.')
_THREADS = flags.DEFINE_integer('threads', 0, "torch's threads (0: the cores this process may use).")
_CALLS = flags.DEFINE_integer('calls', 5, 'Calls per round.')
_OUT = flags.DEFINE_string('out', 'experiments/results/step_pieces.json', 'Where the JSON goes.')


def _best_ms(fn, calls: int, sync=lambda r: r) -> float:
  sync(fn())
  best = float('inf')
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn()
    sync(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return best * 1e3


def ours(model: str, calls: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from wgan_jax.benchmark import pieces  # pylint: disable=g-import-not-at-top
  sync = jax.block_until_ready
  out = {}
  for name, (fn, args) in pieces.step_pieces(model).items():
    jitted = jax.jit(fn)
    out[f'{name}_ms'] = _best_ms(lambda jitted=jitted, args=args: jitted(*args), calls, sync)
  return out


def reference(model: str, calls: int, threads: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from wgan_jax import benchmark
  from wgan_jax.reference import torch_model  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  config = benchmark.bench_config(benchmark.MODELS[model])
  shape = (config.image_size, config.image_size, benchmark.CHANNELS)
  net_g, net_d = torch_model.make_models(config, shape)
  z = torch.randn(benchmark.BATCH_SIZE, config.nz, 1, 1)
  x = torch.rand(benchmark.BATCH_SIZE, benchmark.CHANNELS, *shape[:2]) * 2 - 1

  def g_fwd():
    with torch.no_grad():
      return net_g(z)

  fake = g_fwd()

  def c_grad():
    net_d.zero_grad()
    (net_d(x).mean() - net_d(fake).mean()).backward()

  def g_grad():
    net_g.zero_grad()
    (-net_d(net_g(z)).mean()).backward()

  return {'generator_forward_ms': _best_ms(g_fwd, calls),
          'critic_forward_and_gradient_ms': _best_ms(c_grad, calls),
          'generator_forward_and_gradient_ms': _best_ms(g_grad, calls)}


def main(argv):
  del argv
  from wgan_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.tune_malloc()  # as training does, before jax starts

  threads = _THREADS.value or len(os.sched_getaffinity(0))
  result = {'machine': {**runtime.machine(devices=True), 'torch_threads': threads,
                        'xla_flags': os.environ.get('XLA_FLAGS', ''),
                        'load_average_1min_start': os.getloadavg()[0]},
            'batch_size': 64, 'models': {}}
  for model in _MODELS.value:
    result['models'][model] = {'ours': ours(model, _CALLS.value),
                               'torch': reference(model, _CALLS.value, threads)}
    for piece in result['models'][model]['ours']:
      a, b = result['models'][model]['ours'][piece], result['models'][model]['torch'][piece]
      print(f'{model:8s} {piece:36s} ours {a:8.1f} ms  torch {b:8.1f} ms  torch time / ours {b / a:5.2f}',
            flush=True)
  result['machine']['load_average_1min_end'] = os.getloadavg()[0]
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  print(f'Written to {_OUT.value}.')


if __name__ == '__main__':
  app.run(main)
