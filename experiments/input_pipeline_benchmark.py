r"""How fast the input pipeline delivers images, against how fast training eats them.

  python experiments/input_pipeline_benchmark.py            # CelebA-like JPEGs it makes
  python experiments/input_pipeline_benchmark.py --dataset=celeb_a
  python experiments/input_pipeline_benchmark.py --dataset=folder:/data/img_align_celeba \
      --crop=108

Measures, at one config (default: the celeb_a preset, 64px, batch 64):

* first pass: decoding, cropping and resizing every image into the cache;
* cached: opening the cache again, and the host-fed source (``HostSource``)
  gathering batches from it and putting them on the devices, as training asks
  for them (``batches(k, n_critic)``, waited on);
* training: images per second the training step consumes (``TrainIteration``,
  n_critic critic steps and a generator step per call, the data resident on
  the devices), after compilation.

Without ``--dataset`` it writes ``--num_images`` synthetic 178x218 JPEGs (the
size of CelebA's aligned faces: smooth colour fields with noise, about the
size of CelebA's files) to ``--workdir`` and reads them as a folder with the
CelebA crop. Results go to ``--out`` (JSON) with the machine and its load.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
from absl import app, flags

_DATASET = flags.DEFINE_string('dataset', '', 'Dataset to read (as --dataset of '
                               'wgan_jax.train); empty: synthetic CelebA-like JPEGs.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 2000, 'Synthetic images to make.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/wgan_jax_pipeline_benchmark',
                               'Where synthetic images and caches go.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Image size.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Global batch size.')
_CROP = flags.DEFINE_integer('crop', 108, 'Centre crop before resizing (0: largest square).')
_TRAIN_ITERS = flags.DEFINE_integer('train_iters', 3, 'Timed generator iterations.')
_HOST_BATCHES = flags.DEFINE_integer('host_batches', 500, 'Batches the host source delivers.')
_OUT = flags.DEFINE_string('out', 'experiments/results/input_pipeline.json', 'Results (JSON).')


def _synthetic_faces(folder: str, n: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  yy, xx = np.mgrid[0:218, 0:178] / 218.0
  for i in range(n):
    c = rng.uniform(0, 255, (4, 3))
    image = (c[0] * (1 - yy[..., None]) * (1 - xx[..., None]) + c[1] * yy[..., None]
             + c[2] * xx[..., None] + c[3] * np.sin(6 * yy + 4 * xx)[..., None] / 2)
    image = np.clip(image / 2 + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f'{i:06d}.jpg'), quality=90)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from wgan_jax import configs, data as data_lib, parallel, runtime, state  # pylint: disable=g-import-not-at-top

  if _DATASET.value:
    config = configs.get_config(_DATASET.value)
  else:
    folder = os.path.join(_WORKDIR.value, 'faces')
    if len(os.listdir(folder) if os.path.isdir(folder) else []) < _NUM_IMAGES.value:
      shutil.rmtree(folder, ignore_errors=True)
      _synthetic_faces(folder, _NUM_IMAGES.value)
    config = configs.get_config(f'folder:{folder}')
    config.crop = _CROP.value
  config.image_size, config.batch_size = _IMAGE_SIZE.value, _BATCH.value
  config.cache_dir = os.path.join(_WORKDIR.value, 'cache')
  shutil.rmtree(config.cache_dir, ignore_errors=True)
  results = {'machine': runtime.machine(devices=True), 'dataset': config.dataset, 'image_size': config.image_size,
             'batch_size': config.batch_size, 'crop': config.crop,
             'decode_threads': os.cpu_count()}

  t0 = time.perf_counter()
  data = data_lib.get_dataset(config)
  first = time.perf_counter() - t0
  n = len(data)
  t0 = time.perf_counter()
  data = data_lib.get_dataset(config)
  reopen = time.perf_counter() - t0
  results.update(images=n, first_pass_images_per_s=n / first, first_pass_seconds=first,
                 cache_open_seconds=reopen)
  print(f'{n} images: first pass {n / first:.0f} images/s ({first:.1f} s); '
        f'cache opened in {reopen * 1e3:.1f} ms', flush=True)

  devices = parallel.local_devices(config.num_devices)
  host = parallel.HostSource(data, config.batch_size, config.seed, devices,
                                   prefetch=config.prefetch_batches)
  n_critic = config.n_critic
  jax.block_until_ready(host.batches(0, n_critic))  # compiles the stacking
  calls = max(1, _HOST_BATCHES.value // n_critic)
  t0 = time.perf_counter()
  for c in range(calls):
    jax.block_until_ready(host.batches((c + 1) * n_critic, n_critic))
  seconds = time.perf_counter() - t0
  host.close()
  host_rate = calls * n_critic * config.batch_size / seconds
  results['cached_host_fed_images_per_s'] = host_rate
  print(f'cached, host-fed to {len(devices)} device(s): {host_rate:.0f} images/s', flush=True)

  t0 = time.perf_counter()
  resident = parallel.DeviceResidentSource(data, config.batch_size, config.seed,
                                                 devices)
  jax.block_until_ready(resident.data)
  results['resident_upload_seconds'] = time.perf_counter() - t0
  train_state = parallel.replicate(
      state.create_state(config, data.data_shape, state.root_key(config),
                         axis_name=parallel.AXIS), devices)
  iteration = parallel.TrainIteration(config, devices)
  consumed = 0

  def run(k):
    nonlocal train_state, consumed
    for _ in range(k):
      train_state, metrics = iteration(train_state, *resident.batches(consumed, n_critic))
      consumed += n_critic
    jax.block_until_ready(metrics)

  t0 = time.perf_counter()
  run(1)  # compiles
  compile_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  run(_TRAIN_ITERS.value)
  seconds = time.perf_counter() - t0
  train_rate = _TRAIN_ITERS.value * n_critic * config.batch_size / seconds
  results.update(training_images_per_s=train_rate, training_compile_seconds=compile_seconds,
                 iteration_mode=iteration.mode, n_critic=n_critic,
                 cached_over_training=host_rate / train_rate)
  print(f'training consumes {train_rate:.1f} images/s ({iteration.mode} mode, '
        f'{n_critic} critic steps + 1 generator step per call); the cached host-fed '
        f'pipeline delivers {host_rate / train_rate:.0f}x that', flush=True)
  results['machine']['load_average_after'] = os.getloadavg()
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'Results: {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
