r"""The paper's claims, measured: one command per experiment.

  python experiments/claims.py --experiment=loss_meaning    # 1. the loss tracks sample quality
  python experiments/claims.py --experiment=mode_collapse   # 2. WGAN vs GAN vs WGAN-GP on mixtures
  python experiments/claims.py --experiment=architectures   # 3. MLP and no-BN generators
  python experiments/claims.py --experiment=optimizers      # 4. RMSProp vs Adam
  python experiments/claims.py --experiment=precision       # (ours) bfloat16 vs float32

Each trains its runs (several seeds at once with ``num_seeds``, one compile),
measures every checkpoint with ``wgan_jax.evaluate`` and writes
``<out>/<experiment>.json`` (the numbers, the commands' settings, the machine,
the wall time) and ``<out>/<experiment>.png``. ``--summarize_only`` rebuilds
both from the workdirs of an earlier run. experiments/RESULTS.md reads them.

The sizes are chosen to fit a 2-core CPU in minutes per run (see each
experiment's ``RUNS``); ``--num_gen_iters`` and ``--num_seeds`` scale them.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image
from scipy import stats

from wgan_jax import configs, evaluate, runtime, train, visualize, writers

_EXPERIMENT = flags.DEFINE_enum(
    'experiment', None,
    ['loss_meaning', 'mode_collapse', 'architectures', 'optimizers', 'precision'],
    'Which experiment to run.', required=True)
_OUT = flags.DEFINE_string('out', 'experiments/results', 'Where the figure and JSON go.')
_WORKDIRS = flags.DEFINE_string('workdirs', '/tmp/wgan_jax_claims', "Where the runs' workdirs go.")
_SEEDS = flags.DEFINE_integer('num_seeds', 0, 'Seeds per run (0: the experiment\'s own).')
_ITERS = flags.DEFINE_integer('num_gen_iters', 0, 'Generator iterations (0: the experiment\'s own).')
_ONLY = flags.DEFINE_list('only', [], 'Run only these runs (by name) of the experiment.')
_SUMMARIZE_ONLY = flags.DEFINE_bool('summarize_only', False,
                                    'Rebuild the JSON and figure from the workdirs.')

# The 2-D experiments use the networks of the Unrolled GAN / VEEGAN / PacGAN
# mixture protocol (MLPs, width 128, batch 512 there, 256 here): a quarter of
# the width of the library's toy preset, a sixteenth of its cost.
TOY = dict(ngf=128, ndf=128, batch_size=256, num_gen_iters=2000)
DIGITS = dict(num_gen_iters=1000)

# name: (dataset, overrides). Each experiment's runs.
RUNS = {
    'loss_meaning': {
        'digits-wgan': ('digits', dict(DIGITS, loss='wgan', checkpoint_every=100)),
        'digits-gan': ('digits', dict(DIGITS, loss='gan', checkpoint_every=100)),
        'gaussians8-wgan': ('gaussians8', dict(TOY, loss='wgan', checkpoint_every=200)),
        'gaussians8-gan': ('gaussians8', dict(TOY, loss='gan', checkpoint_every=200)),
    },
    'mode_collapse': {
        f'{data}-{loss}': (data, dict(TOY if data != 'stacked_digits' else
                                      dict(num_gen_iters=500), loss=loss, num_seeds=5))
        for data in ('gaussians8', 'gaussians25', 'stacked_digits')
        for loss in ('wgan', 'gan', 'wgan-gp')
    },
    'architectures': {
        f'{arch}-{loss}': ('digits', dict(DIGITS, loss=loss, **overrides))
        for arch, overrides in (('mlp_generator', dict(generator='mlp', ngf=512)),
                                ('dcgan_no_bn', dict(no_bn=True)))
        for loss in ('wgan', 'gan')
    },
    'optimizers': {
        f'digits-{opt}': ('digits', dict(DIGITS, loss='wgan', optimizer=opt, num_seeds=2,
                                         checkpoint_every=100))
        for opt in ('rmsprop', 'adam')
    },
    # Not a claim of the paper: what --compute_dtype=bfloat16 does to the
    # samples, since it leaves step-for-step parity (parity_report.py).
    'precision': {
        f'digits-{dtype}': ('digits', dict(DIGITS, loss='wgan', compute_dtype=dtype, num_seeds=2,
                                           checkpoint_every=100))
        for dtype in ('float32', 'bfloat16')
    },
}
KEEP = 100  # checkpoints kept: every one is evaluated


def _config(dataset: str, overrides: dict):
  # The dataset's preset, then the loss's own defaults (optimiser, clipping,
  # schedule), then the experiment's settings.
  config = configs.get_config(dataset, overrides.get('loss', 'wgan'))
  config.update(progress_bar=False, keep_checkpoints=KEEP)
  overrides = dict(overrides)
  if _ITERS.value:
    overrides['num_gen_iters'] = _ITERS.value
  if _SEEDS.value and overrides.get('num_seeds', 1) > 1:
    overrides['num_seeds'] = _SEEDS.value
  for field, value in overrides.items():
    config[field] = value
  config.sample_every = max(1, config.num_gen_iters // 10)
  config.checkpoint_every = config.get('checkpoint_every') or config.num_gen_iters
  if config.checkpoint_every > config.num_gen_iters:
    config.checkpoint_every = config.num_gen_iters
  return config


def _seed_dirs(workdir: str, config) -> list[str]:
  if config.get('num_seeds', 1) > 1:
    return [os.path.join(workdir, f'seed_{config.seed + k}') for k in range(config.num_seeds)]
  return [workdir]


def _evaluate(seed_dir: str, which: str) -> list[dict]:
  path = os.path.join(seed_dir, evaluate.RESULTS)
  if os.path.exists(path):
    os.remove(path)  # a fresh measurement of this run's checkpoints
  return evaluate.evaluate(seed_dir, which=which, progress=False)


def _read_evaluation(seed_dir: str) -> list[dict]:
  with open(os.path.join(seed_dir, evaluate.RESULTS), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def run(experiment: str) -> dict:
  """Trains (unless summarising) and measures the experiment's runs."""
  root = os.path.join(_WORKDIRS.value, experiment)
  earlier = {}
  json_path = os.path.join(_OUT.value, f'{experiment}.json')
  if _SUMMARIZE_ONLY.value and os.path.exists(json_path):
    with open(json_path, encoding='utf-8') as f:
      earlier = {r['name']: r for r in json.load(f)['runs']}
  results = []
  for name, (dataset, overrides) in RUNS[experiment].items():
    if _ONLY.value and name not in _ONLY.value:
      continue
    config = _config(dataset, overrides)
    workdir = os.path.join(root, name)
    if _SUMMARIZE_ONLY.value and not os.path.isdir(workdir):
      logging.warning('%s: no workdir %s (not run); left out.', name, workdir)
      continue
    seconds = earlier.get(name, {}).get('train_seconds')
    if not _SUMMARIZE_ONLY.value:
      logging.info('%s: training %s', experiment, name)
      t0 = time.perf_counter()
      train.train(config, workdir)
      seconds = time.perf_counter() - t0
    which = 'all' if experiment in ('loss_meaning', 'optimizers', 'precision') else 'newest'
    seeds = []
    for seed_dir in _seed_dirs(workdir, config):
      evaluation = (_read_evaluation(seed_dir) if _SUMMARIZE_ONLY.value
                    else _evaluate(seed_dir, which))
      records = writers.read_metrics(os.path.join(seed_dir, 'metrics.jsonl'))
      seeds.append({'workdir': seed_dir, 'evaluation': evaluation,
                    'training': _curve(records)})
    results.append({'name': name, 'dataset': dataset, 'settings': _settings(config),
                    'train_seconds': seconds, 'seeds': seeds,
                    'summary': _summary(seeds)})
  return {'experiment': experiment, 'machine': runtime.machine(devices=True), 'runs': results}


def _settings(config) -> dict:
  keys = ('dataset', 'loss', 'generator', 'critic', 'no_bn', 'critic_bn', 'ngf', 'ndf', 'nz',
          'image_size', 'batch_size', 'optimizer', 'lr_critic', 'lr_gen', 'beta1', 'clip',
          'n_critic', 'num_gen_iters', 'num_seeds', 'seed', 'compute_dtype')
  return {k: config.get(k) for k in keys if k in config}


def _curve(records: list[dict]) -> dict:
  """The per-iteration training signal: the Wasserstein estimate (WGANs) or
  the discriminator's loss (GAN), and its median filter as the paper plots it."""
  key = 'wasserstein' if 'wasserstein' in records[0] else 'critic_loss'
  values = np.array([r[key] for r in records], np.float64)
  window = max(1, len(values) // 50)
  return {'key': key, 'gen_iter': [r['gen_iter'] for r in records],
          'values': values.tolist(),
          'median': visualize.median_filter(values, window).tolist(), 'window': window}


MEASURES = ('modes', 'high_quality', 'w1', 'fd', 'kid', 'class_kl', 'mode_kl')


def _summary(seeds: list[dict]) -> dict:
  """Mean and std over seeds of each measure of the newest checkpoint, and
  (with several checkpoints) the Spearman correlation of the training signal
  with each measure over checkpoints, per seed."""
  out = {}
  finals = [s['evaluation'][-1] for s in seeds]
  for m in MEASURES:
    if m in finals[0]:
      values = np.array([f[m] for f in finals])
      out[m] = {'mean': float(values.mean()), 'std': float(values.std()),
                'values': values.tolist()}
  if len(seeds[0]['evaluation']) >= 3:
    for m in ('w1', 'fd', 'class_kl', 'modes'):
      if m not in finals[0]:
        continue
      rhos = []
      for s in seeds:
        curve = s['training']
        at = {it: v for it, v in zip(curve['gen_iter'], curve['median'])}
        xs = [at[e['gen_iter']] for e in s['evaluation']]
        ys = [e[m] for e in s['evaluation']]
        rhos.append(float(stats.spearmanr(xs, ys).statistic))
      out[f'spearman_{m}'] = rhos
  return out


# --- figures ---------------------------------------------------------------------


def _grid_image(seed_dir: str, gen_iter: int | None = None):
  samples = os.path.join(seed_dir, 'samples')
  names = sorted(n for n in os.listdir(samples) if n.startswith(('fake_', 'scatter_')))
  if gen_iter is not None:
    names = [n for n in names if int(n.split('_')[1].split('.')[0]) <= gen_iter] or names
  with Image.open(os.path.join(samples, names[-1])) as im:
    return np.asarray(im.convert('RGB')), names[-1]


def figure(result: dict) -> str:
  plt = visualize._pyplot()  # pylint: disable=protected-access
  experiment, runs = result['experiment'], result['runs']
  if experiment == 'loss_meaning':
    fig, axes = plt.subplots(3, len(runs), figsize=(4.2 * len(runs), 10), dpi=100)
    axes = np.array(axes).reshape(3, len(runs))
    for col, r in enumerate(runs):
      seed = r['seeds'][0]
      curve, ev = seed['training'], seed['evaluation']
      measure = 'fd' if 'fd' in ev[0] else 'w1'
      ax = axes[0, col]
      ax.plot(curve['gen_iter'], curve['values'], alpha=0.25, lw=0.6)
      ax.plot(curve['gen_iter'], curve['median'], lw=1.6,
              label=f'{curve["key"]} (median of {2 * (curve["window"] // 2) + 1})')
      ax.set_title(r['name'])
      ax.set_xlabel('generator iterations')
      ax.legend(fontsize=7, loc='upper right')
      twin = ax.twinx()
      twin.plot([e['gen_iter'] for e in ev], [e[measure] for e in ev], 'o-', color='tab:red',
                ms=3, label=measure)
      if f'{measure}_floor' in ev[0]:
        twin.axhline(ev[0][f'{measure}_floor'], color='tab:red', ls=':', lw=0.8)
      twin.set_ylabel(f'{measure} (red; dotted: real data)', color='tab:red')
      rho = r['summary'].get(f'spearman_{measure}', [float('nan')])[0]
      axes[1, col].scatter([_at(curve, e['gen_iter']) for e in ev], [e[measure] for e in ev], s=12)
      axes[1, col].set_xlabel(f'{curve["key"]} (median-filtered)')
      axes[1, col].set_ylabel(measure)
      axes[1, col].set_title(f'Spearman {rho:+.2f} over {len(ev)} checkpoints', fontsize=9)
      steps = [e['gen_iter'] for e in ev]
      picks = [steps[0], steps[len(steps) // 2], steps[-1]]
      tiles = [_grid_image(seed['workdir'], p)[0] for p in picks]
      h = min(t.shape[0] for t in tiles)
      axes[2, col].imshow(np.concatenate([t[:h] for t in tiles], axis=1))
      axes[2, col].set_title('samples at ' + ', '.join(map(str, picks)), fontsize=9)
      axes[2, col].set_axis_off()
  elif experiment == 'mode_collapse':
    datasets = sorted({r['dataset'] for r in runs}, key=[r['dataset'] for r in runs].index)
    losses = sorted({r['settings']['loss'] for r in runs}, key=[r['settings']['loss'] for r in runs].index)
    fig, axes = plt.subplots(len(datasets), len(losses), figsize=(4 * len(losses), 4 * len(datasets)),
                             dpi=100)
    axes = np.array(axes).reshape(len(datasets), len(losses))
    for r in runs:
      ax = axes[datasets.index(r['dataset']), losses.index(r['settings']['loss'])]
      ax.imshow(_grid_image(r['seeds'][0]['workdir'])[0])
      s = r['summary']
      ax.set_title(f'{r["name"]}: modes {s["modes"]["mean"]:.1f} ± {s["modes"]["std"]:.1f}', fontsize=9)
      ax.set_axis_off()
  else:
    fig, axes = plt.subplots(2, len(runs), figsize=(4 * len(runs), 7.5), dpi=100)
    axes = np.array(axes).reshape(2, len(runs))
    for col, r in enumerate(runs):
      seed = r['seeds'][0]
      axes[0, col].imshow(_grid_image(seed['workdir'])[0])
      s = r['summary']
      axes[0, col].set_title(f'{r["name"]}: FD {s["fd"]["mean"]:.3g}', fontsize=9)
      axes[0, col].set_axis_off()
      for k, sd in enumerate(r['seeds']):
        curve = sd['training']
        axes[1, col].plot(curve['gen_iter'], curve['median'], lw=1.2, label=f'seed {k}')
      axes[1, col].set_xlabel('generator iterations')
      axes[1, col].set_ylabel(r['seeds'][0]['training']['key'] + ' (median-filtered)')
      axes[1, col].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(_OUT.value, f'{experiment}.png')
  fig.savefig(path)
  plt.close(fig)
  return path


def _thinned(result: dict, points: int = 200) -> dict:
  """The result with each training curve cut to about ``points`` points of its
  median (the per-iteration values stay in each run's metrics.jsonl)."""
  result = json.loads(json.dumps(result))
  for r in result['runs']:
    for seed in r['seeds']:
      curve = seed['training']
      step = max(1, len(curve['gen_iter']) // points)
      curve['gen_iter'] = curve['gen_iter'][::step]
      curve['median'] = [round(v, 6) for v in curve['median'][::step]]
      del curve['values']
  return result


def _at(curve: dict, gen_iter: int) -> float:
  return curve['median'][curve['gen_iter'].index(gen_iter)]


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  t0 = time.perf_counter()
  result = run(_EXPERIMENT.value)
  result['wall_seconds'] = time.perf_counter() - t0
  result['figure'] = figure(result)
  path = os.path.join(_OUT.value, f'{_EXPERIMENT.value}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(_thinned(result), f, indent=1)
  for r in result['runs']:
    summary = {k: (f'{v["mean"]:.4g} ± {v["std"]:.2g}' if isinstance(v, dict) else
                   [round(x, 3) for x in v]) for k, v in r['summary'].items()}
    print(f'{r["name"]:28s} {summary}')
  print(f'{path}, {result["figure"]}; {result["wall_seconds"]:.0f} s on {runtime.machine_text(result["machine"])}')


if __name__ == '__main__':
  app.run(main)
