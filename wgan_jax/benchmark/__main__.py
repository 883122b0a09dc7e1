"""``python -m wgan_jax.benchmark``: see ``wgan_jax.benchmark``."""

from __future__ import annotations

import os
import sys

from wgan_jax import benchmark
from wgan_jax.benchmark import (BATCH_SIZE, MODELS, Variant, ceilings, parse_variant, run,
                                table)
from wgan_jax.errors import UserError

__doc__ = benchmark.__doc__  # what --help shows


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  # This process, each side's worker (which inherits it) and the torch side share
  # one card: jax's default of taking 75% of it at start leaves the others out of
  # memory (seen on an H200). Set before anything here starts jax's GPU client.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
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
  flags.DEFINE_string('convt_impl', 'auto', 'Ours: auto | subpixel | dilated | mixed | gemm.')
  flags.DEFINE_string('xla_flags', None, 'Ours: XLA_FLAGS instead of the environment\'s '
                      "and the package's defaults.")
  flags.DEFINE_string('compilation_cache_dir', '', "Ours: jax's persistent "
                      'compilation cache directory.')
  flags.DEFINE_multi_string('variant', [], "More of ours: 'LABEL: field=value ... "
                            "[xla_flags='--flag=value ...']'.")
  flags.DEFINE_string('out', '', 'Write the results here (JSON).')
  app.run(cli.user_errors(main))
