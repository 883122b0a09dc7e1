r"""Train a Wasserstein GAN: ``python -m wgan_jax.train --dataset=NAME --workdir=DIR``.

With no flags it trains a DCGAN WGAN on the embedded handwritten digits and
writes sample grids, metrics and a curve of the Wasserstein estimate to
``runs/digits``. Every option of the reference code has a flag; ``--config``
takes an ml_collections config file for the rest (``--config.FIELD=VALUE``
overrides one field of it). Running it again with the same ``--workdir``
resumes from the newest checkpoint there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from wgan_jax import (checkpoints, cli, configs, data, models, parallel, preemption,
                      runtime, seed_processes, seeds, steps, visualize, writers)
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState, create_state, create_states, initial_randomness

FLAGS = flags.FLAGS


validate = configs.validate  # the one check of a config


def prepare_workdir(workdir: str, samples: bool = True) -> None:
  try:
    os.makedirs(os.path.join(workdir, 'samples' if samples else ''), exist_ok=True)
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

  def __init__(self, config, workdir: str, dataset: data.Dataset,
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
    metric, filename, ylabel, name = CURVES[self.config.loss]
    path = self.path(filename)
    if records:
      visualize.save_curve(
          path, np.array([r['gen_iter'] for r in records]),
          np.array([r[metric] for r in records]),
          ylabel=ylabel, title=f'{name} on {self.config.dataset}')
    return path


# Per loss: the metric a run's curve plots, its file, its label, the method.
CURVES = {
    'wgan': ('wasserstein', 'wasserstein.png',
             'Wasserstein estimate  E f(real) - E f(fake)', 'WGAN'),
    'wgan-gp': ('wasserstein', 'wasserstein.png',
                'Wasserstein estimate  E f(real) - E f(fake)', 'WGAN-GP'),
    'gan': ('critic_loss', 'discriminator_loss.png',
            'Discriminator loss  -E log D(real) - E log(1 - D(fake))', 'GAN'),
}


def seed_workdir(workdir: str, seed: int) -> str:
  """Where seed ``seed`` of a ``--num_seeds`` run writes: a workdir of its own."""
  return os.path.join(workdir, f'seed_{seed}')


def seed_config(config, seed: int):
  """The config of one seed of a ``--num_seeds`` run: that of a single run
  with ``--seed=seed`` (what the seed's workdir holds and resumes with)."""
  config = config.copy_and_resolve_references()
  config.seed, config.num_seeds = seed, 1
  return config


def _write_seeds_config(config, workdir: str) -> None:
  """The config of a run of seeds, at the top of its workdir."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json(indent=2))


def _check_workdir_kind(config, workdir: str) -> None:
  """Refuses to mix a single run and a run of several seeds in one workdir."""
  saved = os.path.join(workdir, 'config.json')
  if config.num_seeds == 1 and os.path.exists(saved):
    with open(saved, encoding='utf-8') as f:
      num_seeds = json.load(f).get('num_seeds', 1)
    if num_seeds > 1:
      raise UserError(
          f'--workdir={workdir} holds a run of {num_seeds} seeds: pass '
          f'--num_seeds={num_seeds} to resume it, or --workdir={workdir}/seed_S '
          'for one seed S of it.')
  if config.num_seeds > 1 and os.path.isdir(checkpoints.directory(workdir)):
    raise UserError(f'--workdir={workdir} holds a single run: pass another '
                    f'--workdir for --num_seeds={config.num_seeds}.')


def train(config, workdir: str, on_samples=None, on_iteration=None) -> WGANState:
  """Trains per ``config``, writing outputs to ``workdir``; returns the final state.

  Starts from the newest checkpoint in ``workdir`` if there is one. With
  ``config.num_seeds`` K > 1, trains seeds ``config.seed + k`` at once, each
  writing to ``seed_workdir(workdir, seed)`` what a single run with that seed
  writes to its workdir; the returned state then has a leading seed axis.
  Each time it writes sample grids (every ``config.sample_every`` generator
  iterations), it calls ``on_samples(gen_iter, grid_png, curve_png)`` if
  given, with the first seed's files (a notebook shows them there), and
  after each generator iteration ``on_iteration(gen_iters_done)`` if given.
  ``config.seeds_mode`` 'processes' trains each seed in a process of its
  own (``wgan_jax.seed_processes``).

  On SIGTERM or SIGINT it finishes the generator iteration in progress,
  saves a checkpoint and raises ``preemption.Interrupted`` (see ``preemption.StopRequests``). A
  file it cannot write stops it with a UserError naming the file.
  """
  validate(config)
  runtime.configure(config)
  devices = parallel.mapped_devices(config.num_devices)
  parallel.per_device_batch(config.batch_size, len(devices))
  seeded = config.num_seeds > 1
  prepare_workdir(workdir, samples=not seeded)
  _check_workdir_kind(config, workdir)
  dataset = data.get_dataset(config)
  if seeded and seeds.resolve_mode(config.seeds_mode, config) == 'processes':
    if jax.process_count() > 1:
      raise UserError('--seeds_mode=processes trains on one machine: choose another '
                      '--seeds_mode for a multi-process run.')
    _write_seeds_config(config, workdir)
    return seed_processes.train(config, workdir, dataset.data_shape, on_samples)
  if seeded:
    runs = [(seed_config(config, s), seed_workdir(workdir, s))
            for s in range(config.seed, config.seed + config.num_seeds)]
    for _, run_dir in runs:
      prepare_workdir(run_dir)
    _write_seeds_config(config, workdir)
  else:
    runs = [(config, workdir)]
  keys = [initial_randomness(c) for c, _ in runs]
  if seeded:
    state = create_states(config, dataset.data_shape,
                          jnp.stack([k[0] for k in keys]),
                          axis_name=parallel.AXIS)
  else:
    state = create_state(config, dataset.data_shape, keys[0][0],
                         axis_name=parallel.AXIS)
  fixed_noise = [k[1] for k in keys]
  ckpts = [checkpoints.Checkpointer(run_dir, c, dataset.data_shape)
           for c, run_dir in runs]
  state, fixed_noise, start, consumed = _resume(ckpts, state, fixed_noise, seeded)
  sample = models.generator_fn(config, dataset.data_shape)
  iteration = parallel.TrainIteration(config, devices)
  logging.info('Training on %d %s device(s), %d examples of shape %s, '
               'iteration mode %s%s.', len(devices), devices[0].platform,
               len(dataset), dataset.data_shape, iteration.mode,
               f', {config.num_seeds} seeds at once' if seeded else '')

  outputs = [Outputs(c, run_dir, dataset, start) for c, run_dir in runs]
  primary = outputs[0].primary
  source = parallel.make_source(dataset, config, devices)
  p_state = parallel.replicate(state, devices)
  seed_of = ((lambda tree, k: jax.tree.map(lambda x: x[k], tree)) if seeded
             else (lambda tree, k: tree))
  metric, label = ('critic_loss', 'loss_D') if config.loss == 'gan' else (
      'wasserstein', 'W')

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=config.num_gen_iters, initial=start, unit='it',
             desc=f'{CURVES[config.loss][3]} {config.dataset}',
             disable=not (config.progress_bar and primary),
             dynamic_ncols=True, file=sys.stderr)
  metric_writers = [o.writer for o in outputs]
  checks = [c.check_metrics for c in ckpts]
  pending = []
  stopped = None
  t0 = time.perf_counter()
  stop = preemption.StopRequests()
  try:
    for gen_iter in range(start, config.num_gen_iters):
      n_critic = steps.critic_iterations(gen_iter, config)
      p_state, metrics = iteration(p_state, *source.batches(consumed, n_critic))
      consumed += n_critic
      pending.append((gen_iter + 1, metrics))
      done = gen_iter + 1
      last = done == config.num_gen_iters
      stopping = not last and stop.stop_after(done, config.log_every)
      save = last or stopping or (config.checkpoint_every
                                  and done % config.checkpoint_every == 0)
      if (done % config.log_every == 0 or done % config.sample_every == 0 or last
          or save):
        latest = _flush(metric_writers, pending, checks, seeded)
        bar.set_postfix({label: f'{latest[metric]:.4f}',
                         'loss_G': f'{latest["generator_loss"]:.4f}'})
      bar.update(1)
      if on_iteration is not None:
        on_iteration(done)
      if primary and (done % config.sample_every == 0 or last):
        variables = parallel.unreplicate(p_state.generator.variables)
        grids = [out.samples(done, np.asarray(sample(seed_of(variables, k),
                                                     fixed_noise[k])))
                 for k, out in enumerate(outputs)]
        curves = [out.curve() for out in outputs]
        if on_samples is not None:
          on_samples(done, grids[0], curves[0])
      if save:
        host = jax.device_get(parallel.unreplicate(p_state))
        for k, ckpt in enumerate(ckpts):
          ckpt.save(done, seed_of(host, k), fixed_noise[k], consumed)
      if stopping:
        stopped = done
        break
    curves = [out.curve() for out in outputs]
  except OSError as e:  # a sample, plot or metrics file (checkpoints: UserError)
    _raise_write_error(e, ckpts, workdir)
  finally:
    failing = sys.exc_info()[1]
    stop.restore()
    bar.close()
    try:
      if pending:
        _flush(metric_writers, pending, seeded=seeded)
      for out in outputs:
        out.writer.close()
    except OSError as e:
      if failing is None:  # (else the first failure is reported)
        _raise_write_error(e, ckpts, workdir)
    for ckpt in ckpts:
      ckpt.close()  # waits for the checkpoint being written
  if stopped is not None:
    signame = (signal.Signals(stop.signum).name if stop.signum
               else 'a signal to another process')
    raise preemption.Interrupted(
        f'Stopped by {signame} after generator iteration {stopped} of '
        f'{config.num_gen_iters}, saved in {ckpts[0].path}; resume with: '
        f'python -m wgan_jax.train --workdir={workdir}',
        130 if stop.signum == signal.SIGINT else 0, stopped)
  seconds = time.perf_counter() - t0
  final = parallel.unreplicate(p_state)
  if primary:
    logging.info('Done: %d generator iterations in %.1f s. Samples in %s, '
                 'metrics in %s, curve in %s.', max(0, config.num_gen_iters - start),
                 seconds, outputs[0].path('samples'), outputs[0].writer.path,
                 curves[0])
    if seeded:
      logging.info('Likewise for the other seeds, in %s.',
                   ', '.join(run_dir for _, run_dir in runs[1:]))
  return final


def _raise_write_error(error: OSError, ckpts, workdir: str) -> None:
  """Raises a failed write of an output (a file in ``workdir``) as a one-line
  UserError: the path, the cause, the way on; other OSErrors as they are."""
  if not (error.filename and os.path.abspath(str(error.filename)).startswith(
      os.path.abspath(workdir) + os.sep)):
    raise error
  latest = None
  for ckpt in ckpts:
    try:
      ckpt.wait()
    except UserError:
      pass
    latest = ckpt.latest_step()
  path = error.filename
  kept = (f'the last complete checkpoint, iteration {latest}, is in {ckpts[0].path}'
          if latest is not None else 'no checkpoint was saved')
  raise UserError(f'could not write {path} ({error.strerror or error}): training '
                  f'stopped; {kept}. Free some space or make the --workdir '
                  'writable, then run again to resume.') from error


def _resume(ckpts, state, fixed_noise, seeded):
  """(state, fixed noise, iterations done, batches used) from the newest
  checkpoint; with seeds, from the newest one every seed has, and checkpoints
  of later iterations (a save the run did not finish for every seed) are
  removed, as the run redoes those iterations."""
  if not seeded:
    restored = ckpts[0].restore(state, fixed_noise[0])
    if not restored:
      return state, fixed_noise, 0, 0
    logging.info('Resuming from the checkpoint of generator iteration %d in %s.',
                 restored.step, ckpts[0].path)
    return (restored.state, [restored.fixed_noise], restored.step,
            restored.data_position)
  for c in ckpts:
    c.set_aside_incomplete()
  saved = [set(c.steps()) for c in ckpts]
  common = sorted(set.intersection(*saved), reverse=True)
  for step in common:
    # (A seed's checkpoint that cannot be read is moved aside, with a warning.)
    restored = [c.restore_step(step, jax.tree.map(lambda x, k=k: x[k], state),
                               fixed_noise[k], or_none=True)
                for k, c in enumerate(ckpts)]
    if any(r is None for r in restored):
      continue
    _discard_after(ckpts, step)
    logging.info('Resuming %d seeds from their checkpoints of generator '
                 'iteration %d in %s.', len(ckpts), step,
                 os.path.dirname(os.path.dirname(ckpts[0].path)))
    state = jax.tree.map(lambda *xs: np.stack(xs), *[r.state for r in restored])
    return (state, [r.fixed_noise for r in restored], step,
            restored[0].data_position)
  if any(saved):
    logging.warning('The seeds have no checkpoint in common: starting all of '
                    'them again.')
  _discard_after(ckpts, -1)
  return state, fixed_noise, 0, 0


def _discard_after(ckpts, step: int) -> None:
  for ckpt in ckpts:
    for later in [s for s in ckpt.steps() if s > step]:
      ckpt.delete(later)


def _flush(metric_writers, pending, checks=None, seeded=False) -> dict[str, float]:
  """Writes (and empties) the pending metrics, one writer per seed, then
  ``checks`` each record; returns the first seed's newest record."""
  fetched = jax.device_get([m for _, m in pending])
  steps_done = [step for step, _ in pending]
  pending.clear()
  per_seed = []
  for k, writer in enumerate(metric_writers):
    records = [(step, {name: float(v[0][k] if seeded else v[0])
                       for name, v in metrics.items()})
               for step, metrics in zip(steps_done, fetched)]
    for step, scalars in records:
      writer.write(step, scalars)
    writer.flush()
    per_seed.append(records)
  for k, records in enumerate(per_seed):
    for step, scalars in records:
      if checks is not None:
        checks[k](step, scalars)
  return per_seed[0][-1][1]


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
  try:
    train(cli.build_config(base=base), workdir)
  except preemption.Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_status)


if __name__ == '__main__':
  cli.define_config_flags()
  cli.define_distributed_flags()
  flags.DEFINE_string('workdir', None, 'Directory for samples, metrics, plots and '
                      'checkpoints; a run resumes from the checkpoints there '
                      '(default: runs/<dataset>).')
  flags.adopt_module_key_flags(cli)
  app.run(cli.user_errors(main))
