r"""The paper's claims, measured until training has flattened: one command per experiment.

  python experiments/claims.py --experiment=mode_collapse   # WGAN vs WGAN-GP vs GAN: 2-D mixtures, Stacked MNIST
  python experiments/claims.py --experiment=loss_meaning    # the loss tracks sample quality
  python experiments/claims.py --experiment=architectures   # MLP and no-BN generators
  python experiments/claims.py --experiment=optimizers      # RMSProp vs Adam
  python experiments/claims.py --experiment=precision       # (ours) bfloat16 vs float32

Each run trains all its seeds in one process (``num_seeds``), keeps a
checkpoint every ``num_gen_iters / --checkpoints`` generator iterations,
measures every one of them with ``wgan_jax.evaluate`` and writes
``<workdirs>/<experiment>/<run>/claims_run.json``: the settings, the machine,
the training signal, each measure per checkpoint with the wall-clock seconds at
which training reached it, and whether the stopping rule was met. The
experiment's ``<out>/<experiment>.json`` and its figures are built from those
files, so runs can train in separate processes side by side (``--only=RUN``
each, e.g. one per GPU process) and one more ``--summarize_only`` collects them;
a run whose workdir is not on this machine (trained in another session or on
another machine) keeps its entry of the ``<out>/<experiment>.json`` already
there, and its final grid the copy in ``<out>/grids/``.
A run that was stopped (SIGTERM, a crash, the end of a session) resumes from
its last checkpoint when the same command runs again, its wall-clock seconds
continuing from there (``CLOCK_FILE``, with the machine of each session); a
run already measured with the same settings is not trained again.

The stopping rule: a run has flattened once the median-filtered training
signal (the Wasserstein estimate; the discriminator's loss for the GAN;
window 5% of the run) stays, from then to the end, within ``FLAT_TOLERANCE``
(10%) of the signal's size around its final value (read half a window before
the end, the last point whose window is whole); the rule is met when that
happened before the last quarter of the run began. The size is the larger of
the final value and the value at a tenth of the run: not the run's range,
since the warm-up's 100 critic steps per iteration make the first estimates
several times larger than the rest and any later drift would look flat; not
the final value alone, since a WGAN's estimate falls towards zero as its
samples approach the data, and 10% of almost nothing is never met. Budgets
(``BUDGETS``) come from pilot runs (experiments/RESULTS.md); every run records
whether it met the rule, and where (``--summarize_only`` applies the rule
again to runs measured before it changed).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image
from scipy import stats

from wgan_jax import configs, evaluate, files, preemption, runtime, train, visualize, writers

_EXPERIMENT = flags.DEFINE_enum(
    'experiment', None,
    ['loss_meaning', 'mode_collapse', 'architectures', 'optimizers', 'precision'],
    'Which experiment to run.', required=True)
_OUT = flags.DEFINE_string('out', 'experiments/results/convergence', 'Where the figures and JSON go.')
_WORKDIRS = flags.DEFINE_string('workdirs', '/tmp/wgan_jax_claims', "Where the runs' workdirs go.")
_SEEDS = flags.DEFINE_integer('num_seeds', 0, "Seeds per run (0: the experiment's own).")
_ITERS = flags.DEFINE_integer('num_gen_iters', 0, "Generator iterations (0: the run's budget).")
_CHECKPOINTS = flags.DEFINE_integer('checkpoints', 20, 'Checkpoints measured per run.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these runs (by name) of the experiment.')
_SET = flags.DEFINE_list('set', [], 'FIELD=VALUE settings for every run, after its own '
                         '(e.g. a quick check: warmup_gen_iters=0,ngf=8,ndf=8).')
_SUMMARIZE_ONLY = flags.DEFINE_bool('summarize_only', False,
                                    'Rebuild the JSON and figures from the workdirs.')
_PART = flags.DEFINE_string(
    'seeds', '', "Train only the seeds FIRST:END of each run (offsets, e.g. 0:2; '': all), in "
    "<run>/seeds_FIRST-END/: a part that fits one session or lease; --summarize_only merges "
    'the parts, and the seeds the summary in --out already has, into the run.')

# Generator iterations per dataset, from pilot runs (experiments/RESULTS.md):
# long enough for the WGAN's median-filtered estimate to flatten.
BUDGETS = {'gaussians8': 20_000, 'gaussians25': 20_000, 'mnist5k': 10_000,
           'stacked_mnist5k': 10_000, 'digits': 2_000}
FLAT_TOLERANCE = 0.1
# The stopping rule's version, stamped on each seed's curve it rules: a stored
# summary keeps only about 200 points of a curve, where the rule lands a few
# iterations off, so a stored seed ruled by this version keeps its flat_from.
# 2: the median window shrinks at the ends and the rule reads up to the last
# whole window (1: an edge-padded window, read to the end).
RULE = 2
LOSSES = ('wgan', 'wgan-gp', 'gan')

# name: (dataset, overrides). Every run starts from its dataset's preset (the
# library's own: MLP width 512, nz 2, batch 256 on the mixtures; DCGAN at 32px
# on the MNIST sets) and its loss's defaults.
RUNS = {
    'mode_collapse': {
        f'{data}-{loss}': (data, dict(loss=loss, num_seeds=5))
        for data in ('gaussians8', 'gaussians25', 'stacked_mnist5k') for loss in LOSSES
    } | {
        # WGAN-GP's preset is the paper's (Algorithm 1, tuned for images); its
        # authors' toy script (gan_toy.py) used these on the 2-D mixtures.
        f'{data}-wgan-gp-toy': (data, dict(loss='wgan-gp', gp_weight=0.1, beta1=0.5, num_seeds=5))
        for data in ('gaussians8', 'gaussians25')
    },
    'loss_meaning': {
        f'{data}-{loss}': (data, dict(loss=loss, num_seeds=2 if data == 'mnist5k' else 5))
        for data in ('mnist5k', 'gaussians8') for loss in ('wgan', 'gan')
    },
    'architectures': {
        f'{arch}-{loss}': ('mnist5k', dict(loss=loss, num_seeds=2, **overrides))
        for arch, overrides in (('mlp_generator', dict(generator='mlp', ngf=512)),
                                ('dcgan_no_bn', dict(no_bn=True)))
        for loss in ('wgan', 'gan')
    },
    'optimizers': {
        f'mnist5k-{opt}': ('mnist5k', dict(loss='wgan', optimizer=opt, num_seeds=2))
        for opt in ('rmsprop', 'adam')
    },
    # Not a claim of the paper: what --compute_dtype=bfloat16 does to the
    # samples, since it leaves step-for-step parity (docs/parity.md).
    'precision': {
        f'mnist5k-{dtype}': ('mnist5k', dict(loss='wgan', compute_dtype=dtype, num_seeds=2))
        for dtype in ('float32', 'bfloat16')
    },
}
# Runs that are another experiment's run with the same settings: trained once,
# in the other's workdir, and read by both (the ring's 5 seeds of mode collapse
# also serve the loss's meaning; RMSProp in the optimisers and float32 in the
# precision experiment are the loss experiment's MNIST WGAN).
SAME_AS = {
    ('loss_meaning', 'gaussians8-wgan'): ('mode_collapse', 'gaussians8-wgan'),
    ('loss_meaning', 'gaussians8-gan'): ('mode_collapse', 'gaussians8-gan'),
    ('optimizers', 'mnist5k-rmsprop'): ('loss_meaning', 'mnist5k-wgan'),
    ('precision', 'mnist5k-float32'): ('loss_meaning', 'mnist5k-wgan'),
}
RUN_FILE = 'claims_run.json'
# Generator iteration -> seconds of training to reach it, over every session
# of a run (a run stopped by SIGTERM, a crash or the end of a session resumes
# from its last checkpoint when the same command runs again).
CLOCK_FILE = 'claims_clock.json'
# The measures plotted, in this order, where a dataset's evaluation has them.
MEASURES = ('modes', 'high_quality', 'w1', 'mode_kl', 'fd', 'kid', 'class_kl')


def run_config(dataset: str, overrides: dict, num_gen_iters: int = 0, num_seeds: int = 0,
               sets: tuple[str, ...] = (), checkpoints: int = 20):
  """The dataset's preset, the loss's defaults, then the run's settings (then
  the command line's: ``num_gen_iters``, ``num_seeds``, ``sets`` when given)."""
  config = configs.get_config(dataset, overrides.get('loss', 'wgan'))
  overrides = dict(overrides)
  overrides.setdefault('num_gen_iters', BUDGETS[dataset])
  if num_gen_iters:
    overrides['num_gen_iters'] = num_gen_iters
  if num_seeds:
    overrides['num_seeds'] = num_seeds
  for field, value in overrides.items():
    config[field] = value
  for item in sets:
    field, value = item.split('=', 1)
    config[field] = type(config[field])(value) if not isinstance(config[field], bool) else (
        value.lower() in ('1', 'true', 'yes'))
  every = max(1, config.num_gen_iters // checkpoints)
  config.update(progress_bar=False, keep_checkpoints=checkpoints + 2,
                checkpoint_every=every, sample_every=every)
  return config


def _run_config(dataset: str, overrides: dict):
  return run_config(dataset, overrides, _ITERS.value, _SEEDS.value, tuple(_SET.value),
                    _CHECKPOINTS.value)


def source(experiment: str, name: str) -> tuple[str, str]:
  """The experiment and run whose workdir holds this run (itself, or SAME_AS's)."""
  return SAME_AS.get((experiment, name), (experiment, name))


def part_config(config, part: str):
  """The config of the seeds ``FIRST:END`` of a run, and the part's directory
  under the run's workdir ('' for all its seeds)."""
  if not part:
    return config, ''
  try:
    first, end = (int(v) for v in part.split(':'))
  except ValueError:
    raise app.UsageError(f'--seeds={part}: expected FIRST:END, e.g. 0:2') from None
  if not 0 <= first < end <= config.num_seeds:
    raise app.UsageError(f'--seeds={part}: the run has seeds 0:{config.num_seeds}')
  if (first, end) == (0, config.num_seeds):
    return config, ''
  config = config.copy_and_resolve_references()
  config.seed += first
  config.num_seeds = end - first
  return config, f'seeds_{first}-{end}'


def _part_of(config, part_dir: str):
  """The config of the part trained in ``part_dir`` (a run's ``seeds_A-B``)."""
  first, end = os.path.basename(part_dir).removeprefix('seeds_').split('-')
  return part_config(config, f'{first}:{end}')[0]


def seed_dirs(workdir: str, config) -> list[str]:
  if config.num_seeds > 1:
    return [os.path.join(workdir, f'seed_{config.seed + k}') for k in range(config.num_seeds)]
  return [workdir]


def train_and_measure(name: str, dataset: str, config, workdir: str) -> dict:
  """Trains one run (every seed), measures every checkpoint, writes RUN_FILE."""
  clock, sessions = read_clock(workdir)
  t0 = time.perf_counter()

  def tick(done):
    if not sessions or sessions[-1]['pid'] != os.getpid():
      # A resumed run restarts from its newest complete checkpoint: the
      # newest iteration with a time before this one (a checkpoint being
      # written when the run died is not complete; its time is overwritten).
      resumed = max((k for k in clock if k < done), default=0)
      sessions.append({'pid': os.getpid(), 'from_gen_iter': resumed,
                       'offset': clock.get(resumed, 0.0),
                       'machine': runtime.machine_text(runtime.machine(devices=True))})
    clock[done] = sessions[-1]['offset'] + time.perf_counter() - t0
    files.write_atomic(os.path.join(workdir, CLOCK_FILE),
                       lambda f: json.dump({'seconds': clock, 'sessions': sessions}, f),
                       text=True)

  logging.info('Training %s: %d generator iterations, %d seed(s).', name,
               config.num_gen_iters, config.num_seeds)
  try:
    train.train(config, workdir, on_samples=lambda done, grid, curve: tick(done))
  except preemption.Interrupted as e:
    if e.gen_iter is not None:
      tick(e.gen_iter)
    raise
  train_seconds = clock.get(config.num_gen_iters, time.perf_counter() - t0)
  result = measure(name, dataset, config, workdir)
  result['train_seconds'] = train_seconds
  with open(os.path.join(workdir, RUN_FILE), 'w', encoding='utf-8') as f:
    json.dump(result, f)
  return result


def measure(name: str, dataset: str, config, workdir: str) -> dict:
  """Every checkpoint of a run's seeds measured, with the clock's seconds:
  the run's result (a run still training: its checkpoints so far, with
  ``reached`` the newest iteration timed)."""
  clock, sessions = read_clock(workdir)
  seeds = []
  for seed_dir in seed_dirs(workdir, config):
    # A fresh measurement of every checkpoint, written whole once taken: two
    # summaries of one workdir at once (claims_all.sh invocations sharing
    # WORKDIRS that end together) each replace the file, neither removing the
    # other's nor appending to it.
    evaluation = evaluate.evaluate(seed_dir, which='all', progress=False, out=os.devnull)
    files.write_atomic(os.path.join(seed_dir, evaluate.RESULTS),
                       lambda f: f.writelines(json.dumps(r) + '\n' for r in evaluation), text=True)
    for record in evaluation:
      record['seconds'] = clock.get(record['gen_iter'])
    records = writers.read_metrics(os.path.join(seed_dir, 'metrics.jsonl'))
    seeds.append({'workdir': seed_dir, 'seed': config.seed + len(seeds),
                  'evaluation': evaluation, 'training': curve(records)})
  reached = max(clock, default=0)
  result = {'name': name, 'dataset': dataset, 'settings': settings(config),
            'train_seconds': clock.get(reached), 'reached': reached,
            'machine': runtime.machine(devices=True), 'sessions': sessions, 'seeds': seeds}
  result['summary'] = summary(result['seeds'])
  return result


def read_clock(workdir: str) -> tuple[dict[int, float], list[dict]]:
  """The run's seconds per generator iteration so far, and its sessions (where
  each began, on which machine)."""
  try:
    with open(os.path.join(workdir, CLOCK_FILE), encoding='utf-8') as f:
      saved = json.load(f)
  except FileNotFoundError:
    return {}, []
  return {int(k): v for k, v in saved['seconds'].items()}, saved['sessions']


def measured(workdir: str, config) -> dict | None:
  """The run's RUN_FILE when it holds these settings (a finished run is not
  trained or measured again)."""
  try:
    with open(os.path.join(workdir, RUN_FILE), encoding='utf-8') as f:
      result = json.load(f)
  except FileNotFoundError:
    return None
  return result if same_settings(result.get('settings', {}), config) else None


def settings(config) -> dict:
  keys = ('dataset', 'loss', 'generator', 'critic', 'no_bn', 'critic_bn', 'ngf', 'ndf', 'nz',
          'image_size', 'channels', 'batch_size', 'optimizer', 'lr_critic', 'lr_gen', 'beta1',
          'clip', 'n_critic', 'num_gen_iters', 'num_seeds', 'seed', 'compute_dtype')
  kept = {k: config.get(k) for k in keys if k in config}
  if config.get('loss') == 'wgan-gp':
    kept['gp_weight'] = config.get('gp_weight')
  return kept


# Settings recorded only since runs began to differ in them, with the value
# every run measured before then had.
RECORDED_LATER = {'gp_weight': 10.0}


def same_settings(stored: dict, config, ignore: tuple[str, ...] = ()) -> bool:
  """Whether a stored run's settings are those of ``config`` (but ``ignore``)."""
  mine = settings(config)
  theirs = {**{k: v for k, v in RECORDED_LATER.items() if k in mine}, **stored}
  return ({k: v for k, v in theirs.items() if k not in ignore}
          == {k: v for k, v in mine.items() if k not in ignore})


def curve(records: list[dict]) -> dict:
  """The training signal per generator iteration, its median filter (window
  5% of the run, as the paper's plots smooth it) and the stopping rule."""
  key = 'wasserstein' if 'wasserstein' in records[0] else 'critic_loss'
  values = np.array([r[key] for r in records], np.float64)
  window = max(1, len(values) // 20)
  median = visualize.median_filter(values, window)
  gen_iter = [r['gen_iter'] for r in records]
  return {'key': key, 'gen_iter': gen_iter, 'median': median.tolist(), 'window': window,
          'flat_from': flattened_at(gen_iter, median, window), 'rule': RULE}


def settled(gen_iter, window: int = 1) -> int:
  """How many points of a curve have their whole median window: those in the
  last half window lean on fewer values (and, in curves stored before
  ``visualize.median_filter`` shrank its window at the ends, on copies of the
  last one), so the rule and the checkpoints read the signal up to there."""
  gen_iter = np.asarray(gen_iter)
  end = gen_iter[-1] - window // 2
  return max(1, int(np.searchsorted(gen_iter, end, side='right')))


def flattened_at(gen_iter, median, window: int = 1,
                 tolerance: float = FLAT_TOLERANCE) -> int | None:
  """The generator iteration from which the median-filtered signal stays
  within ``tolerance`` of the signal's size (its final value or, if larger,
  its value at a tenth of the run) of its final value; None when that is not
  before the last quarter of the run (the rule is not met). The final value
  is the last one with a whole window (``settled``)."""
  median = np.asarray(median, np.float64)
  n = len(median)
  if n < 8:
    return None
  full = settled(gen_iter, window)
  final = median[full - 1]
  band = tolerance * max(abs(final), abs(median[n // 10]), 1e-12)
  outside = np.nonzero(np.abs(median[:full] - final) > band)[0]
  first = 0 if len(outside) == 0 else outside[-1] + 1
  return int(gen_iter[first]) if first <= n - n // 4 else None


def summary(seeds: list[dict]) -> dict:
  """Per measure: mean and std over seeds of the newest checkpoint's value;
  the stopping rule per seed; with several checkpoints, the Spearman
  correlation of the training signal with each measure, per seed."""
  out = {'flat_from': [s['training']['flat_from'] for s in seeds]}
  finals = [s['evaluation'][-1] for s in seeds]
  for m in MEASURES:
    if m in finals[0]:
      values = np.array([f[m] for f in finals])
      out[m] = {'mean': float(values.mean()), 'std': float(values.std()),
                'values': values.tolist()}
  if len(seeds[0]['evaluation']) >= 3:
    for m in ('w1', 'fd', 'class_kl', 'mode_kl', 'modes'):
      if m not in finals[0]:
        continue
      rhos = []
      for s in seeds:
        xs = [at(s['training'], e['gen_iter']) for e in s['evaluation']]
        ys = [e[m] for e in s['evaluation']]
        # Undefined (nan) where either never changes, e.g. 10 of 10 digits throughout.
        constant = len(set(xs)) < 2 or len(set(ys)) < 2
        rhos.append(float('nan') if constant else float(stats.spearmanr(xs, ys).statistic))
      out[f'spearman_{m}'] = rhos
  return out


def collected(name: str, dataset: str, config, workdir: str, kept: dict | None) -> dict | None:
  """The run from every place that holds seeds of it: its workdir (all its
  seeds, or parts of them in ``seeds_*/``; finished, or still training and
  measured so far) and ``kept``, its entry in an earlier summary. A seed found
  in several places is taken from the one that trained it furthest."""
  found = [] if kept is None else [kept]
  for d in [workdir] + sorted(glob.glob(os.path.join(workdir, 'seeds_*'))):
    if os.path.exists(os.path.join(d, RUN_FILE)):
      with open(os.path.join(d, RUN_FILE), encoding='utf-8') as f:
        found.append(ruled(json.load(f)))
    elif os.path.exists(os.path.join(d, CLOCK_FILE)):
      if not glob.glob(os.path.join(d, '**', 'checkpoints'), recursive=True):
        # Packed on another machine (claims_all.sh's PACK) before it finished.
        logging.warning('%s: %s unfinished and without its checkpoints; left out.', name, d)
        continue
      logging.info('%s: %s still training; its checkpoints so far are measured.', name, d)
      found.append(measure(name, dataset, config if d == workdir else _part_of(config, d), d))
  if len(found) <= 1:
    return found[0] if found else None
  return merged(name, config, found)


def _seed_number(seed: dict, result: dict, k: int) -> int:
  if 'seed' in seed:
    return seed['seed']
  match = re.search(r'seed_(\d+)$', seed['workdir'])  # measured before seeds were numbered
  return int(match.group(1)) if match else result['settings']['seed'] + k


def merged(name: str, config, results: list[dict]) -> dict:
  """One run from several results holding seeds of it (parts trained apart)."""
  by_seed = {}
  for i, r in enumerate(results):
    if not same_settings(r['settings'], config, ignore=('seed', 'num_seeds')):
      logging.warning('%s: seeds %s were trained with other settings; left out.', name,
                      [_seed_number(s, r, k) for k, s in enumerate(r['seeds'])])
      continue
    for k, s in enumerate(r['seeds']):
      seed = _seed_number(s, r, k)
      if seed not in by_seed or (s['evaluation'][-1]['gen_iter']
                                 >= by_seed[seed][1]['evaluation'][-1]['gen_iter']):
        by_seed[seed] = (i, {**s, 'seed': seed})
  seeds = [s for _, (_, s) in sorted(by_seed.items())]
  used = {i: results[i] for i, _ in by_seed.values()}
  parts = []
  for i, r in sorted(used.items()):
    mine_here = [s['seed'] for _, (j, s) in sorted(by_seed.items()) if j == i]
    for part in r.get('parts') or [{'train_seconds': r.get('train_seconds'),
                                    'reached': r.get('reached'), 'machine': r['machine']}]:
      part_seeds = [x for x in part.get('seeds', mine_here) if x in mine_here]
      if part_seeds:
        parts.append({**part, 'seeds': part_seeds})
  result = {'name': name, 'dataset': results[0]['dataset'], 'settings': settings(config),
            'train_seconds': sum(p['train_seconds'] or 0 for p in parts),
            'reached': min(s['evaluation'][-1]['gen_iter'] for s in seeds),
            'machine': parts[0]['machine'], 'parts': parts,
            'sessions': [x for r in used.values() for x in r.get('sessions', [])], 'seeds': seeds}
  result['summary'] = summary(seeds)
  return result


def ruled(result: dict, stored: bool = False) -> dict:
  """A measured run with the stopping rule (and its summary) applied again;
  for a ``stored`` run (a summary's thinned curves), only to the seeds that an
  older version of the rule (``RULE``) ruled."""
  for s in result['seeds']:
    c = s['training']
    if not (stored and c.get('rule') == RULE):
      c['flat_from'] = flattened_at(c['gen_iter'], c['median'], c.get('window', 1))
      c['rule'] = RULE
  result['summary'] = summary(result['seeds'])
  return result


def at(curve_: dict, gen_iter: int) -> float:
  """The median-filtered signal at (or just before) a generator iteration; in
  the run's last half window, where the window last fits (``settled``)."""
  i = int(np.searchsorted(curve_['gen_iter'], gen_iter, side='right')) - 1
  return curve_['median'][max(min(i, settled(curve_['gen_iter'], curve_.get('window', 1)) - 1), 0)]


# --- figures ---------------------------------------------------------------------


def _matched(runs_seeds: list[dict]) -> list[list[int]]:
  """Per checkpoint that every seed has, the index of it in each seed's list.

  The first seed's checkpoints lead; another seed's nearest one matches when it
  lies within half the first seed's spacing there. So seeds that one SIGTERM
  stopped a few iterations apart match, while a checkpoint only one part of a
  run has (its own SIGTERM) or a part still training has not reached is left
  out, and no seed's curve shifts by a checkpoint.
  """
  first = [e['gen_iter'] for e in runs_seeds[0]['evaluation']]
  others = [[e['gen_iter'] for e in s['evaluation']] for s in runs_seeds[1:]]
  rows = []
  for i, t in enumerate(first):
    tol = min((abs(t - first[j]) for j in (i - 1, i + 1) if 0 <= j < len(first)),
              default=np.inf) / 2
    row = [i]
    for its in others:
      j = min(range(len(its)), key=lambda j: abs(its[j] - t))
      if abs(its[j] - t) >= tol:
        break
      row.append(j)
    else:
      rows.append(row)
  return rows


def _band(runs_seeds: list[dict], measure: str, x: str):
  """x values and the mean, min and max over seeds of ``measure``, at the
  checkpoints every seed has (``_matched``) whose x the first seed knows."""
  rows = _matched(runs_seeds)
  ys = np.array([[s['evaluation'][row[k]][measure] for row in rows]
                 for k, s in enumerate(runs_seeds)], np.float64).reshape(len(runs_seeds), -1)
  xs = np.array([runs_seeds[0]['evaluation'][row[0]].get(x) for row in rows], np.float64)
  # Seeds in processes of their own stop a few iterations apart on a SIGTERM
  # and the run's clock times one of those checkpoints: the others have no
  # seconds, and a gap there would break the curve.
  known = ~np.isnan(xs)
  return xs[known], ys[:, known].mean(0), ys[:, known].min(0), ys[:, known].max(0)


def y_scale(run_maxima: list[float]) -> str:
  """'symlog' when one run's measure is thousands of times another's (a
  collapsed generator's unbounded pixels put its FD at 1e7-1e8), so that the
  runs that train stay readable beside it; 'linear' otherwise."""
  peaks = [abs(v) for v in run_maxima if np.isfinite(v)]
  return 'symlog' if len(peaks) > 1 and max(peaks) > 1e3 * max(min(peaks), 1.0) else 'linear'


def figure(result: dict, x: str = 'gen_iter') -> str:
  """One column per dataset; the training signal on top, then each of the
  dataset's measures over generator iterations (``x='gen_iter'``) or
  wall-clock seconds; one line per run, the mean over seeds with their range
  shaded."""
  plt = visualize._pyplot()  # pylint: disable=protected-access
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  runs = result['runs']
  datasets = list(dict.fromkeys(r['dataset'] for r in runs))
  # Each column stacks only its own measures, so a dataset measured by other
  # numbers (2-D mixtures against digits) leaves no empty panels above its own.
  measures = {d: [m for m in MEASURES if any(m in r['seeds'][0]['evaluation'][0]
                                             for r in runs if r['dataset'] == d)]
              for d in datasets}
  n_rows = 1 + max(len(ms) for ms in measures.values())
  fig, axes = plt.subplots(n_rows, len(datasets),
                           figsize=(4.6 * len(datasets), 2.6 * n_rows), dpi=90,
                           squeeze=False, sharex='col')
  # One colour per label (the loss, the variant) in every column.
  labels = list(dict.fromkeys(r['name'].removeprefix(r['dataset'] + '-') for r in runs))
  for col, dataset in enumerate(datasets):
    rows = measures[dataset]
    peaks = {row: [] for row in range(1, len(rows) + 1)}
    lows = {row: [0.0] for row in range(1, len(rows) + 1)}
    for r in [r for r in runs if r['dataset'] == dataset]:
      label = r['name'].removeprefix(dataset + '-')
      seeds = r['seeds']
      c = seeds[0]['training']
      to_x = lambda it: np.asarray(it, np.float64)  # noqa: E731
      if x == 'seconds':
        # Iterations to seconds through the clock read at each checkpoint.
        known = [(e['gen_iter'], e['seconds']) for e in seeds[0]['evaluation']
                 if e.get('seconds') is not None]
        its, secs = zip(*([(0, 0.0)] + known)) if known else ((0,), (np.nan,))
        to_x = lambda it, its=its, secs=secs: np.interp(it, its, secs)  # noqa: E731
      # Each run's signal scaled to its own range: WGAN estimates and GAN
      # losses differ in units, what matters here is where each flattens.
      full = settled(c['gen_iter'], c.get('window', 1))
      median = np.asarray(c['median'][:full])
      scaled = (median - median.min()) / max(np.ptp(median), 1e-12)
      line = axes[0, col].plot(to_x(c['gen_iter'][:full]), scaled, lw=1.2, label=label,
                               color=f'C{labels.index(label)}')[0]
      if c['flat_from'] is not None:
        axes[0, col].axvline(to_x(c['flat_from']), color=line.get_color(), ls=':', lw=0.8)
      axes[0, col].set_ylabel('training signal (median, scaled)', fontsize=8)
      for row, m in enumerate(rows, start=1):
        if m not in seeds[0]['evaluation'][0]:
          continue
        xs, mean, lo, hi = _band(seeds, m, x)
        axes[row, col].plot(xs, mean, 'o-', ms=2, lw=1.2, color=line.get_color(), label=label)
        axes[row, col].fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        peaks[row].append(float(np.nanmax(np.abs(hi))))
        lows[row].append(float(np.nanmin(lo)))
        floor = seeds[0]['evaluation'][-1].get(f'{m}_floor')
        if floor is not None:
          axes[row, col].axhline(floor, color='k', ls=':', lw=0.8)
          lows[row].append(floor)
        axes[row, col].set_ylabel(m, fontsize=8)
    for row, run_maxima in peaks.items():
      if y_scale(run_maxima) == 'symlog':
        axes[row, col].set_yscale('symlog', linthresh=1.0)
        # Left to itself symlog mirrors the axis into decades below zero no measure reaches.
        axes[row, col].set_ylim(bottom=2 * min(lows[row]))
    for row in range(len(rows) + 1, n_rows):
      axes[row, col].set_axis_off()
    axes[0, col].set_title(dataset)
    axes[0, col].legend(fontsize=7)
    bottom = axes[len(rows), col]
    # sharex keeps tick labels only on the figure's last row; a shorter column
    # needs them on its own last panel.
    bottom.xaxis.set_tick_params(labelbottom=True)
    # Five-digit seconds run into each other at matplotlib's default count.
    bottom.xaxis.set_major_locator(MaxNLocator(nbins=5))
    bottom.set_xlabel('generator iterations' if x == 'gen_iter'
                      else 'wall-clock seconds of training')
  fig.suptitle(f'{result["experiment"]}: mean over seeds, band = their range;\n'
               'dotted: real data (the floor), or where the signal flattened', fontsize=9)
  # Half an inch at the top for the two-line title above the columns' own.
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.6 * n_rows)))
  suffix = '' if x == 'gen_iter' else '_seconds'
  path = os.path.join(_OUT.value, f'{result["experiment"]}{suffix}.png')
  fig.savefig(path)
  plt.close(fig)
  return path


def final_grid(run: dict, experiment: str) -> str | None:
  """The run's newest sample grid (of its first seed), copied to
  ``OUT/grids/<run>.png`` so that a later summary without the workdirs
  (another session, another machine) still shows it; that copy when they are
  gone. A seed trained later in a part of its own replaces the copy only where
  there is none, so the grid stays the first seed's. A run read from another
  (``SAME_AS``) shares that run's copy."""
  kept = os.path.join(_OUT.value, 'grids', f'{source(experiment, run["name"])[1]}.png')
  for seed in run['seeds'][:1] if os.path.exists(kept) else run['seeds']:
    samples = os.path.join(seed['workdir'], 'samples')
    names = sorted(n for n in os.listdir(samples) if n.startswith(('fake_', 'scatter_'))
                   ) if os.path.isdir(samples) else []
    if names:
      os.makedirs(os.path.dirname(kept), exist_ok=True)
      shutil.copyfile(os.path.join(samples, names[-1]), kept)
      break
  return kept if os.path.exists(kept) else None


def previous_runs(experiment: str) -> dict[str, dict]:
  """The runs of the experiment's summary already in ``--out``, by name, with
  the stopping rule applied again where an older version of it ruled them."""
  try:
    with open(os.path.join(_OUT.value, f'{experiment}.json'), encoding='utf-8') as f:
      return {r['name']: ruled(r, stored=True) for r in json.load(f)['runs']}
  except FileNotFoundError:
    return {}


def samples_figure(result: dict) -> str:
  """Each run's final sample grid (its first seed)."""
  plt = visualize._pyplot()  # pylint: disable=protected-access
  runs = result['runs']
  cols = min(len(runs), 3)
  nrows = -(-len(runs) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.8 * nrows), dpi=90,
                           squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for ax, r in zip(axes.flat, runs):
    grid = final_grid(r, result['experiment'])
    if grid is None:  # stopped before its first grid, or trained where no copy was kept
      ax.set_title(f'{r["name"]}: no grid here', fontsize=8)
      continue
    with Image.open(grid) as im:
      ax.imshow(np.asarray(im.convert('RGB')))
    ax.set_title(f'{r["name"]} at {r.get("reached") or r["settings"]["num_gen_iters"]}', fontsize=8)
  fig.tight_layout()
  path = os.path.join(_OUT.value, f'{result["experiment"]}_samples.png')
  fig.savefig(path)
  plt.close(fig)
  return path


def thinned(result: dict, points: int = 200) -> dict:
  """The result with each training curve cut to about ``points`` points (the
  per-iteration values stay in each run's metrics.jsonl). The points that
  ``at`` reads are kept, at each checkpoint and the last whole window, so the
  Spearman correlations of a summary rebuilt from this one are the same."""
  result = json.loads(json.dumps(result))
  for r in result['runs']:
    for seed in r['seeds']:
      c = seed['training']
      its = c['gen_iter']
      keep = set(range(0, len(its), max(1, len(its) // points))) | {len(its) - 1}
      keep |= {int(np.searchsorted(its, e['gen_iter'], side='right')) - 1
               for e in seed['evaluation']} - {-1}
      keep.add(settled(its, c.get('window', 1)) - 1)
      kept = sorted(keep)
      c['gen_iter'] = [its[i] for i in kept]
      c['median'] = [round(c['median'][i], 6) for i in kept]
  return result


def main(argv):
  del argv
  experiment = _EXPERIMENT.value
  os.makedirs(_OUT.value, exist_ok=True)
  t0 = time.perf_counter()
  runs = []
  previous = previous_runs(experiment) if _SUMMARIZE_ONLY.value else {}
  for name in RUNS[experiment]:
    if _ONLY.value and name not in _ONLY.value:
      continue
    from_experiment, from_name = source(experiment, name)
    dataset, overrides = RUNS[from_experiment][from_name]
    workdir = os.path.join(_WORKDIRS.value, from_experiment, from_name)
    if _SUMMARIZE_ONLY.value:
      # Seeds trained in an earlier session or on another machine, whose
      # workdirs are gone, are kept from the summary already in --out.
      result = collected(name, dataset, _run_config(dataset, overrides), workdir,
                         previous.get(name))
      if result is None:
        logging.warning('%s: not in %s nor in %s; left out.', name, workdir, _OUT.value)
        continue
    else:
      config, part = part_config(_run_config(dataset, overrides), _PART.value)
      workdir = os.path.join(workdir, part) if part else workdir
      result = measured(workdir, config)
      if result is not None:
        logging.info('%s: already trained and measured in %s.', name, workdir)
      else:
        result = train_and_measure(name, dataset, config, workdir)
    runs.append({**result, 'name': name})
  if not runs:
    raise SystemExit(f'no run of {experiment} to summarise in {_WORKDIRS.value}.')
  result = {'experiment': experiment, 'runs': runs, 'machine': runs[0]['machine'],
            'wall_seconds': None if _SUMMARIZE_ONLY.value else time.perf_counter() - t0}
  result['figures'] = [figure(result), figure(result, 'seconds'), samples_figure(result)]
  out = os.path.join(_OUT.value, f'{experiment}.json')
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(thinned(result), f, indent=1)
  for r in runs:
    s = r['summary']
    cells = {k: (f'{v["mean"]:.4g} ± {v["std"]:.2g}' if isinstance(v, dict) else v)
             for k, v in s.items()}
    reached = r.get('reached', r['settings']['num_gen_iters'])
    progress = '' if reached >= r['settings']['num_gen_iters'] else f' (at {reached})'
    print(f'{r["name"]:26s} {r["train_seconds"] or 0:7.0f} s{progress}  {cells}')
  print(f'{out}, {", ".join(result["figures"])}; {runtime.machine_text(result["machine"])}')


def run(argv):
  try:
    main(argv)
  except preemption.Interrupted as e:
    print(e)
    raise SystemExit(e.exit_status) from None


if __name__ == '__main__':
  app.run(run)
