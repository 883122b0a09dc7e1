r"""Each DCGAN layer's convolution, per formulation, against PyTorch's: time and share of the GEMM rate.

  python experiments/conv_layers.py [--models=dcgan32,dcgan64] [--out=FILE.json]

For every strided conv of the critic (Conv2d k4 s2 p1) and every stride-2
transposed conv of the generator (ConvTranspose2d k4 s2 p1) at batch 64,
ngf = ndf = 64, 3 channels: the forward, the forward with the kernel
gradient (the critic's weight update) and the forward with both gradients,
in milliseconds (best of 3 x 20 calls), for each formulation the package has
(``layers``: XLA's conv, per-tap kernel gradients, Winograd; sub-pixel,
dilated, mixed and col2im-GEMM transposed convs), two more for the critic (space-to-depth: a 4x4 stride-2
conv as a 2x2 stride-1 conv over 2x2 blocks; ``layers.conv_stride2_winograd``,
that conv as Winograd F(2x2, 2x2)), and PyTorch's with the same threads.
Each figure's GFLOP/s is given as a share of jax's dense GEMM rate in the
same process (2048 x 2048). The DCGAN iteration's speed against the
reference (``python -m wgan_jax.benchmark``) follows from these layers;
``--conv_tuning`` (``wgan_jax.tuning``) makes the per-layer choice while
training, by a measurement of the same kind.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from wgan_jax import layers, runtime
from wgan_jax.benchmark import flops

_MODELS = flags.DEFINE_list('models', ['dcgan32', 'dcgan64'], 'dcgan32 and/or dcgan64.')
_OUT = flags.DEFINE_string('out', None, 'Also write the figures here (JSON).')
BATCH = 64
WIDTH = 64
_DN = ('NHWC', 'HWIO', 'NHWC')


def conv_s2d(x, kernel):
  """Conv2d(k=4, s=2, p=1) as a 2x2 stride-1 conv over 2x2 blocks of the
  padded input (4x the channels): the same products, no stride."""
  blocks, k = layers.space_to_depth(x, kernel)
  return jax.lax.conv_general_dilated(blocks, k, (1, 1), 'VALID', dimension_numbers=_DN)


def shapes(model: str):
  """(kind, spatial size in, channels in, channels out) of each stride-2 layer."""
  size = {'dcgan32': 32, 'dcgan64': 64}[model]
  critic, c, s = [], 3, size
  out = WIDTH
  while s > 4:
    critic.append(('critic', s, c, out))
    c, s, out = out, s // 2, out * 2
  generator = [('generator', s // 2, c_in, c_out) for _, s, c_out, c_in in critic[::-1]]
  return critic + generator


def _best(fn, n: int = 20) -> float:
  fn()
  best = float('inf')
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(n):
      fn()
    best = min(best, (time.perf_counter() - start) / n)
  return best * 1e3


def time_jax(f, x, kernel, g) -> dict:
  fwd = jax.jit(f)

  def with_forward(vjp_of):
    # The forward's output is returned: else XLA drops it (a linear layer's
    # gradients do not need it) and the timing would leave it out.
    def run(x, k, g):
      y, vjp = vjp_of(x, k)
      return y, vjp(g)
    return jax.jit(run)

  dk = with_forward(lambda x, k: jax.vjp(lambda k: f(x, k), k))
  both = with_forward(lambda x, k: jax.vjp(f, x, k))
  sync = jax.block_until_ready
  return {'forward': _best(lambda: sync(fwd(x, kernel))),
          'forward+kernel_grad': _best(lambda: sync(dk(x, kernel, g))),
          'forward+both_grads': _best(lambda: sync(both(x, kernel, g)))}


def time_torch(kind: str, x, kernel, g) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  if kind == 'critic':  # HWIO -> OIHW
    wt = torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy())
    op = lambda x, w: F.conv2d(x, w, stride=2, padding=1)  # noqa: E731
  else:  # HWIO -> (in, out, H, W), flipped: PyTorch's transposed-conv layout
    wt = torch.from_numpy(np.asarray(kernel).transpose(2, 3, 0, 1).copy())
    op = lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1)  # noqa: E731
  gt = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())
  wt.requires_grad_(True)
  xg = xt.clone().requires_grad_(True)
  with torch.no_grad():
    fwd = _best(lambda: op(xt, wt))
  return {'forward': fwd,
          'forward+kernel_grad': _best(lambda: torch.autograd.grad(op(xt, wt), (wt,), gt)),
          'forward+both_grads': _best(lambda: torch.autograd.grad(op(xg, wt), (xg, wt), gt))}


def main(argv):
  del argv
  gemm = flops.jax_gemm_rate(seconds=3.0)
  rng = np.random.default_rng(0)
  formulations = {
      'critic': {'xla': layers.conv_stride2, 'taps': layers.conv_stride2_taps, 's2d': conv_s2d,
                 'winograd': layers.conv_stride2_winograd},
      'generator': {'subpixel': layers.conv_transpose_subpixel,
                    'dilated': layers.conv_transpose_dilated,
                    'mixed': layers.conv_transpose_mixed, 'gemm': layers.conv_transpose_gemm},
  }
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(runtime.machine()['cores'])
  except ImportError:
    torch = None
  rows = []
  print(f'jax dense GEMM rate: {gemm / 1e9:.0f} GFLOP/s')
  print('| model | layer | formulation | forward ms | fwd + kernel grad ms | fwd + both grads ms | '
        'fwd + both grads: share of GEMM |\n' + '|' + ' --- |' * 7)
  for model in _MODELS.value:
    for kind, size, c_in, c_out in shapes(model):
      out_size = size // 2 if kind == 'critic' else size * 2
      x = jnp.asarray(rng.standard_normal((BATCH, size, size, c_in), np.float32))
      kernel = jnp.asarray(rng.standard_normal((4, 4, c_in, c_out), np.float32) * 0.02)
      g = jnp.asarray(rng.standard_normal((BATCH, out_size, out_size, c_out), np.float32))
      # One pass's multiply-adds: each output (critic) or input (generator)
      # position meets 16 taps.
      positions = out_size ** 2 if kind == 'critic' else size ** 2
      gflop = 2 * BATCH * positions * 16 * c_in * c_out / 1e9
      layer = f'{kind} {size}px {c_in}->{c_out}'
      outputs = [np.asarray(f(x, kernel)) for f in formulations[kind].values()]
      for y in outputs[1:]:  # every formulation computes the same layer
        np.testing.assert_allclose(y, outputs[0], rtol=1e-4, atol=1e-4 * np.abs(outputs[0]).max())
      timings = {name: time_jax(f, x, kernel, g) for name, f in formulations[kind].items()}
      if torch is not None:
        timings['torch'] = time_torch(kind, x, kernel, g)
      for name, t in timings.items():
        share = 3 * gflop / (t['forward+both_grads'] / 1e3) / (gemm / 1e9)
        rows.append({'model': model, 'layer': layer, 'formulation': name, 'gflop_forward': gflop,
                     **{f'{k}_ms': v for k, v in t.items()}, 'both_grads_share_of_gemm': share})
        print(f'| {model} | {layer} | {name} | {t["forward"]:.2f} | '
              f'{t["forward+kernel_grad"]:.2f} | {t["forward+both_grads"]:.2f} | {100 * share:.0f}% |',
              flush=True)
  totals = iteration_totals(rows)
  for model, t in totals.items():
    print(f'{model}: these layers per generator iteration: ours as built {t["ours"]:.0f} ms, the '
          f'fastest of ours per layer {t["best_per_layer"]:.0f} ms, torch {t.get("torch", 0):.0f} ms')
  info = runtime.machine()
  print(runtime.machine_text(info))
  if _OUT.value:
    with open(_OUT.value, 'w', encoding='utf-8') as f:
      json.dump({'machine': info, 'jax_gemm_gflops': gemm / 1e9, 'batch': BATCH, 'rows': rows,
                 'iteration_totals_ms': totals}, f, indent=1)


def built(kind: str, c_out: int) -> str:
  """The formulation the package's 'auto' takes on the CPU (``layers``)."""
  if kind == 'critic':
    return 'taps'
  return 'mixed' if c_out <= 4 else 'subpixel'


def iteration_totals(rows: list[dict]) -> dict:
  """Milliseconds of these layers in one generator iteration, as built, with
  the fastest formulation per layer, and PyTorch's: 5 critic steps on a real
  and a fake batch (10 critic passes: forward and kernel gradient of the
  first layer, forward and both gradients of the others, whose input
  gradients carry the gradient down), the fakes' generator forward (5), and
  the generator step (forward and both gradients of every layer once)."""
  totals: dict = {}
  by_layer: dict = {}
  for r in rows:
    by_layer.setdefault((r['model'], r['layer']), {})[r['formulation']] = r
  for (model, layer), forms in by_layer.items():
    kind, c_out = layer.split()[0], int(layer.split('->')[1])
    if kind == 'critic':
      first = int(layer.split()[2].split('->')[0]) <= 4  # takes the image
      passes = 'forward+kernel_grad_ms' if first else 'forward+both_grads_ms'
      cost = {n: 10 * r[passes] + r['forward+both_grads_ms'] for n, r in forms.items()}
    else:
      cost = {n: 5 * r['forward_ms'] + r['forward+both_grads_ms'] for n, r in forms.items()}
    t = totals.setdefault(model, {'ours': 0.0, 'best_per_layer': 0.0, 'best': {}})
    t['ours'] += cost[built(kind, c_out)]
    ours = {n: c for n, c in cost.items() if n != 'torch'}
    best = min(ours, key=ours.get)
    t['best_per_layer'] += ours[best]
    t['best'][layer] = best
    if 'torch' in cost:
      t['torch'] = t.get('torch', 0.0) + cost['torch']
  return totals


if __name__ == '__main__':
  app.run(main)
