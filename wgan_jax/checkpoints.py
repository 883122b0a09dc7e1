"""Checkpoints of a run (orbax): save, find the newest complete one, restore.

A checkpoint, ``WORKDIR/checkpoints/<gen_iter>/``, holds everything a resumed
run needs:

* ``state``: the arrays of ``WGANState`` (both networks' parameters and
  BatchNorm statistics, both optimiser states and step counters, the
  generator-iteration counter, the run's key) and the fixed sampling noise;
* ``meta``: the generator iteration, the input pipeline's position (real
  batches consumed so far) and the shape of one example;
* ``config``: the run's configuration, as JSON.

Saving is asynchronous: the state is copied to the host, then written in the
background while training goes on. orbax writes each checkpoint under a
temporary name and renames it when complete, so a run killed at any moment
(even mid-save) leaves only complete checkpoints under their final names;
the temporary leftovers are ignored and removed on the next start. A state
with non-finite numbers is never saved.

A checkpoint folder that is not complete (no commit marker, as a copy cut
short leaves it) or cannot be read (a damaged file) is skipped with one
warning; a training run also moves it aside, to ``<step>.corrupt-<time>``
(never deleted), so that the run can save that iteration again. Readers
(``wgan_jax.generate``, ``wgan_jax.evaluate``) only skip it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from wgan_jax import configs, errors, parallel
from wgan_jax.errors import UserError
from wgan_jax.state import WGANState

DIRNAME = 'checkpoints'

def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config of the newest readable checkpoint in ``workdir`` (None if none)."""
  if not os.path.isdir(directory(workdir)):
    return None
  _quiet_closed_loop_callbacks()
  manager = ocp.CheckpointManager(directory(workdir), item_names=('config',),
                                  options=ocp.CheckpointManagerOptions(create=False))
  for step in sorted(manager.all_steps(), reverse=True):
    if not is_complete(os.path.join(directory(workdir), str(step))):
      continue
    try:
      config = manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))['config']
    except Exception:  # pylint: disable=broad-except
      continue  # (the run's own restore names it)
    return ml_collections.ConfigDict(dict(config))
  return None


# What orbax writes into every checkpoint folder, the commit marker last
# (where renaming is not atomic it is the only sign of a complete write).
COMPLETE_MARKERS = ('_CHECKPOINT_METADATA', 'commit_success.txt', 'state', 'meta',
                    'config')


def is_complete(step_dir: str) -> bool:
  """Whether a checkpoint folder holds all a finished save writes."""
  return all(os.path.exists(os.path.join(step_dir, name))
             for name in COMPLETE_MARKERS)


_hook_lock = threading.Lock()
_hook_installed = False


def _quiet_closed_loop_callbacks() -> None:
  """Drops the 'Event loop is closed' errors of reads orbax left behind.

  orbax restores on a fresh asyncio event loop that it closes when the
  restore returns; when a read fails (a damaged checkpoint), the restore
  raises at once while tensorstore still has reads of the same checkpoint in
  flight, and each of those, on completing, calls ``call_soon_threadsafe`` on
  the closed loop. Python reports that as an unraisable exception (a
  traceback on stderr, nothing raised anywhere). Those reads are of a
  checkpoint already given up: only exactly that error is dropped; every
  other unraisable exception still goes to the previous hook.
  """
  global _hook_installed
  with _hook_lock:
    if _hook_installed:
      return
    previous = sys.unraisablehook

    def hook(unraisable):
      error = unraisable.exc_value
      tb = unraisable.exc_traceback
      while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
      if (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
          and unraisable.object is None and tb is not None
          and tb.tb_frame.f_code.co_name == '_check_closed'):
        return
      previous(unraisable)

    sys.unraisablehook = hook
    _hook_installed = True


def directory(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, DIRNAME))


@dataclasses.dataclass
class Restored:
  """A checkpoint read back: the state's arrays are on the host (numpy)."""
  step: int  # generator iterations done
  state: WGANState
  fixed_noise: np.ndarray
  data_position: int  # real batches (critic steps) consumed
  config: dict


@dataclasses.dataclass
class Generator:
  """What generating needs from a checkpoint."""
  step: int
  config: ml_collections.ConfigDict
  data_shape: tuple[int, ...]
  variables: dict  # the generator's params and batch_stats (numpy)


class UnreadableError(UserError):
  """A checkpoint's files are damaged or missing."""


class NonFiniteError(UserError):
  """Training produced NaN or infinity; the last checkpoint is left intact."""


class Checkpointer:
  """Saves and restores the checkpoints of the run in ``workdir``.

  ``config`` and ``data_shape`` (one example's) are the run's; without them
  the checkpointer only reads (``wgan_jax.generate``). Every process of a
  multi-process run makes one and calls ``save`` with the same arguments; the
  arrays go to orbax as host (numpy) arrays, which it writes from process 0
  only, and every process reads them back.
  """

  def __init__(self, workdir: str, config=None, data_shape=None):
    self.workdir = workdir
    self.path = directory(workdir)
    self.config = config
    self.data_shape = None if data_shape is None else list(data_shape)
    self._pending: int | None = None
    self._skipped: set[int] = set()  # (warned about once)
    read_only = self.read_only = config is None
    _quiet_closed_loop_callbacks()
    if read_only and not os.path.isdir(self.path):
      raise UserError(f'no checkpoints in {self.path}; train first with '
                      f'python -m wgan_jax.train --workdir={workdir}.')
    # (Not orbax's read_only, which warns each time; a reader never saves.)
    options = ocp.CheckpointManagerOptions(
        create=not read_only,
        preservation_policy=(None if read_only else ocp.checkpoint_managers
                             .LatestN(config.keep_checkpoints)),
        # Saves killed mid-way leave '<step>.orbax-checkpoint-tmp*' folders:
        # never taken for checkpoints, removed here.
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True)
    if not read_only:
      try:
        os.makedirs(self.path, exist_ok=True)
      except OSError as e:
        raise UserError(f'cannot use {self.path} for checkpoints ({e.strerror}); '
                        'choose a --workdir you can write to.') from e
    self._manager = ocp.CheckpointManager(
        self.path, options=options, item_names=('state', 'meta', 'config'))

  def steps(self) -> list[int]:
    """The generator iterations of the complete checkpoints, oldest first.

    A reader warns once about each incomplete one (a trainer moves them aside
    first: ``set_aside_incomplete``)."""
    steps = []
    for step in sorted(self._manager.all_steps()):
      if is_complete(self._step_dir(step)):
        steps.append(step)
      elif self.read_only and step not in self._skipped:
        self._skipped.add(step)
        logging.warning('Checkpoint %d in %s is incomplete (no commit marker); '
                        'skipped.', step, self.path)
    return steps

  def set_aside_incomplete(self) -> None:
    """Moves aside the checkpoint folders a save did not finish (a trainer
    calls it before restoring, with no save of its own in flight)."""
    incomplete = [step for step in sorted(self._manager.all_steps())
                  if not is_complete(self._step_dir(step))]
    if jax.process_count() > 1:  # every process has looked before any moves
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('wgan_jax incomplete checkpoints')
    for step in incomplete:
      self.set_aside(step, 'is incomplete (no commit marker)')

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.path, str(step))

  def set_aside(self, step: int, what: str) -> None:
    """One warning line; a trainer also renames the folder to
    ``<step>.corrupt-<time>`` (kept for inspection, never deleted), so that
    the run can save that iteration again; a reader only skips it."""
    if self.read_only:
      if step not in self._skipped:
        self._skipped.add(step)
        logging.warning('Checkpoint %d in %s %s; skipped.', step, self.path, what)
      return
    source = self._step_dir(step)
    target = f'{source}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}'
    for n in range(1, 100):  # (the same step, twice in one second)
      if not os.path.exists(target):
        break
      target = f'{source}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}-{n}'
    if jax.process_index() == 0:
      try:
        os.rename(source, target)
      except OSError as e:
        raise UserError(f'checkpoint {step} in {self.path} {what}, and it cannot '
                        f'be moved aside to {target} ({e.strerror}): move or '
                        'remove it by hand, then run again.') from e
    logging.warning('Checkpoint %d in %s %s: moved aside to %s; training goes on '
                    'from an older one.', step, self.path, what, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'wgan_jax set aside {step}')
    self._manager.reload()

  def latest_step(self) -> int | None:
    steps = self.steps()
    return steps[-1] if steps else None

  def restore(self, template: WGANState, fixed_noise) -> Restored | None:
    """The newest readable checkpoint, into ``template``'s structure; ``None``
    if none.

    Refuses (UserError) a run config that changes the shapes the checkpoint
    was saved with; warns about other changes. A checkpoint that is
    incomplete or cannot be read (a damaged or removed file) is moved aside
    (``set_aside``) for the one before it.
    """
    self.set_aside_incomplete()
    steps = self.steps()
    self._same_on_every_process(steps)
    for step in steps[::-1]:
      restored = self.restore_step(step, template, fixed_noise, or_none=True)
      if restored is not None:
        return restored
    return None

  def restore_step(self, step: int, template: WGANState, fixed_noise,
                   or_none: bool = False) -> Restored | None:
    """The checkpoint of iteration ``step`` (see ``restore``); if it cannot be
    read, raises, or (``or_none``) sets it aside and returns None. Every
    process agrees: one that cannot read it sets it aside for all."""
    self._same_on_every_process(self.steps())
    restored, error = None, None
    try:
      restored = self._restore(step, template, fixed_noise)
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      error = e
    if not parallel.any_process(error is not None):
      return restored
    if not or_none:
      raise error or ValueError(f'checkpoint {step} cannot be read by another process')
    self.set_aside(step, 'cannot be read (' + (
        errors.first_line(error) if error else 'by another process') + ')')
    return None

  def delete(self, step: int) -> None:
    """Removes the checkpoint of iteration ``step``."""
    self._guarded(lambda: self._manager.delete(step))

  def generator(self, step: int | None = None) -> Generator:
    """The generator of the newest checkpoint (or of ``step``), as saved:
    no optimiser or critic is built."""
    steps = self.steps()
    if not steps:
      raise UserError(f'no checkpoints in {self.path}; train first with '
                      f'python -m wgan_jax.train --workdir={self.workdir}.')
    if step is None:  # the newest readable one
      for newer in steps[:0:-1]:
        try:
          return self.generator(newer)
        except UnreadableError as e:
          self.set_aside(newer, f'cannot be read ({errors.first_line(e.__cause__)})')
      step = steps[0]
    if step not in steps:
      raise UserError(f'no checkpoint of iteration {step} in {self.path}; '
                      f'there are {steps}.')
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore(),
          config=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableError(f'checkpoint {step} in {self.path} cannot be read '
                            f'({errors.first_line(e)}).') from e
    generator = restored['state']['state']['generator']
    return Generator(
        step=step, config=ml_collections.ConfigDict(dict(restored['config'])),
        data_shape=tuple(restored['meta']['data_shape']),
        variables={'params': generator['params'],
                   'batch_stats': generator.get('batch_stats') or {}})

  def _same_on_every_process(self, steps: list[int]) -> None:
    """Refuses processes that see different checkpoints (a workdir that is
    not one shared folder): they would silently train different states."""
    if jax.process_count() == 1:
      return
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    newest = np.int32(steps[-1] if steps else -1)
    seen = np.asarray(multihost_utils.process_allgather(newest)).ravel().tolist()
    if len(set(seen)) > 1:
      raise UserError(
          f'the processes see different checkpoints in {self.path} (newest: '
          f'{", ".join(str(s) if s >= 0 else "none" for s in seen)}): --workdir '
          'must be one folder that every process sees, on a shared file system.')

  def _restore(self, step, template, fixed_noise) -> Restored:
    saved = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
    meta, saved_config = saved['meta'], dict(saved['config'])
    shape, other = configs.config_changes(saved_config, self.config)
    if meta['data_shape'] != self.data_shape:
      shape.append(f'data shape {tuple(meta["data_shape"])} -> '
                   f'{tuple(self.data_shape)}')
    if shape:
      raise UserError(
          f'{self.path} holds a run with other shapes ({"; ".join(shape)}): '
          'resume with the same options, or pass another --workdir.')
    if other:
      logging.warning('Resuming with changed options: %s.', '; '.join(other))
    target = {'state': serialization.to_state_dict(template),
              'fixed_noise': fixed_noise}
    target = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype),
                          target)
    arrays = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']
    shapes = jax.tree.map(np.shape, (target, arrays))
    if shapes[0] != shapes[1] or int(arrays['state']['gen_iter']) != step:
      raise ValueError(f'checkpoint {step} does not hold the state it should')
    return Restored(
        step=step,
        state=serialization.from_state_dict(template, arrays['state']),
        fixed_noise=np.asarray(arrays['fixed_noise']),
        data_position=int(meta['data_position']),
        config=saved_config)

  def save(self, step: int, state: WGANState, fixed_noise,
           data_position: int) -> None:
    """Starts writing a checkpoint of ``state`` (one device's copy) and returns.

    Raises ``NonFiniteError`` instead of saving non-finite numbers, and a
    UserError when the file system refused the previous checkpoint.
    """
    arrays = jax.device_get({'state': serialization.to_state_dict(state),
                             'fixed_noise': fixed_noise})
    bad = [jax.tree_util.keystr(path) for path, x in
           jax.tree_util.tree_flatten_with_path(arrays['state'])[0]
           if np.issubdtype(np.asarray(x).dtype, np.floating)
           and not np.all(np.isfinite(x))]
    if bad:
      raise NonFiniteError(
          f'non-finite values in {bad[0]} after generator iteration {step}: '
          f'training stopped. {self._last_good()}')
    meta = {'gen_iter': step, 'data_position': data_position,
            'data_shape': self.data_shape}
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta),
        config=ocp.args.JsonSave(json.loads(self.config.to_json())))
    self.wait()  # the previous save's failure is the previous save's
    self._pending = step
    self._guarded(lambda: self._manager.save(step, args=args, force=True))

  def check_metrics(self, step: int, scalars: Mapping[str, float]) -> None:
    """Raises NonFiniteError if a metric of iteration ``step`` is NaN or infinite."""
    bad = sorted(k for k, v in scalars.items() if not math.isfinite(v))
    if bad:
      raise NonFiniteError(
          f'{bad[0]} is {scalars[bad[0]]} at generator iteration {step}: '
          f'training stopped. {self._last_good()}')

  def _last_good(self) -> str:
    latest = self._latest_complete()
    if latest is None:
      return 'No checkpoint was saved; lower --lr_critic / --lr_gen and start again.'
    return (f'The last checkpoint, iteration {latest}, is intact in {self.path}; '
            'lower --lr_critic / --lr_gen and run again to resume from it.')

  def _latest_complete(self) -> int | None:
    try:
      self.wait()
    except UserError:
      pass
    return self.latest_step()

  def wait(self) -> None:
    """Blocks until the checkpoint being written is complete."""
    self._guarded(self._manager.wait_until_finished)
    self._pending = None

  def close(self) -> None:
    self._guarded(self._manager.close)
    self._pending = None

  def _guarded(self, fn):
    """Runs fn; a refusal of the file system becomes a one-line UserError."""
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if not errors.is_io_error(e):
        raise
      failed, self._pending = self._pending, None
      latest = self.latest_step()
      what = f'the checkpoint of iteration {failed}' if failed else 'a checkpoint'
      kept = (f'the last complete checkpoint is iteration {latest}'
              if latest is not None else 'no checkpoint is complete')
      raise UserError(f'could not write {what} to {self.path} '
                      f'({errors.io_reason(e)}); {kept}. Free some space or pass a '
                      '--workdir you can write to, then run again.') from e
