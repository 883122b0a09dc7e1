"""Each convolution's formulation chosen by measurement, once per shape.

On the CPU, which of the layers' formulations (``layers.CONV_FORMS``,
``layers.CONVT_FORMS``) is fastest depends on the layer's shape and on the
CPU, by up to 1.3x per layer (experiments/conv_layers.py). As cuDNN's
autotuner does, ``choose`` times the candidates for a shape the first time
a net is traced with it (forward, and forward with both gradients, jitted,
best of a few calls), keeps the fastest and caches the choice in memory and
in ``cache_path()``, keyed by the machine, jax's version, the shapes and the
dtype, so later runs on the machine trace the same program without
measuring. All formulations compute the same numbers up to float rounding.

Off (the static rule of ``layers`` instead) with ``--conv_tuning=false``,
``WGAN_JAX_CONV_TUNING=0``, or several processes, which must all compile
the same program.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wgan_jax import files, runtime

# Per generator iteration, (forwards alone, forwards with gradients) of a
# layer: a critic layer runs with its gradients 11 times (5 critic steps on a
# real and a fake batch, the generator step); a generator layer runs its
# forward alone 5 times (the critic steps' fakes), with its gradients once.
PASSES = {'conv': (0, 11), 'convt': (5, 1)}
_memory: dict[str, str] = {}
_lock = threading.Lock()
_state = threading.local()


def enabled() -> bool:
  """Whether ``choose`` may measure: not switched off by the environment or
  ``suspended``, and one process (several must all compile the same program)."""
  return (os.environ.get('WGAN_JAX_CONV_TUNING', '1') != '0'
          and not getattr(_state, 'suspended', False) and jax.process_count() == 1)


@contextlib.contextmanager
def suspended():
  """The static rule while tracing inside: for traces whose shapes training
  never runs (initialising the parameters on a dummy batch)."""
  before, _state.suspended = getattr(_state, 'suspended', False), True
  try:
    yield
  finally:
    _state.suspended = before


def cache_path() -> str:
  root = os.environ.get('WGAN_JAX_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'wgan_jax')
  return os.path.join(root, 'conv_formulations.json')


@functools.lru_cache(maxsize=None)
def _machine_key() -> str:
  info = runtime.machine()
  device = jax.devices()[0]
  return (f'{device.platform}:{device.device_kind}|{info["cpu"]}|{",".join(info["cpu_flags"])}'
          f'|{info["cores"]} cores|jax {jax.__version__}')


def choose(kind: str, x_shape, kernel_shape, dtype, candidates, default: str,
           tune: bool = True) -> str:
  """The fastest of ``candidates`` (names in ``layers.CONV_FORMS`` for
  ``kind='conv'``, ``layers.CONVT_FORMS`` for 'convt') for these shapes;
  ``default`` when tuning is off (``tune``, ``--conv_tuning``, or
  ``enabled()``) or only one candidate is left."""
  if not (tune and enabled()) or len(candidates) < 2:
    return default
  key = (f'{_machine_key()}|{kind}|{tuple(x_shape)}|{tuple(kernel_shape)}|'
         f'{jnp.dtype(dtype).name}|{",".join(candidates)}')
  with _lock:
    if key not in _memory:
      saved = _read(cache_path())
      if key in saved:
        _memory[key] = saved[key]['choice']
      else:
        logging.info('Timing the formulations of a %s layer, input %s, kernel %s (once on '
                     'this machine; kept in %s).', kind, tuple(x_shape), tuple(kernel_shape),
                     cache_path())
        times = measure(kind, x_shape, kernel_shape, dtype, candidates)
        _memory[key] = min(times, key=times.get)
        _write(cache_path(), key, {'choice': _memory[key], 'ms': times})
    return _memory[key]


def measure(kind: str, x_shape, kernel_shape, dtype, candidates) -> dict[str, float]:
  """Milliseconds per generator iteration of each candidate on this layer,
  measured now (outside any trace being built)."""
  from wgan_jax import layers  # pylint: disable=g-import-not-at-top
  forms = layers.CONV_FORMS if kind == 'conv' else layers.CONVT_FORMS
  with jax.ensure_compile_time_eval():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    kernel = jnp.asarray(rng.standard_normal(kernel_shape) * 0.02, dtype)
    y_shape = jax.eval_shape(forms[candidates[0]], x, kernel).shape
    g = jnp.asarray(rng.standard_normal(y_shape), dtype)
    times = {}
    for name in candidates:
      f = forms[name]
      forward = jax.jit(f)
      both = jax.jit(lambda x, k, g, f=f: _forward_and_grads(f, x, k, g))
      alone, with_grads = PASSES[kind]
      times[name] = (alone * _best_ms(lambda: forward(x, kernel))
                     + with_grads * _best_ms(lambda: both(x, kernel, g)))
  return times


def _forward_and_grads(f, x, kernel, g):
  y, vjp = jax.vjp(f, x, kernel)
  return y, vjp(g)  # (the forward returned too, or XLA would drop it)


def _best_ms(call, rounds: int = 3, calls: int = 3) -> float:
  jax.block_until_ready(call())
  best = float('inf')
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = call()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return best * 1e3


def _read(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _write(path: str, key: str, entry: dict) -> None:
  """Adds ``entry`` to the cache file; a cache that cannot be written is only
  kept in memory (a read-only home, a full disk)."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    saved = _read(path)
    saved[key] = entry
    files.write_atomic(path, lambda f: json.dump(saved, f, indent=1), text=True)
  except OSError:
    pass
