"""wgan_jax.runtime: the allocator, the persistent compilation cache, the machine."""

import os
import subprocess
import sys

import pytest

from wgan_jax import runtime


def _run_python(code: str, **env) -> str:
  env = {**{k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}, **env}
  return subprocess.run([sys.executable, '-c', code], env=env, check=True,
                        capture_output=True, text=True, timeout=120).stdout


_FAULTS = '''
import ctypes, ctypes.util, resource, threading
from wgan_jax import runtime
tuned = runtime.tune_malloc()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
def churn():  # as XLA does: large scratch blocks from a worker thread
  for _ in range(5):
    block = libc.malloc(100 * 2**20)
    ctypes.memset(block, 1, 100 * 2**20)
    libc.free(block)
t = threading.Thread(target=churn); t.start(); t.join()  # the first one faults
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = threading.Thread(target=churn); t.start(); t.join()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_tuned_allocator_stops_refaulting_large_blocks():
  tuned, faults = _run_python(_FAULTS).split()
  assert tuned == 'True'
  assert int(faults) < 2000  # untuned: 5 x 100 MB of fresh pages, 128,000 faults
  tuned, faults = _run_python(_FAULTS, WGAN_JAX_TUNE_MALLOC='0').split()
  assert tuned == 'False' and int(faults) > 100_000
  tuned, _ = _run_python(_FAULTS, MALLOC_ARENA_MAX='2').split()
  assert tuned == 'False'  # the user's own settings win


def test_compilation_cache_keeps_compiled_steps(tmp_path):
  code = f'''
import jax, jax.numpy as jnp
from wgan_jax import configs, runtime
config = configs.get_config()
config.compilation_cache_dir = {str(tmp_path / 'cache')!r}
runtime.configure(config)
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
print(float(jax.jit(lambda x: jnp.sin(x) * 2)(1.0)))
print(' '.join(sorted({{e.rsplit('/', 1)[-1] for e in events if 'compilation_cache' in e}})))
'''
  first = _run_python(code, JAX_PLATFORMS='cpu').split('\n')
  entries = os.listdir(tmp_path / 'cache')
  # One entry, for the one jitted function, written by a run that missed.
  assert len(entries) == 1 and entries[0].startswith('jit__lambda-'), entries
  assert 'cache_misses' in first[1] and 'cache_hits' not in first[1]
  # A second process finds it there instead of compiling again.
  second = _run_python(code, JAX_PLATFORMS='cpu').split('\n')
  assert 'cache_hits' in second[1] and 'cache_misses' not in second[1]
  assert second[0] == first[0]
  assert os.listdir(tmp_path / 'cache') == entries


def test_machine_names_the_cpu_and_the_versions():
  m = runtime.machine()
  assert m['cores'] == len(os.sched_getaffinity(0)) and m['memory_gb'] > 0
  assert m['cpu'] and m['python'].startswith(f'{sys.version_info.major}.')
  assert m['jax'] and 'devices' not in m  # no backend started unless asked
  with_devices = runtime.machine(devices=True)
  assert with_devices['devices'].endswith('(cpu)') and len(with_devices['load_average_1_5_15min']) == 3
