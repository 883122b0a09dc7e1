"""Metrics out of a run: a JSON-lines file and TensorBoard event files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from wgan_jax import files


class MetricWriter:
  """Appends one JSON object per generator iteration to ``metrics.jsonl`` and
  mirrors the scalars to TensorBoard (tensorboardX: no TensorFlow needed).

  A run that starts at generator iteration ``start`` (resumed from a
  checkpoint) first drops the records of later iterations, which a run that
  stopped after that checkpoint left behind, so that no iteration appears
  twice; TensorBoard is told to do the same (``purge_step``).
  """

  def __init__(self, workdir: str, tensorboard: bool = True, start: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(self.path):
      _truncate(self.path, start)
    self._file = open(self.path, 'a', encoding='utf-8')
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'),
                               purge_step=start + 1)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self._file.write(json.dumps({'gen_iter': step, **scalars}) + '\n')
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, step)

  def flush(self) -> None:
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    self._file.close()
    if self._tb is not None:
      self._tb.close()


class NullWriter:
  """A MetricWriter that writes nothing: for the processes of a multi-process
  run other than the first, which writes the outputs."""
  path = None

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    del step, scalars

  def flush(self) -> None:
    return None

  def close(self) -> None:
    return None


def _truncate(path: str, last_step: int) -> None:
  """Keeps the records of iterations up to ``last_step`` (atomically)."""
  kept = [r for r in read_metrics(path) if r.get('gen_iter', 0) <= last_step]
  files.write_atomic(path, lambda f: f.writelines(json.dumps(r) + '\n' for r in kept),
                     text=True)


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` (a torn last line, after a crash, is skipped)."""
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records
