"""``--seeds_mode=processes``: the K seeds of a run as K training processes.

On a CPU, one seed's convolutions spread over all cores and wait for each
other after every op; K seeds in one program do the same one seed after
another. A process per seed with one core to itself keeps every core busy
without those waits (docs/multihost.md has the measurements). Each process
is the single run of its seed in ``seed_workdir(workdir, seed)``, which is
what a run of seeds writes in every mode, so a run can resume in another.

With K up to the number of cores, each process gets its share of them.
With more, each process runs on one core at a time, and every few seconds
the processes furthest behind move to the cores with the fewest processes,
so that the seeds advance together.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback

from absl import logging

from wgan_jax import runtime
from wgan_jax.errors import UserError

BALANCE_SECONDS = 3.0
_PR_SET_PDEATHSIG = 1


def core_sets(progress, cores) -> list[set[int]]:
  """The cores each process may run on, given the generator iterations each
  has done (``progress``) and the ``cores`` the run may use.

  Up to one process per core: disjoint shares, as even as can be. More
  processes than cores: one core each, those furthest behind on the cores
  that hold the fewest processes.
  """
  k, c = len(progress), len(cores)
  if k <= c:
    return [set(cores[i * c // k:(i + 1) * c // k]) for i in range(k)]
  counts = [k // c + (i < k % c) for i in range(c)]
  slots = [core for n, core in sorted(zip(counts, cores)) for _ in range(n)]
  behind_first = sorted(range(k), key=lambda i: (progress[i], i))
  out = [set()] * k
  for slot, i in zip(slots, behind_first):
    out[i] = {slot}
  return out


def _stop_with_parent() -> None:
  """Has the kernel send this process SIGTERM (stop after the iteration in
  progress and save) if the process that started it dies (Linux)."""
  prctl = getattr(runtime.libc(), 'prctl', None)
  if prctl is not None:  # else (not Linux) a closed pipe stops the seed at its next iteration
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Events:
  """A seed process's reports to the run's process: JSON lines on a pipe."""

  def __init__(self, fd: int):
    self._file = os.fdopen(fd, 'w', buffering=1, encoding='utf-8')
    self._open = True

  def put(self, **event) -> None:
    if not self._open:
      return
    try:
      self._file.write(json.dumps(event) + '\n')
    except OSError:  # (a broken pipe)
      # The run's process is gone: stop after this iteration and save.
      self._open = False
      os.kill(os.getpid(), signal.SIGTERM)


def _seed_process(config_json: str, workdir: str, cores: str, fd: int) -> None:
  """One seed's training (``python -m wgan_jax.seed_processes``)."""
  # Before jax starts: its thread pools take the size of this affinity.
  os.sched_setaffinity(0, {int(c) for c in cores.split(',')})
  # (Not a thread that watches for it: a second Python thread slows jax's
  # dispatch here by a quarter.)
  _stop_with_parent()
  logging.set_verbosity(logging.WARNING)
  import ml_collections  # pylint: disable=g-import-not-at-top

  from wgan_jax import preemption, train  # pylint: disable=g-import-not-at-top

  events = _Events(fd)
  try:
    train.train(ml_collections.ConfigDict(json.loads(config_json)), workdir,
                on_samples=lambda *args: events.put(samples=args),
                on_iteration=lambda done: events.put(it=done))
    events.put(done=True)
  except preemption.Interrupted as e:
    events.put(interrupted=e.gen_iter)
  except UserError as e:
    events.put(error=str(e))
  except BaseException:  # pylint: disable=broad-except
    events.put(crash=traceback.format_exc())


class _Seed:
  """The run's handle on one seed's process."""

  def __init__(self, config, workdir: str, cores: set[int]):
    read, write = os.pipe()
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'wgan_jax.seed_processes', config.to_json(), workdir,
         ','.join(map(str, sorted(cores))), str(write)],
        pass_fds=(write,), start_new_session=True)  # signals come from the run only
    os.close(write)
    self.fd = read
    self._partial = b''
    self.cores = cores
    self.done = 0
    self.outcome: tuple[str, object] | None = None
    self.stop_signal: int | None = None

  def read(self) -> list[dict]:
    """The events that have come in whole (call when the pipe is readable)."""
    data = os.read(self.fd, 1 << 16)
    if not data:  # the pipe closed: the process ended
      self.process.wait()
      if self.outcome is None:
        code = self.process.returncode
        if self.stop_signal is not None and code == -self.stop_signal:
          # Stopped before it could take the signal (starting up): nothing trained to save.
          self.outcome = ('interrupted', 0)
        elif code < 0:  # killed from outside: the out-of-memory killer, a user's kill
          self.outcome = ('killed', -code)
        else:
          self.outcome = ('crash', f'its process ended with exit code {code}')
      return []
    *lines, self._partial = (self._partial + data).split(b'\n')
    return [json.loads(line) for line in lines]

  def stop(self, signum: int) -> None:
    self.stop_signal = signum
    self.process.send_signal(signum)

  def place(self, cores: set[int]) -> None:
    if cores != self.cores and self.process.returncode is None:
      # Every thread's: an affinity is a thread's, not the process's.
      try:
        threads = os.listdir(f'/proc/{self.process.pid}/task')
      except OSError:
        return  # it has just ended
      for tid in threads:
        try:
          os.sched_setaffinity(int(tid), cores)
        except OSError:
          pass  # that thread has just ended
      self.cores = cores


def train(config, workdir: str, data_shape, on_samples=None):
  """Trains seeds ``config.seed + k``, k < ``config.num_seeds``, each in a
  process of its own; returns their final states stacked on a seed axis
  (as ``wgan_jax.train.train`` does for a run of seeds).

  SIGTERM or SIGINT goes to every seed's process, which saves and stops;
  then ``preemption.Interrupted`` is raised. A seed that fails stops the
  others (they save) and its error is raised, naming the seed.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  from wgan_jax import checkpoints, parallel, preemption, state as state_lib  # pylint: disable=g-import-not-at-top
  from wgan_jax import train as train_lib  # pylint: disable=g-import-not-at-top

  seeds = list(range(config.seed, config.seed + config.num_seeds))
  runs = [(train_lib.seed_config(config, s), train_lib.seed_workdir(workdir, s))
          for s in seeds]
  for c, _ in runs:
    c.progress_bar = False
  cores = sorted(os.sched_getaffinity(0))
  logging.info('Training %d seeds in processes of their own on %d core(s).',
               len(runs), len(cores))
  stop = preemption.StopRequests()
  bar = tqdm(total=config.num_gen_iters, unit='it',
             desc=f'{train_lib.CURVES[config.loss][3]} {config.dataset}, '
                  f'{len(runs)} seeds', disable=not config.progress_bar,
             dynamic_ncols=True, file=sys.stderr)
  procs: list[_Seed] = []
  stopping = False
  first_failed = None  # (the others may then end by the signal it sends them)
  try:
    placed = core_sets([0] * len(runs), cores)
    procs = [_Seed(c, run_dir, placed[k]) for k, (c, run_dir) in enumerate(runs)]
    by_fd = {p.fd: p for p in procs}
    last_balance = time.monotonic()
    # Until every pipe has closed (an outcome may come before the last line).
    while any(p.process.returncode is None for p in procs):
      ready, _, _ = select.select([p.fd for p in procs if p.process.returncode is None],
                                  [], [], 0.5)
      for fd in ready:
        p = by_fd[fd]
        for event in p.read():
          if 'it' in event:
            p.done = event['it']
          elif 'samples' in event:
            if on_samples is not None and p is procs[0]:
              on_samples(*event['samples'])
          else:
            (kind, payload), = event.items()
            p.outcome = (kind, payload)
      if first_failed is None:
        first_failed = next((p for p in procs
                             if p.outcome and p.outcome[0] in ('error', 'crash', 'killed')),
                            None)
      if (stop.signum is not None or first_failed) and not stopping:
        stopping = True
        for p in procs:
          if p.outcome is None:
            p.stop(stop.signum or signal.SIGTERM)
      bar.n = min(p.done for p in procs)
      bar.refresh()
      if len(procs) > len(cores) and time.monotonic() - last_balance > BALANCE_SECONDS:
        last_balance = time.monotonic()
        for p, now in zip(procs, core_sets([p.done for p in procs], cores)):
          p.place(now)
  finally:
    bar.close()
    stop.restore()
    for p in procs:
      if p.process.poll() is None:
        p.process.send_signal(signal.SIGTERM)  # (stopped by an error here)
      try:
        p.process.wait(timeout=120)
      except subprocess.TimeoutExpired:
        p.process.kill()
      os.close(p.fd)

  ordered = zip(seeds, procs)
  if first_failed is not None:
    ordered = [(seeds[procs.index(first_failed)], first_failed)]
  for seed, p in ordered:
    kind, payload = p.outcome
    if kind == 'error':
      raise UserError(f'seed {seed}: {payload}')
    if kind == 'killed':
      name = signal.Signals(payload).name
      why = (' (as the out-of-memory killer does: fewer seeds at once, or --seeds_mode=unroll '
             'to train them in one process)') if payload == signal.SIGKILL else ''
      raise UserError(
          f'seed {seed}: its process was killed by {name}{why}; every seed keeps its last '
          f'checkpoint; resume with: python -m wgan_jax.train --workdir={workdir}')
    if kind == 'crash':
      raise RuntimeError(f'seed {seed} failed: {payload}')
  stopped = [p.outcome[1] for p in procs if p.outcome[0] == 'interrupted']
  if stopped:
    signum = stop.signum or signal.SIGTERM
    raise preemption.Interrupted(
        f'Stopped by {signal.Signals(signum).name}; each seed saved its last '
        f'iteration (the earliest {min(stopped)} of {config.num_gen_iters}) in '
        f'{workdir}/seed_S; resume with: python -m wgan_jax.train --workdir={workdir}',
        130 if signum == signal.SIGINT else 0, min(stopped))

  # Each seed's final checkpoint, read as a run of seeds resumes.
  keys = [state_lib.initial_randomness(c) for c, _ in runs]
  template = state_lib.create_states(config, data_shape, jnp.stack([k for k, _ in keys]),
                                     axis_name=parallel.AXIS)
  ckpts = [checkpoints.Checkpointer(run_dir, c, data_shape) for c, run_dir in runs]
  try:
    final, _, _, _ = train_lib._resume(ckpts, template, [n for _, n in keys], True)  # pylint: disable=protected-access
  finally:
    for ckpt in ckpts:
      ckpt.close()
  logging.info('Done: %d seeds, in %s.', len(runs),
               ', '.join(run_dir for _, run_dir in runs))
  return final


if __name__ == '__main__':
  _seed_process(*sys.argv[1:4], int(sys.argv[4]))
