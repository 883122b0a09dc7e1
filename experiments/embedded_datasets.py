r"""Train on every embedded dataset with its preset and make one figure.

  python experiments/embedded_datasets.py

Each run's workdir goes under --workdirs; into --out go ``embedded.json``
(wall time, Wasserstein estimate at the start and end, the machine) and
``embedded.png``: each run's final samples above its Wasserstein estimate
over training.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags
from PIL import Image

from wgan_jax import configs, runtime, train, visualize, writers

_OUT = flags.DEFINE_string('out', 'experiments/results', 'Where the figure and JSON go.')
_WORKDIRS = flags.DEFINE_string('workdirs', '/tmp/wgan_jax_embedded',
                                'Where the runs\' workdirs go.')
_DATASETS = flags.DEFINE_list('datasets', ['digits', 'gaussians8', 'gaussians25', 'swissroll'],
                              'Embedded datasets to train on.')
_ITERS = flags.DEFINE_integer('num_gen_iters', 0, 'Override the presets (0 keeps them).')
_SUMMARIZE_ONLY = flags.DEFINE_bool(
    'summarize_only', False, 'Rebuild the figure and JSON from the workdirs of an '
    'earlier run (wall times from its JSON) instead of training.')


def _figure(out: str, results: list[dict]) -> str:
  plt = visualize._pyplot()  # pylint: disable=protected-access
  fig, axes = plt.subplots(2, len(results), figsize=(4 * len(results), 7.5), dpi=100,
                           gridspec_kw={'height_ratios': [3, 2]})
  axes = np.array(axes).reshape(2, len(results))
  for col, r in enumerate(results):
    with Image.open(r['final_samples']) as im:
      axes[0, col].imshow(np.asarray(im), cmap='gray')
    axes[0, col].set_axis_off()
    axes[0, col].set_title(f'{r["dataset"]}: {r["num_gen_iters"]} generator iterations')
    records = writers.read_metrics(os.path.join(r['workdir'], 'metrics.jsonl'))
    w = np.array([x['wasserstein'] for x in records])
    steps = np.array([x['gen_iter'] for x in records])
    axes[1, col].plot(steps, w, alpha=0.3, lw=0.7)
    axes[1, col].plot(steps, visualize.median_filter(w, max(1, len(w) // 50)), lw=1.6)
    axes[1, col].set_xlabel('generator iterations')
    axes[1, col].set_ylabel('Wasserstein estimate')
    axes[1, col].grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(out, 'embedded.png')
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  json_path = os.path.join(_OUT.value, 'embedded.json')
  earlier = {}
  if _SUMMARIZE_ONLY.value:
    with open(json_path, encoding='utf-8') as f:
      earlier = {r['dataset']: r['wall_seconds'] for r in json.load(f)['runs']}
  results = []
  for name in _DATASETS.value:
    config = configs.get_config(name)
    config.progress_bar = False
    if _ITERS.value:
      config.num_gen_iters = _ITERS.value
      config.sample_every = _ITERS.value
    workdir = os.path.join(_WORKDIRS.value, name)
    if _SUMMARIZE_ONLY.value:
      seconds = earlier[name]
    else:
      t0 = time.perf_counter()
      train.train(config, workdir)
      seconds = time.perf_counter() - t0
    records = writers.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
    w = np.array([r['wasserstein'] for r in records])
    smooth = visualize.median_filter(w, max(1, len(w) // 50))
    kind = 'fake' if name == 'digits' else 'scatter'
    results.append({
        'dataset': name, 'workdir': workdir, 'num_gen_iters': config.num_gen_iters,
        'wall_seconds': round(seconds, 1),
        # The estimate rises while the warm-up trains the critic, then falls
        # as the generator improves.
        'wasserstein_peak': float(smooth.max()),
        'wasserstein_peak_at': int(records[int(smooth.argmax())]['gen_iter']),
        'wasserstein_final': float(np.median(w[-50:])),
        'final_samples': os.path.join(workdir, 'samples',
                                      f'{kind}_{config.num_gen_iters:06d}.png'),
    })
    r = results[-1]
    print(f'{name}: {seconds:.0f} s, Wasserstein estimate peak {r["wasserstein_peak"]:.4f} '
          f'(iteration {r["wasserstein_peak_at"]}) -> final {r["wasserstein_final"]:.4f}',
          flush=True)
  figure = _figure(_OUT.value, results)
  summary = {'machine': runtime.machine(devices=True), 'runs': results, 'figure': figure}
  with open(json_path, 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  print(f'Figure: {figure}')


if __name__ == '__main__':
  app.run(main)
