"""Metrics out of a run: a JSON-lines file and TensorBoard event files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


class MetricWriter:
  """Appends one JSON object per generator iteration to ``metrics.jsonl`` and
  mirrors the scalars to TensorBoard (tensorboardX: no TensorFlow needed)."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._file = open(self.path, 'a', encoding='utf-8')
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'))

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
