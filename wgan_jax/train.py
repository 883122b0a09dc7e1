r"""Train a Wasserstein GAN: ``python -m wgan_jax.train --dataset=NAME --workdir=DIR``.

With no flags it trains a DCGAN WGAN on the embedded handwritten digits and
writes sample grids, metrics and a curve of the Wasserstein estimate to
``runs/digits``. Every option of the reference code has a flag; ``--config``
takes an ml_collections config file for the rest (``--config.FIELD=VALUE``
overrides one field of it). Running it again with the same ``--workdir``
resumes from the newest checkpoint there.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from wgan_jax import (checkpoints, cli, input_pipeline, models, parallel, steps,
                      visualize, writers)
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState, create_state, root_key

FLAGS = flags.FLAGS


def validate(config) -> None:
  """Raises UserError for settings that cannot work, naming the fix."""
  positive = ('batch_size', 'nz', 'ngf', 'ndf', 'n_critic', 'n_critic_warmup',
              'sample_every', 'num_samples', 'log_every', 'keep_checkpoints')
  for name in positive:
    if config[name] <= 0:
      raise UserError(f'--{name}={config[name]}: must be positive.')
  for name in ('num_gen_iters', 'n_extra_layers', 'warmup_gen_iters',
               'boost_every', 'channels', 'num_devices', 'checkpoint_every'):
    if config[name] < 0:
      raise UserError(f'--{name}={config[name]}: must not be negative.')
  for name in ('lr_critic', 'lr_gen', 'clip'):
    if not config[name] > 0:
      raise UserError(f'--{name}={config[name]}: must be positive.')
  if config.image_size <= 0:
    raise UserError(f'--image_size={config.image_size}: must be positive.')
  if 'dcgan' in (config.generator, config.critic) and (
      config.image_size < 16 or config.image_size % 16):
    raise UserError(
        f'--image_size={config.image_size}: DCGAN models need a multiple of 16 '
        '(16, 32, 64, 128, ...).')
  for name, choices in (('generator', ('dcgan', 'mlp')), ('critic', ('dcgan', 'mlp')),
                        ('optimizer', ('rmsprop', 'adam'))):
    if config[name] not in choices:
      raise UserError(f'--{name}={config[name]!r}: choose {" or ".join(choices)}.')
  if config.rng_impl not in ('rbg', 'unsafe_rbg', 'threefry2x32'):
    raise UserError(f'--rng_impl={config.rng_impl!r}: choose rbg or threefry2x32.')
  if config.clip_when not in ('after', 'before'):
    raise UserError(f'--clip_when={config.clip_when!r}: choose after or before.')
  if config.loss != 'wgan':
    raise UserError(f'loss={config.loss!r}: this version trains loss=wgan.')
  parallel.resolve_mode(config.iteration_mode)


def prepare_workdir(workdir: str) -> None:
  try:
    os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{jax.process_index()}')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'cannot write to --workdir={workdir} ({e.strerror}); '
                    'choose a directory you can write to.') from e


class Outputs:
  """What a run leaves in its workdir, apart from checkpoints.

  Metrics of iterations after ``start`` (the iteration a run resumes from)
  are dropped first. In a multi-process run the first process writes them.
  """

  def __init__(self, config, workdir: str, dataset: input_pipeline.Dataset,
               start: int = 0):
    self.config = config
    self.workdir = workdir
    self.is_image = dataset.is_image
    self.primary = jax.process_index() == 0
    if not self.primary:
      self.writer = writers.NullWriter()
      return
    self.writer = writers.MetricWriter(workdir, start=start)
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json(indent=2))
    rng = np.random.default_rng(config.seed)
    real = dataset.examples[rng.choice(len(dataset), min(len(dataset),
                                                         config.num_samples),
                                       replace=False)]
    self.real = real
    if self.is_image:
      visualize.save_image_grid(self.path('samples', 'real.png'), real)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def samples(self, gen_iter: int, fake: np.ndarray) -> str:
    if self.is_image:
      path = self.path('samples', f'fake_{gen_iter:06d}.png')
      visualize.save_image_grid(path, fake)
    else:
      path = self.path('samples', f'scatter_{gen_iter:06d}.png')
      visualize.save_scatter(path, fake, self.real,
                             title=f'{self.config.dataset}, iteration {gen_iter}')
    return path

  def curve(self) -> str | None:
    if not self.primary:
      return None
    records = writers.read_metrics(self.writer.path)
    path = self.path('wasserstein.png')
    if records:
      visualize.save_curve(
          path, np.array([r['gen_iter'] for r in records]),
          np.array([r['wasserstein'] for r in records]),
          ylabel='Wasserstein estimate  E f(real) - E f(fake)',
          title=f'WGAN on {self.config.dataset}')
    return path


def make_sampler_fn(config, data_shape):
  """jit'd G(z) in training-mode BatchNorm (batch statistics), as the
  reference draws its sample grids; running statistics are left alone."""
  generator = models.make_generator(config, data_shape)

  @jax.jit
  def sample(variables, z):
    out, _ = generator.apply(variables, z, train=True, mutable=['batch_stats'])
    return out

  return sample


def initial_randomness(config):
  """(the key that initialises the networks, the fixed noise of the sample grids)."""
  init_key, noise_key = jax.random.split(root_key(config))
  return init_key, jax.random.normal(noise_key, (config.num_samples, config.nz))


def train(config, workdir: str, on_samples=None) -> WGANState:
  """Trains per ``config``, writing outputs to ``workdir``; returns the final state.

  Starts from the newest checkpoint in ``workdir`` if there is one. Each time
  it writes a sample grid (every ``config.sample_every`` generator
  iterations), it calls ``on_samples(gen_iter, grid_png, curve_png)`` if
  given (a notebook shows them there).
  """
  validate(config)
  devices = parallel.mapped_devices(config.num_devices)
  parallel.per_device_batch(config.batch_size, len(devices))
  prepare_workdir(workdir)
  dataset = input_pipeline.get_dataset(config)
  init_key, fixed_noise = initial_randomness(config)
  state = create_state(config, dataset.data_shape, init_key,
                       axis_name=parallel.AXIS)
  ckpt = checkpoints.Checkpointer(workdir, config, dataset.data_shape)
  restored = ckpt.restore(state, fixed_noise)
  start, consumed = 0, 0  # generator iterations done, real batches used
  if restored:
    state, fixed_noise = restored.state, restored.fixed_noise
    start, consumed = restored.step, restored.data_position
    logging.info('Resuming from the checkpoint of generator iteration %d in %s.',
                 start, ckpt.path)
  sample = make_sampler_fn(config, dataset.data_shape)
  iteration = parallel.TrainIteration(config, devices)
  logging.info('Training on %d %s device(s), %d examples of shape %s, '
               'iteration mode %s.', len(devices), devices[0].platform,
               len(dataset), dataset.data_shape, iteration.mode)

  outputs = Outputs(config, workdir, dataset, start)
  source = input_pipeline.make_source(dataset, config, devices)
  p_state = parallel.replicate(state, devices)

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=config.num_gen_iters, initial=start, unit='it',
             desc=f'WGAN {config.dataset}',
             disable=not (config.progress_bar and outputs.primary),
             dynamic_ncols=True, file=sys.stderr)
  pending = []
  t0 = time.perf_counter()
  try:
    for gen_iter in range(start, config.num_gen_iters):
      n_critic = steps.critic_iterations(gen_iter, config)
      p_state, metrics = iteration(p_state, *source.batches(consumed, n_critic))
      consumed += n_critic
      pending.append((gen_iter + 1, metrics))
      done = gen_iter + 1
      last = done == config.num_gen_iters
      save = last or (config.checkpoint_every and done % config.checkpoint_every == 0)
      if (done % config.log_every == 0 or done % config.sample_every == 0 or last
          or save):
        latest = _flush(outputs.writer, pending, ckpt.check_metrics)
        bar.set_postfix(W=f'{latest["wasserstein"]:.4f}',
                        loss_G=f'{latest["generator_loss"]:.4f}')
      bar.update(1)
      if outputs.primary and (done % config.sample_every == 0 or last):
        variables = parallel.unreplicate(p_state.generator.variables)
        grid = outputs.samples(done, np.asarray(sample(variables, fixed_noise)))
        curve = outputs.curve()
        if on_samples is not None:
          on_samples(done, grid, curve)
      if save:
        ckpt.save(done, parallel.unreplicate(p_state), fixed_noise, consumed)
  finally:
    bar.close()
    if pending:
      _flush(outputs.writer, pending)
    outputs.writer.close()
    ckpt.close()  # waits for the checkpoint being written
  seconds = time.perf_counter() - t0
  curve = outputs.curve()
  final = parallel.unreplicate(p_state)
  if outputs.primary:
    logging.info('Done: %d generator iterations in %.1f s. Samples in %s, '
                 'metrics in %s, curve in %s.', max(0, config.num_gen_iters - start),
                 seconds, outputs.path('samples'), outputs.writer.path, curve)
  return final


def _flush(writer: writers.MetricWriter, pending, check=None) -> dict[str, float]:
  """Writes (and empties) the pending metrics, then ``check``s each record."""
  fetched = jax.device_get([m for _, m in pending])
  records = [(step, {k: float(v[0]) for k, v in metrics.items()})
             for (step, _), metrics in zip(pending, fetched)]
  pending.clear()
  for step, scalars in records:
    writer.write(step, scalars)
  writer.flush()
  for step, scalars in records:
    if check is not None:
      check(step, scalars)
  return records[-1][1]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.initialize_distributed()
  workdir = FLAGS.workdir or os.path.join(
      'runs', FLAGS.dataset or (FLAGS.config or cli.DEFAULTS).dataset)
  # Resuming (or continuing an imported run): the saved options, changed only
  # by the flags given now.
  base = None if FLAGS.config is not None else checkpoints.saved_config(workdir)
  if base is not None:
    logging.info('Using the options of the run in %s, with the flags given.', workdir)
  train(cli.build_config(base=base), workdir)


if __name__ == '__main__':
  cli.define_config_flags()
  cli.define_distributed_flags()
  flags.DEFINE_string('workdir', None, 'Directory for samples, metrics, plots and '
                      'checkpoints; a run resumes from the checkpoints there '
                      '(default: runs/<dataset>).')
  flags.adopt_module_key_flags(cli)
  app.run(cli.user_errors(main))
