"""The cache of decoded images: ``<cache_dir>/<label>-<hash of key>.npy``
(uint8 pixels, memory-mapped by later runs) with a ``.json`` note of what it
holds; entries of the same label made from older files are dropped."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from wgan_jax import files
from wgan_jax.errors import UserError

CACHE_DIRNAME = 'wgan_jax_cache'


def _slug(text: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_.' else '-' for c in text).strip('-')


def cache_path(cache_dir: str, label: str, key: dict) -> str:
  """``<cache_dir>/<label>-<hash of key>.npy``: the label names the dataset and
  the pixels' spec; the hash also covers what the data was made from."""
  digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(cache_dir, f'{_slug(label)}-{digest}.npy')


def _remove_stale(path: str) -> None:
  """Entries of the same label with another hash hold the same dataset made
  from older files: drop them."""
  folder, name = os.path.split(path)
  stem = name[:-len('.npy')]
  label = stem[:-len('-0123456789ab')]
  for other in os.listdir(folder):
    other_stem, ext = os.path.splitext(other)
    if (ext in ('.npy', '.json') and other_stem != stem and
        other_stem.startswith(label + '-') and len(other_stem) == len(stem) and
        set(other_stem[len(label) + 1:]) <= set('0123456789abcdef')):
      os.remove(os.path.join(folder, other))


def _read_cache(path: str, key: dict) -> np.ndarray | None:
  try:
    with open(path[:-4] + '.json', encoding='utf-8') as f:
      note = json.load(f)
    if note.get('key') != key:
      return None
    pixels = np.load(path, mmap_mode='r')
  except (OSError, ValueError):
    return None
  logging.info('Reading %d cached images from %s.', len(pixels), path)
  return pixels


def _write_note(path: str, note: dict) -> None:
  files.write_atomic(path[:-4] + '.json', lambda f: json.dump(note, f, indent=1), text=True)


def cached_pixels(path: str | None, key: dict, shape: tuple[int, ...],
                  fill: Callable[[np.ndarray], tuple[int, list]], what: str,
                  name_of: Callable[[int], str] = str) -> np.ndarray:
  """uint8 pixels of ``shape`` (count, S, S, C), from the cache at ``path`` or
  made into it by ``fill(out)``, which returns how many images it wrote (the
  first ones) and the indices of those it skipped; ``what`` names the images
  in messages, ``name_of(i)`` image i.
  """
  if path:
    cached = _read_cache(path, key)
    if cached is not None:
      return cached
  count = shape[0]
  tmp = files.tmp_name(path) if path else None
  out = None
  if path:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=shape)
    except OSError as e:
      logging.warning('Cannot write the image cache %s (%s); the images stay in '
                      'memory for this run (--cache_dir chooses another place).',
                      path, e.strerror or e)
      path = tmp = None
  if out is None:
    out = np.empty(shape, np.uint8)
  logging.info('Decoding %d images of %s once into %dx%dx%d pixels%s.', count, what,
               *shape[1:], f', cached in {path}' if path else '')
  t0 = time.perf_counter()
  try:
    written, failures = fill(out)
    seconds = time.perf_counter() - t0
    if failures:
      logging.warning('Skipped %d of %d files of %s that could not be read as images '
                      '(the first: %s).', len(failures), count, what,
                      name_of(failures[0]))
    if not written:
      raise UserError(f'none of the {count} files of {what} could be read as an '
                      'image; pass a folder of images (jpg, png, webp, ...).')
    logging.info('Decoded %d images in %.1f s (%.0f images/s).', written, seconds,
                 count / max(seconds, 1e-9))
    if not path:
      return out[:written]
    if written < count:  # drop the unused slots at the end
      shrunk = np.lib.format.open_memmap(f'{tmp}.part', mode='w+', dtype=np.uint8,
                                         shape=(written, *shape[1:]))
      for s in range(0, written, 4096):
        e = min(s + 4096, written)
        shrunk[s:e] = out[s:e]
      out = shrunk
      os.replace(f'{tmp}.part', tmp)
    out.flush()
    del out
    os.replace(tmp, path)
  finally:
    for leftover in (tmp, f'{tmp}.part'):
      if leftover and os.path.exists(leftover):
        os.remove(leftover)
  _write_note(path, dict(key=key, images=written, skipped=len(failures),
                         decode_seconds=round(seconds, 2), what=what))
  _remove_stale(path)
  return np.load(path, mmap_mode='r')
