"""Preemption: the first SIGTERM or SIGINT asks a run to stop after the
generator iteration in progress (and save); a second ends the process."""

from __future__ import annotations

import signal
import threading

import jax

from wgan_jax import parallel


class Interrupted(Exception):
  """The run stopped on SIGTERM or SIGINT after saving a checkpoint.

  ``str()`` is the line to print; ``exit_status`` the status to exit with
  (0 after SIGTERM, a scheduler's request to stop; 130 after Ctrl-C);
  ``gen_iter`` the generator iteration saved.
  """

  def __init__(self, message: str, exit_status: int, gen_iter: int | None = None):
    super().__init__(message)
    self.exit_status = exit_status
    self.gen_iter = gen_iter


class StopRequests:
  """Catches the first SIGTERM or SIGINT while training (``signum`` then
  says which); the loop stops after the generator iteration in progress and
  saves. The handlers then go back to the default: a second signal ends the
  process at once. ``restore`` puts back the handlers of before. (Outside
  the main thread, where Python cannot take signals, it does nothing.)"""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    for other in self.SIGNALS:
      signal.signal(other, signal.SIG_DFL)

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def stop_after(self, done: int, log_every: int) -> bool:
    """Whether to stop after generator iteration ``done``. A multi-process
    run asks every process, at the iterations every process checks at (those
    whose metrics are logged), so that all stop and save at the same one."""
    if jax.process_count() == 1:
      return self.signum is not None
    if done % log_every:
      return False
    return parallel.any_process(self.signum is not None)
