r"""Samples from a trained generator: ``python -m wgan_jax.generate``.

    python -m wgan_jax.generate --workdir=runs/digits --num=64 --out=digits.png
    python -m wgan_jax.generate --workdir=runs/ring --num=1000 --out=ring.npy

reads the newest checkpoint in ``--workdir`` (or the one of ``--step``) and
writes ``--num`` samples: a PNG grid of images, a scatter plot of 2-D points
(drawn over real points), or a ``.npy`` array ((N, H, W, C) images in
[-1, 1], or (N, 2) points). The latents come from ``--seed``, so the same
call gives the same samples (on the same backend, as for training).

As in the reference code's sample grids, BatchNorm normalises with batch
statistics; the latents go through in batches of the training batch size
(the last one filled up with extra latents that are then dropped), so every
sample is made as the generator was trained to make it.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from absl import app, flags

from wgan_jax import checkpoints, cli, data, models, visualize
from wgan_jax.errors import UserError

FLAGS = flags.FLAGS
FORMATS = ('.png', '.npy')


def sampler(restored: checkpoints.Generator):
  """``sample(key, n)``: samples of a checkpoint's generator (``models.sampler``)."""
  return models.sampler(restored.config, restored.data_shape, restored.variables)


def generate(workdir: str, num: int, seed: int = 0,
             step: int | None = None) -> tuple[np.ndarray, checkpoints.Generator]:
  """``num`` samples from the generator of a checkpoint, and that checkpoint."""
  if num <= 0:
    raise UserError(f'--num={num}: must be positive.')
  restored = checkpoints.Checkpointer(workdir).generator(step)
  key = jax.random.key(seed, impl=restored.config.rng_impl)
  return np.asarray(sampler(restored)(key, num)), restored


def write(path: str, samples: np.ndarray, restored: checkpoints.Generator) -> None:
  """Writes samples as ``path``'s extension asks (see the module docstring)."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise UserError(f'--out={path}: name a .png or a .npy file.')
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise UserError(f'--out={path}: the directory {directory} does not exist.')
  if ext == '.npy':
    np.save(path, samples)
  elif samples.ndim == 4:
    visualize.save_image_grid(path, samples, ncol=math.ceil(math.sqrt(len(samples))))
  else:
    real = data.get_dataset(restored.config).examples
    real = real[np.random.default_rng(0).choice(len(real), min(len(real), 2000),
                                                replace=False)]
    visualize.save_scatter(path, samples, real, title=(
        f'{restored.config.dataset}, iteration {restored.step}, '
        f'{len(samples)} samples'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  samples, restored = generate(FLAGS.workdir, FLAGS.num, FLAGS.seed, FLAGS.step)
  write(FLAGS.out, samples, restored)
  print(f'{len(samples)} samples of generator iteration {restored.step} '
        f'written to {FLAGS.out}.')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The run directory (its checkpoints/).',
                      required=True)
  flags.DEFINE_integer('num', 64, 'How many samples.')
  flags.DEFINE_string('out', None, 'Output file: .png (a grid, or a scatter plot '
                      'for 2-D data) or .npy (the array).', required=True)
  flags.DEFINE_integer('step', None, 'Generator iteration of the checkpoint '
                       '(default: the newest).')
  flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
  app.run(cli.user_errors(main))
