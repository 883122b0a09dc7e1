r"""The tables of experiments/RESULTS.md, from the JSON files claims.py writes.

  python experiments/claims_tables.py [--results=experiments/results]
"""

from __future__ import annotations

import json
import os
import sys

from wgan_jax import runtime

MEASURES = {
    'modes': 'modes covered', 'high_quality': 'high-quality share', 'w1': 'W1',
    'fd': 'Fréchet distance', 'kid': 'KID', 'class_kl': 'class KL', 'mode_kl': 'mode KL',
}


def _num(x: float, digits: int = 3) -> str:
  """``digits`` significant digits; whole numbers below a million written out
  (1,000 modes, FD 3,200, a spread of 130) rather than as 1e+03 or 1.3e+02."""
  rounded = float(f'{x:.{digits}g}')  # 999.5 rounds to 1,000 too
  return f'{rounded:,.0f}' if 1 <= abs(rounded) < 1e6 and rounded.is_integer() else f'{x:.{digits}g}'


def _cell(stat: dict) -> str:
  return f'{_num(stat["mean"])} ± {_num(stat["std"], 2)}'


def _rho(x: float) -> str:
  # A measure equal at every checkpoint (10 of 10 digits throughout) has no
  # ranks to correlate: spearmanr's nan.
  return 'n/a' if x != x else f'{x:+.2f}'


def table(result: dict) -> str:
  runs = result['runs']
  keys = [k for k in MEASURES if any(k in r['summary'] for r in runs)]
  rhos = sorted({k for r in runs for k in r['summary'] if k.startswith('spearman_')})
  head = ['run', 'seeds', 'iterations', *(MEASURES[k] for k in keys),
          *(f'Spearman (signal, {k[9:]})' for k in rhos), 'flat from', 'train s']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for r in runs:
    s = r['summary']
    total = r['settings']['num_gen_iters']
    reached = r.get('reached', total)
    iters = str(total) if reached >= total else f'{reached} of {total} (training)'
    cells = [r['name'], str(len(r['seeds'])), iters]
    cells += [_cell(s[k]) if k in s else '' for k in keys]
    cells += [', '.join(map(_rho, s[k])) if k in s else '' for k in rhos]
    flat = s.get('flat_from')
    cells.append('' if flat is None else ', '.join('-' if f is None else str(f) for f in flat))
    parts = len(r.get('parts', ()))
    cells.append((f'{r["train_seconds"]:.0f}' + (f' ({parts} parts)' if parts > 1 else ''))
                 if r.get('train_seconds') else '')
    lines.append('| ' + ' | '.join(cells) + ' |')
  floors = {}
  for r in runs:
    last = r['seeds'][0]['evaluation'][-1]
    found = [f'{MEASURES[k]} {_num(last[k + "_floor"])}' for k in keys if k + '_floor' in last]
    if found:
      floors.setdefault(r['dataset'], ', '.join(found))
  note = ''
  if any(x != x for r in runs for k in rhos for x in r['summary'].get(k, ())):
    note += ('\nSpearman n/a: the measure was the same at every checkpoint of that seed, '
             'so it has no ranks to correlate.')
  if floors:
    note += ('\nReal data of the same size (the floor): ' + '; '.join(
        f'{d}: {text}' for d, text in floors.items()) + '.')
  wall = result.get('wall_seconds') or 0
  took = f'; the command took {wall / 60:.0f} min' if wall > 1 else ''
  return '\n'.join(lines) + '\n' + note + f'\n\n{runtime.machine_text(result["machine"])}{took}.\n'


# Fractions of a run's budget at which `curves` reads each measure.
FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def curves(result: dict) -> str:
  """Each measure over iterations: per run, the mean over seeds at the
  checkpoints nearest FRACTIONS of its budget, with the training seconds to
  reach them; where each method stands when another has flattened."""
  runs = result['runs']
  keys = [k for k in MEASURES if any(k in r['summary'] for r in runs)]
  out = []
  for k in keys:
    lines = [f'{MEASURES[k]} over generator iterations (mean over seeds; training seconds):', '',
             '| run | ' + ' | '.join(f'{f:.0%} of the run' for f in FRACTIONS) + ' |',
             '|' + ' --- |' * (len(FRACTIONS) + 1)]
    for r in runs:
      if k not in r['summary']:
        continue
      evaluations = [s['evaluation'] for s in r['seeds']]
      done = [e['gen_iter'] for e in evaluations[0]]
      cells = []
      for f in FRACTIONS:
        target = f * r['settings']['num_gen_iters']
        i = min(range(len(done)), key=lambda j: abs(done[j] - target))
        if done[i] < 0.9 * target:
          cells.append('')
          continue
        # Each seed's own nearest checkpoint: parts of a run trained apart
        # have checkpoints (a SIGTERM's) that the others lack.
        near = [min(e, key=lambda c: abs(c['gen_iter'] - done[i])) for e in evaluations]
        mean = sum(c[k] for c in near) / len(near)
        seconds = evaluations[0][i].get('seconds')
        cells.append(f'{_num(mean)} at {done[i]:,}' + (f' ({seconds:,.0f} s)' if seconds else ''))
      lines.append(f'| {r["name"]} | ' + ' | '.join(cells) + ' |')
    out.append('\n'.join(lines))
  return '\n\n'.join(out) + '\n'


def main(argv):
  if len(argv) > 1 and not argv[1].startswith('--results='):
    sys.exit(__doc__.strip())
  results = argv[1].split('=', 1)[1] if len(argv) > 1 else 'experiments/results'
  for name in ('loss_meaning', 'mode_collapse', 'architectures', 'optimizers', 'precision'):
    path = os.path.join(results, f'{name}.json')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        result = json.load(f)
      print(f'### {name}\n\n{table(result)}\n{curves(result)}')


if __name__ == '__main__':
  main(sys.argv)
