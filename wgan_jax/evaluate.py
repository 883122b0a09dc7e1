r"""Measuring trained runs: ``python -m wgan_jax.evaluate``.

    python -m wgan_jax.evaluate --workdir=runs/gaussians8          # modes, high quality, W1
    python -m wgan_jax.evaluate --workdir=runs/digits --checkpoints=all
    python -m wgan_jax.evaluate --workdir=runs/celeb_a --metric=fid,kid --num_samples=10000

For each chosen checkpoint of ``--workdir`` (the newest by default) it draws
samples from the generator and measures them:

* ``--metric=auto`` (the default): the embedded datasets' own measures
  (``wgan_jax.eval.metrics``): modes covered, high-quality share and exact W1 on the
  2-D sets; a digits classifier's Frechet distance, KID and class histogram
  on digits; modes covered and KL on stacked digits; on mnist5k and
  stacked_mnist5k, modes, KL, FD and KID with a small convnet trained on 4,000
  of the 5,000 digits (cached in ``--cache_dir``, default
  ``~/.cache/wgan_jax``). Every other dataset: FID
  and KID.
* ``--metric=fid``, ``kid`` or ``fid,kid``: the standard Inception network's
  (``wgan_jax.eval.fid``; its weights are set up once, see the README). The real
  images' statistics are computed once and cached; generated images go to the
  network batch by batch on the device.

Each result is appended to ``<workdir>/evaluation.jsonl`` (one JSON object
per checkpoint and metric set) and printed as a table.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags, logging

from wgan_jax import checkpoints, cli, data, errors, models, pixels
from wgan_jax.eval import fid, metrics
from wgan_jax.errors import UserError

FLAGS = flags.FLAGS
METRIC_CHOICES = ('auto', 'fid', 'kid', 'fid,kid', 'samples')
FID_SAMPLES = 50_000  # the convention published FIDs use
RESULTS = 'evaluation.jsonl'


def choose_steps(available: Sequence[int], which: str) -> list[int]:
  """``newest``, ``all`` or a comma-separated list of generator iterations."""
  if not available:
    raise UserError('the workdir has no checkpoints to evaluate.')
  which = str(which).strip().lower()
  if which == 'newest':
    return [available[-1]]
  if which == 'all':
    return list(available)
  try:
    wanted = [int(s) for s in which.split(',') if s.strip()]
  except ValueError:
    raise UserError(f'--checkpoints={which}: give newest, all, or iterations such '
                    'as 500,1000.') from None
  missing = [s for s in wanted if s not in available]
  if missing or not wanted:
    raise UserError(f'--checkpoints={which}: no checkpoint of iteration(s) '
                    f'{missing}; there are {list(available)}.')
  return wanted


def metric_set(metric: str, dataset: str) -> tuple[str, ...]:
  """What ``--metric`` measures on ``dataset``: ('samples',) or FID/KID."""
  metric = str(metric).replace(' ', '').lower()
  if metric not in METRIC_CHOICES:
    raise UserError(f'--metric={metric}: choose one of {", ".join(METRIC_CHOICES)}.')
  if metric == 'auto':
    return ('samples',) if dataset in metrics.DATASETS else ('fid', 'kid')
  if metric == 'samples' and dataset not in metrics.DATASETS:
    raise UserError(f'--metric=samples: measures exist for {", ".join(metrics.DATASETS)}, '
                    f'not {dataset}; use --metric=fid,kid.')
  return tuple(metric.split(','))


def _file_name(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_')


class _FidReference:
  """The real images' Inception statistics, computed on first use, cached."""

  def __init__(self, config, network, count: int, progress: bool):
    self.config, self.network, self.count = config, network, count
    self.progress = progress
    self._stats = None

  def get(self) -> fid.Statistics:
    if self._stats is None:
      dataset = data.get_dataset(self.config)
      if not dataset.is_image:
        raise UserError(f'FID and KID measure images; {self.config.dataset} is '
                        'points: use --metric=auto.')
      count = min(self.count, len(dataset))

      def batches(chunk=500):
        for i in range(0, count, chunk):
          x = np.asarray(dataset.examples[i:i + chunk])
          yield pixels.to_float(x)

      path = fid.reference_cache_path(
          _file_name(self.config.dataset), _file_name(self.config.split),
          self.config.image_size, count)
      self._stats = fid.reference_statistics(self.network, batches, count,
                                             cache_path=path, progress=self.progress)
    return self._stats


def evaluate(workdir: str, metric: str = 'auto', which: str = 'newest',
             num_samples: int | None = None, seed: int = 0, dataset: str | None = None,
             inception_weights: str | None = None, reference_samples: int = FID_SAMPLES,
             cache_dir: str | None = None, progress: bool = True,
             out: str | None = None) -> list[dict]:
  """Measures the checkpoints ``which`` of ``workdir``; returns (and appends to
  ``out``, default ``<workdir>/evaluation.jsonl``) one record per checkpoint."""
  reader = checkpoints.Checkpointer(workdir)
  steps = choose_steps(reader.steps(), which)
  newest = str(which).strip().lower() == 'newest'
  # A checkpoint that cannot be read is skipped with a warning (the newest
  # falls back to the one before it).
  generators = (_read(reader, None if newest else step) for step in steps)
  generators = (g for g in generators if g is not None)
  first = next(generators, None)
  if first is None:
    raise UserError(f'none of the checkpoints {steps} in {reader.path} can be read.')
  config = first.config
  if dataset:
    config.dataset = dataset
  wanted = metric_set(metric, config.dataset)
  if num_samples is not None and num_samples < 2:
    raise UserError(f'--num_samples={num_samples}: at least 2.')
  extractor = reference = None
  if wanted != ('samples',):
    extractor = fid.as_extractor(inception_weights)
    reference = _FidReference(config, extractor, reference_samples, progress)
  out = out or os.path.join(workdir, RESULTS)
  records = []
  for restored in itertools.chain([first], generators):
    step = restored.step
    sample = models.sampler(restored.config, restored.data_shape, restored.variables)
    key = jax.random.key(seed, impl=restored.config.rng_impl)
    if wanted == ('samples',):
      n = num_samples or metrics.NUM_SAMPLES[config.dataset]
      values = metrics.evaluate_samples(config.dataset, np.asarray(sample(key, n)),
                                        seed=seed, cache_dir=cache_dir)
    else:
      values = fid.fid_for_generator(sample, reference.get(), extractor,
                                     num=num_samples or FID_SAMPLES, metrics=wanted,
                                     seed=seed, progress=progress)
    record = {'gen_iter': step, 'dataset': config.dataset, 'metric': ','.join(wanted),
              'seed': seed, **{k: float(v) for k, v in values.items()}}
    records.append(record)
    with open(out, 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
    logging.info('Iteration %d: %s', step, record)
  return records


def _read(reader: checkpoints.Checkpointer, step: int | None):
  """The generator of checkpoint ``step`` (None: the newest readable one), or
  None, with a warning, if it cannot be read."""
  try:
    return reader.generator(step)
  except checkpoints.UnreadableError as e:
    if step is None:  # (not even the oldest)
      raise
    reader.set_aside(step, f'cannot be read ({errors.first_line(e.__cause__)})')
    return None


def format_table(records: Sequence[dict]) -> str:
  """The records as an aligned text table, one row per checkpoint."""
  keys = [k for k in records[0] if k not in ('dataset', 'metric', 'seed')]
  rows = [[f'{r[k]:.4g}' if isinstance(r[k], float) else str(r[k]) for k in keys]
          for r in records]
  widths = [max(len(k), *(len(row[i]) for row in rows)) for i, k in enumerate(keys)]
  line = lambda cells: '  '.join(c.rjust(w) for c, w in zip(cells, widths))
  return '\n'.join([line(keys), *(line(row) for row in rows)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  records = evaluate(FLAGS.workdir, FLAGS.metric, FLAGS.checkpoints, FLAGS.num_samples,
                     FLAGS.seed, FLAGS.dataset, FLAGS.inception_weights,
                     FLAGS.reference_samples, FLAGS.cache_dir, FLAGS.progress_bar)
  print(f'{records[0]["dataset"]}, {records[0]["metric"]}:')
  print(format_table(records))
  print(f'(appended to {os.path.join(FLAGS.workdir, RESULTS)})')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The run directory (its checkpoints/).',
                      required=True)
  flags.DEFINE_string('metric', 'auto', 'auto (the embedded datasets\' own measures, '
                      'else FID and KID) | samples | fid | kid | fid,kid.')
  flags.DEFINE_string('checkpoints', 'newest', 'newest | all | iterations, e.g. 500,1000.')
  flags.DEFINE_integer('num_samples', None, 'Generated samples per checkpoint (default: '
                       f'{FID_SAMPLES} for FID/KID; the published protocol\'s count for '
                       'the embedded datasets, e.g. 2500 on the 2-D mixtures).')
  flags.DEFINE_integer('seed', 0, 'Seed of the latents and of the real draws compared with.')
  flags.DEFINE_string('dataset', None, 'Real data for FID/KID (default: the run\'s).')
  flags.DEFINE_string('inception_weights', None, 'The converted FID Inception weights '
                      '(default: ~/.cache/wgan_jax/fid_inception_v3.npz).')
  flags.DEFINE_integer('reference_samples', FID_SAMPLES, 'Real images in the FID/KID '
                       'reference statistics (at most the dataset\'s size).')
  flags.DEFINE_string('cache_dir', None, 'Keeps the digits classifier between runs '
                      '(mnist5k\'s: default ~/.cache/wgan_jax).')
  flags.DEFINE_boolean('progress_bar', True, 'Show progress bars.')
  cli.quiet_jax_logs()
  app.run(cli.user_errors(main))
