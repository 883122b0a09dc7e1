"""The one way files are written: to a temporary name beside the target, then
``os.replace``d onto it, so a reader (or a run killed mid-write) never sees
half a file."""

from __future__ import annotations

import contextlib
import json
import os
import threading


def tmp_name(path: str) -> str:
  """A temporary name beside ``path``, unique to this process and thread."""
  return f'{path}.tmp{os.getpid()}.{threading.get_ident()}'


def write_atomic(path: str, write, text: bool = False) -> None:
  """Calls ``write(f)`` on a temporary file, then moves it onto ``path``."""
  tmp = tmp_name(path)
  try:
    with open(tmp, 'w' if text else 'wb', **({'encoding': 'utf-8'} if text else {})) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_json(path: str, obj, indent: int | None = None) -> None:
  """``obj`` as JSON at ``path`` (its folder made), written atomically."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  write_atomic(path, lambda f: json.dump(obj, f, indent=indent), text=True)
