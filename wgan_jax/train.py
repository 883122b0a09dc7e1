r"""Train a Wasserstein GAN: ``python -m wgan_jax.train --dataset=NAME --workdir=DIR``.

With no flags it trains a DCGAN WGAN on the embedded handwritten digits and
writes sample grids, metrics and a curve of the Wasserstein estimate to
``runs/digits``. Every option of the reference code has a flag; ``--config``
takes an ml_collections config file for the rest (``--config.FIELD=VALUE``
overrides one field of it).
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from wgan_jax import cli, input_pipeline, models, parallel, runtime, steps, visualize, writers
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState, create_state, root_key

FLAGS = flags.FLAGS


def validate(config) -> None:
  """Raises UserError for settings that cannot work, naming the fix."""
  positive = ('batch_size', 'nz', 'ngf', 'ndf', 'n_critic', 'n_critic_warmup',
              'sample_every', 'num_samples', 'log_every')
  for name in positive:
    if config[name] <= 0:
      raise UserError(f'--{name}={config[name]}: must be positive.')
  for name in ('num_gen_iters', 'n_extra_layers', 'warmup_gen_iters',
               'boost_every', 'channels', 'num_devices'):
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
    probe = os.path.join(workdir, '.write_test')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'cannot write to --workdir={workdir} ({e.strerror}); '
                    'choose a directory you can write to.') from e


class Outputs:
  """What a run leaves in its workdir, apart from checkpoints."""

  def __init__(self, config, workdir: str, dataset: input_pipeline.Dataset):
    self.config = config
    self.workdir = workdir
    self.is_image = dataset.is_image
    self.writer = writers.MetricWriter(workdir)
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

  def curve(self) -> str:
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


def train(config, workdir: str) -> WGANState:
  """Trains per ``config``, writing outputs to ``workdir``; returns the final state."""
  validate(config)
  runtime.configure(config)
  devices = parallel.local_devices(config.num_devices)
  parallel.per_device_batch(config.batch_size, len(devices))
  prepare_workdir(workdir)
  dataset = input_pipeline.get_dataset(config)
  init_key, noise_key = jax.random.split(root_key(config))
  state = create_state(config, dataset.data_shape, init_key,
                       axis_name=parallel.AXIS)
  fixed_noise = jax.random.normal(noise_key, (config.num_samples, config.nz))
  sample = make_sampler_fn(config, dataset.data_shape)
  iteration = parallel.TrainIteration(config, devices)
  logging.info('Training on %d %s device(s), %d examples of shape %s, '
               'iteration mode %s.', len(devices), devices[0].platform,
               len(dataset), dataset.data_shape, iteration.mode)

  outputs = Outputs(config, workdir, dataset)
  source = input_pipeline.make_source(dataset, config, devices)
  p_state = parallel.replicate(state, devices)
  start = 0
  consumed = steps.critic_steps_before(start, config)

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=config.num_gen_iters, initial=start, unit='it',
             desc=f'WGAN {config.dataset}', disable=not config.progress_bar,
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
      if done % config.log_every == 0 or done % config.sample_every == 0 or last:
        latest = _flush(outputs.writer, pending)
        pending = []
        bar.set_postfix(W=f'{latest["wasserstein"]:.4f}',
                        loss_G=f'{latest["generator_loss"]:.4f}')
      bar.update(1)
      if done % config.sample_every == 0 or last:
        variables = parallel.unreplicate(p_state.generator.variables)
        outputs.samples(done, np.asarray(sample(variables, fixed_noise)))
  finally:
    bar.close()
    if pending:
      _flush(outputs.writer, pending)
    outputs.writer.close()
  seconds = time.perf_counter() - t0
  curve = outputs.curve()
  final = parallel.unreplicate(p_state)
  logging.info('Done: %d generator iterations in %.1f s. Samples in %s, '
               'metrics in %s, curve in %s.', config.num_gen_iters - start,
               seconds, outputs.path('samples'), outputs.writer.path, curve)
  return final


def _flush(writer: writers.MetricWriter, pending) -> dict[str, float]:
  fetched = jax.device_get([m for _, m in pending])
  latest = {}
  for (step, _), metrics in zip(pending, fetched):
    latest = {k: float(v[0]) for k, v in metrics.items()}
    writer.write(step, latest)
  writer.flush()
  return latest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.build_config()
  train(config, FLAGS.workdir or os.path.join('runs', config.dataset))


if __name__ == '__main__':
  cli.define_config_flags()
  flags.DEFINE_string('workdir', None, 'Directory for samples, metrics and plots '
                      '(default: runs/<dataset>).')
  flags.adopt_module_key_flags(cli)
  app.run(cli.user_errors(main))
