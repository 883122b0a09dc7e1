"""What long runs meet: a damaged or half-written checkpoint, SIGTERM and
SIGINT, a disk that refuses a write. Each ends with one line, and the next
run resumes."""

import errno
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from wgan_jax import checkpoints, generate, train, visualize, writers
from wgan_jax.errors import UserError

from .test_checkpoints import (  # noqa: F401  pylint: disable=unused-import
    _arrays, _cli_flags, _copy, _gen_iters, assert_same_state, template, trained)


def _damage(workdir, step):
  """Overwrites the largest file of a checkpoint's arrays with 100 random bytes."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state', '**'),
                    recursive=True)
  largest = max((f for f in files if os.path.isfile(f)), key=os.path.getsize)
  with open(largest, 'wb') as f:
    f.write(np.random.default_rng(0).bytes(100))


def _set_aside(workdir):
  return sorted(n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                if '.corrupt-' in n)


def _env(tmp_path):
  # Four simulated devices, as in this process (the same programs, the same
  # numbers); a shared compilation cache saves recompiling.
  return {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
          'JAX_COMPILATION_CACHE_DIR': str(tmp_path.parent / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


def _train_cli(args, env, timeout=120):
  result = subprocess.run([sys.executable, '-m', 'wgan_jax.train', *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
  return result.returncode, result.stderr


def _not_info(log):
  """The lines of a log that are not absl INFO lines (warnings, errors, tracebacks)."""
  return [line for line in log.splitlines() if line and not line.startswith('I')]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_finishes(
    trained, template, tmp_path):
  """The issue's reproduction, on the command line: no traceback (not even
  orbax's 'Event loop is closed'), one warning, status 0."""
  config, workdir, whole = _copy(trained, tmp_path)
  _damage(workdir, 8)
  status, log = _train_cli([*_cli_flags(workdir), '--checkpoint_every=2',
                            '--num_gen_iters=10'], _env(tmp_path))
  assert status == 0, log
  assert 'Traceback' not in log and 'Event loop is closed' not in log, log
  warnings = _not_info(log)
  assert len(warnings) == 1, log
  assert 'Checkpoint 8 in ' in warnings[0] and 'cannot be read' in warnings[0]
  assert 'moved aside to ' in warnings[0]
  assert 'Resuming from the checkpoint of generator iteration 6 ' in log
  [aside] = _set_aside(workdir)
  assert aside.startswith('8.corrupt-')  # kept, not deleted
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8, 10]  # (--keep_checkpoints=20)
  # Iterations 7 and 8 redone give the state of before.
  assert_same_state(ckpt.restore_step(8, initial, noise).state, whole)
  assert _gen_iters(workdir) == list(range(1, 11))


def test_a_half_written_checkpoint_is_skipped_and_replaced(trained, template, tmp_path,
                                                           caplog):
  config, workdir, final = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, 'checkpoints', '8', 'commit_success.txt'))
  data_shape, initial, noise = template
  # Readers skip it and leave it where it is.
  with caplog.at_level(logging.WARNING):
    _, restored = generate.generate(workdir, 4, seed=0)
  assert restored.step == 6
  assert [r.getMessage() for r in caplog.records if 'incomplete' in r.getMessage()] == [
      f'Checkpoint 8 in {workdir}/checkpoints is incomplete (no commit marker); skipped.']
  assert not _set_aside(workdir)
  assert checkpoints.saved_config(workdir).num_gen_iters == config.num_gen_iters
  # A run moves it aside, resumes from 6 and saves 8 again.
  caplog.clear()
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(initial, noise)
  assert restored.step == 6
  [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert warning.startswith(f'Checkpoint 8 in {workdir}/checkpoints is incomplete (no '
                            'commit marker): moved aside to ')
  assert [n.split('.')[0] for n in _set_aside(workdir)] == ['8']
  ckpt.save(8, final, noise, 99)
  ckpt.close()
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert_same_state(ckpt.restore(initial, noise).state, final)


def test_evaluate_skips_an_unreadable_checkpoint(trained, tmp_path, caplog):
  from wgan_jax import evaluate
  _, workdir, _ = _copy(trained, tmp_path)
  _damage(workdir, 8)
  with caplog.at_level(logging.WARNING):
    records = evaluate.evaluate(workdir, which='all', num_samples=50, progress=False)
  assert [r['gen_iter'] for r in records] == [4, 6]
  assert any('Checkpoint 8 ' in r.getMessage() and 'cannot be read' in r.getMessage()
             and r.getMessage().endswith('skipped.') for r in caplog.records)
  assert [r['gen_iter'] for r in evaluate.evaluate(workdir, num_samples=50,
                                                   progress=False)] == [6]
  assert not _set_aside(workdir)  # a reader moves nothing


@pytest.mark.slow  # (two runs of a few iterations, each compiling)
@pytest.mark.parametrize('what', ['checkpoint', 'samples'])
def test_a_disk_that_fails_mid_run_stops_it_with_one_line(trained, template, tmp_path,
                                                          monkeypatch, what):
  config, workdir, whole = _copy(trained, tmp_path)
  config.update(num_gen_iters=12, checkpoint_every=2)
  full = os.strerror(errno.ENOSPC)
  if what == 'checkpoint':
    save = ocp.CheckpointManager.save

    def failing(self, step, *args, **kwargs):
      if step >= 10:
        raise OSError(errno.ENOSPC, full, os.path.join(str(self.directory), str(step)))
      return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, 'save', failing)
    expected = (f'could not write the checkpoint of iteration 10 to {workdir}/checkpoints '
                f'({full}); the last complete checkpoint is iteration 8.')
  else:
    atomic_save = visualize._atomic_save  # pylint: disable=protected-access
    path = os.path.join(workdir, 'samples', 'scatter_000010.png')

    def failing(name, write):
      if name == path:
        raise OSError(errno.ENOSPC, full, name + '.tmp')
      return atomic_save(name, write)

    monkeypatch.setattr(visualize, '_atomic_save', failing)
    expected = (f'could not write {path}.tmp ({full}): training stopped; the last '
                f'complete checkpoint, iteration 8, is in {workdir}/checkpoints.')
  with pytest.raises(UserError) as info:
    train.train(config, workdir)
  message = str(info.value)
  assert message.startswith(expected) and '\n' not in message
  monkeypatch.undo()
  data_shape, initial, noise = template
  ckpt = checkpoints.Checkpointer(workdir, config, data_shape)
  assert ckpt.steps() == [4, 6, 8]
  assert_same_state(ckpt.restore(initial, noise).state, whole)
  ckpt.close()
  # The next run resumes from 8 and finishes.
  assert int(train.train(config, workdir).gen_iter) == 12
  assert _gen_iters(workdir) == list(range(1, 13))


def test_the_first_signal_asks_to_stop_and_the_second_ends_the_process():
  previous = {s: signal.getsignal(s) for s in train.StopRequests.SIGNALS}
  stop = train.StopRequests()
  try:
    assert not stop.stop_after(1, log_every=1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # (Python runs the handler between bytecodes)
    assert stop.signum == signal.SIGTERM and stop.stop_after(2, log_every=1)
    # The next SIGTERM or SIGINT gets the default action: the end, at once.
    assert all(signal.getsignal(s) == signal.SIG_DFL for s in stop.SIGNALS)
  finally:
    stop.restore()
  assert {s: signal.getsignal(s) for s in stop.SIGNALS} == previous
  assert checkpoints.any_process(True) and not checkpoints.any_process(False)


def _run_and_signal(args, env, log, signum, when, timeout=120):
  """Runs the training CLI and sends ``signum`` once ``when()`` holds."""
  with open(log, 'w') as err:
    proc = subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    seen = None
    while proc.poll() is None and time.monotonic() < deadline:
      seen = when()
      if seen:
        proc.send_signal(signum)
        break
      time.sleep(0.002)
    status = proc.wait(timeout=60)
  with open(log) as f:
    return status, f.read(), seen


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_signal_saves_the_iteration_done_and_the_resumed_run_ends_as_a_whole_one(
    trained, template, tmp_path, signum):
  config, _, whole = trained
  workdir = tmp_path / 'run'
  metrics = workdir / 'metrics.jsonl'

  def started():  # iterations done (metrics written) once there are 2
    done = len(writers.read_metrics(str(metrics))) if metrics.exists() else 0
    return done if done >= 2 else None

  # A scatter plot each iteration: slow enough to be signalled mid-run. Only
  # the signal saves (no periodic checkpoints).
  args = [*_cli_flags(workdir), '--checkpoint_every=0', '--sample_every=1']
  env = _env(tmp_path)
  status, log, seen = _run_and_signal(args, env, tmp_path / 'a.log', signum, started)
  assert seen, log
  assert status == (0 if signum == signal.SIGTERM else 130), log
  assert 'Traceback' not in log
  name = signal.Signals(signum).name
  last = log.strip().splitlines()[-1]
  stopped = int(last.split('after generator iteration ')[1].split()[0])
  assert last == (f'Stopped by {name} after generator iteration {stopped} of 8, saved '
                  f'in {workdir}/checkpoints; resume with: python -m wgan_jax.train '
                  f'--workdir={workdir}')
  assert seen <= stopped < 8  # no finished iteration is lost
  data_shape, initial, noise = template
  assert checkpoints.Checkpointer(str(workdir), config, data_shape).steps() == [stopped]
  if signum == signal.SIGINT:
    return  # (resuming: as after SIGTERM)
  status, log = _train_cli([f'--workdir={workdir}', '--noprogress_bar'], env)
  assert status == 0, log
  assert f'Resuming from the checkpoint of generator iteration {stopped} ' in log
  assert _gen_iters(workdir) == list(range(1, 9))
  restored = checkpoints.Checkpointer(str(workdir), config, data_shape).restore(
      initial, noise)
  assert restored.step == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _arrays(restored.state), _arrays(whole))


@pytest.mark.slow
def test_two_processes_stop_at_the_same_iteration_when_one_is_signalled(trained, tmp_path):
  """SIGTERM to the second process only: both stop after the same generator
  iteration (they ask each other at every logged one) and save it."""
  from .test_checkpoints import _free_port
  config, whole_dir, _ = trained
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(whole_dir, 'checkpoints', '4'), workdir / 'checkpoints' / '4')
  metrics = workdir / 'metrics.jsonl'
  args = [*_cli_flags(workdir), '--checkpoint_every=0', '--sample_every=1',
          f'--coordinator_address=localhost:{_free_port()}', '--num_processes=2']
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  logs = [open(tmp_path / f'{i}.log', 'w') for i in range(2)]  # pylint: disable=consider-using-with
  procs = [subprocess.Popen([sys.executable, '-m', 'wgan_jax.train', *args,
                             f'--process_id={i}'], env=env, stdout=subprocess.DEVNULL,
                            stderr=logs[i]) for i in range(2)]
  try:
    deadline = time.monotonic() + 240
    while procs[1].poll() is None and time.monotonic() < deadline:
      if metrics.exists() and len(writers.read_metrics(str(metrics))) >= 2:
        procs[1].send_signal(signal.SIGTERM)
        break
      time.sleep(0.002)
    statuses = [p.wait(timeout=120) for p in procs]
  finally:
    for p, log in zip(procs, logs):
      p.kill()
      log.close()
  logs = [(tmp_path / f'{i}.log').read_text() for i in range(2)]
  assert statuses == [0, 0], logs
  last = [log.strip().splitlines()[-1] for log in logs]
  stopped = {int(line.split('after generator iteration ')[1].split()[0]) for line in last}
  assert len(stopped) == 1, last
  [stopped] = stopped
  assert last[0].startswith('Stopped by a signal to another process after generator iteration')
  assert last[1].startswith('Stopped by SIGTERM after generator iteration')
  assert 5 <= stopped < 8
  assert sorted(int(n) for n in os.listdir(workdir / 'checkpoints')) == [4, stopped]
  assert _gen_iters(workdir) == list(range(5, stopped + 1))
