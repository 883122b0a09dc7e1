"""Process-wide settings that make training faster: call ``configure`` first.

* The allocator (Linux, glibc). XLA on the CPU allocates each call's
  scratch buffers (tens of MB for these models) from its worker threads;
  glibc serves such blocks with a fresh ``mmap`` and returns them with
  ``munmap``, so every training step faults in hundreds of MB of zeroed
  pages again (measured: 475 MB and a third of the CPU time of an MLP
  generator iteration). One arena, no ``mmap`` and no trimming keep the
  freed blocks in the process for the next step. Skipped where the user set
  any ``MALLOC_*`` variable or ``WGAN_JAX_TUNE_MALLOC=0``.
* The persistent compilation cache (``config.compilation_cache_dir``):
  compiled steps are kept on disk and a later run with the same shapes and
  flags loads them instead of compiling again.

Both must happen before jax starts its backend (the first computation or
device query) to take full effect; ``train.main`` calls ``configure`` first.

``machine()`` describes the machine, for the records of benchmarks and
experiments.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from importlib import metadata

from absl import logging

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1

_tuned: bool | None = None


def libc() -> ctypes.CDLL | None:
  """The C library (errno kept for ``ctypes.get_errno``), or None where it
  cannot be loaded."""
  try:
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
  except OSError:
    return None


def tune_malloc() -> bool:
  """Keeps freed memory in the process (see the module docstring).

  Returns whether the allocator was tuned: False off Linux/glibc, where the
  user set ``MALLOC_*`` variables or ``WGAN_JAX_TUNE_MALLOC=0``. Idempotent.
  """
  global _tuned
  if _tuned is not None:
    return _tuned
  _tuned = False
  if os.environ.get('WGAN_JAX_TUNE_MALLOC', '1') == '0' or any(
      k.startswith('MALLOC_') for k in os.environ):
    return False
  if not sys.platform.startswith('linux'):
    return False
  mallopt = getattr(libc(), 'mallopt', None)
  if mallopt is None:
    return False  # not glibc (musl has no mallopt)
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  _tuned = all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  return _tuned


def set_compilation_cache(directory: str) -> None:
  """jax's persistent compilation cache in ``directory`` ('' leaves it off);
  every compiled function is kept, however fast it compiled."""
  if not directory:
    return
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def configure(config=None) -> None:
  """The process-wide settings for training with ``config``."""
  if tune_malloc():
    logging.info('Allocator tuned: one arena, no mmap, no trimming '
                 '(WGAN_JAX_TUNE_MALLOC=0 turns this off).')
  if config is not None:
    set_compilation_cache(config.get('compilation_cache_dir', ''))


# The instruction sets that change XLA's and oneDNN's speed by 2-3x.
_SPEED_FLAGS = {'avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16', 'amx_tile'}


def machine(devices: bool = False) -> dict:
  """The CPU model, cores, memory, platform and package versions; with
  ``devices``, also jax's devices (which starts jax's backend) and the load."""
  model = platform.processor() or platform.machine()
  cpu_flags = set()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name') and model == (platform.processor() or
                                                       platform.machine()):
          model = line.split(':', 1)[1].strip()
        elif line.startswith('flags'):
          cpu_flags = set(line.split(':', 1)[1].split())
          break
  except OSError:
    pass
  versions = {}
  for package in ('jax', 'jaxlib', 'flax', 'torch'):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  out = {'cpu': model, 'cpu_flags': sorted(cpu_flags & _SPEED_FLAGS),
         'cores': len(os.sched_getaffinity(0)),
         'memory_gb': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30,
         'platform': platform.platform(), 'python': platform.python_version(),
         **versions}
  if devices:
    import jax  # pylint: disable=g-import-not-at-top
    out['devices'] = (f'{jax.device_count()} x {jax.devices()[0].device_kind} '
                      f'({jax.default_backend()})')
    out['load_average_1_5_15min'] = os.getloadavg()
  return out


def machine_text(machine) -> str:
  """One line for a ``machine()`` record (older records, already text, as they are)."""
  if isinstance(machine, str):
    return machine
  text = f'{machine["cpu"]}'
  if machine.get('cpu_flags'):
    text += f' ({" ".join(machine["cpu_flags"])})'
  text += f', {machine["cores"]} cores, jax {machine["jax"]}'
  if machine.get('devices'):
    text += f' on {machine["devices"]}'
  if machine.get('torch'):
    text += f', torch {machine["torch"]}'
  return text
