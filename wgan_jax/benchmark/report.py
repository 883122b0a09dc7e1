"""The benchmark's results as text: the table, the GEMM ceilings, and the
datasheet peaks of the GPUs we list."""

from __future__ import annotations


# Dense peak TFLOP/s from NVIDIA's datasheets (no sparsity): float32 on CUDA
# cores, TF32 and bfloat16 on tensor cores. Matched against the device name.
SPEC_PEAK_TFLOPS = {
    'H100 PCIe': {'float32': 51.2, 'tf32': 378.0, 'bfloat16': 756.0},
    'H100': {'float32': 66.9, 'tf32': 494.7, 'bfloat16': 989.4},  # SXM
    'H200': {'float32': 66.9, 'tf32': 494.7, 'bfloat16': 989.4},
    'A100': {'float32': 19.5, 'tf32': 156.0, 'bfloat16': 312.0},
}


def spec_peak(device_name: str) -> dict | None:
  """The datasheet peaks of a GPU named ``device_name`` (None: not listed)."""
  for name, peak in SPEC_PEAK_TFLOPS.items():  # the most specific name first
    if name.lower() in device_name.lower():
      return peak
  return None


def table(results: dict) -> str:
  """The results as a fixed-width text table."""
  head = ('model', 'side', 'gen it/s', 'vs torch', 'best it/s', 'vs torch',
          'CPU ms/it', 'vs torch', 'critic st/s', 'images/s', 'GFLOP/s',
          '% GEMM', 'compile s', 'peak MB')

  def ratio(r, key):
    return f'{r[key]:.2f}x' if key in r else '-'

  rows = [head]
  for model, res in results.items():
    for label, r in res['results'].items():
      mem = r.get('device_peak_mb', r['peak_rss_mb'])
      rows.append((model, label, f'{r["gen_iters_per_s"]:.3f}',
                   ratio(r, 'speedup_vs_torch'), f'{r["best_gen_iters_per_s"]:.3f}',
                   ratio(r, 'best_speedup_vs_torch'), f'{r["cpu_ms_per_gen_iter"]:.0f}',
                   ratio(r, 'cpu_time_speedup_vs_torch'),
                   f'{r["critic_steps_per_s"]:.2f}', f'{r["images_per_s"]:.0f}',
                   f'{r["achieved_gflops"]:.1f}' if 'achieved_gflops' in r else '-',
                   f'{100 * r["share_of_gemm"]:.0f}%' if 'share_of_gemm' in r else '-',
                   f'{r["compile_s"]:.1f}' if r['compile_s'] is not None else '-',
                   f'{mem:.0f}'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def ceilings(results: dict) -> str:
  """Per model: what every model FLOP at jax's dense-GEMM rate would give, and
  on listed GPUs each side's share of the datasheet peaks."""
  lines = []
  for model, res in results.items():
    if 'gemm_ceiling_gen_iters_per_s' not in res:
      continue
    ours_gemm = max(r['gemm_gflops'] for r in res['results'].values() if r['framework'] == 'ours')
    gflop = next(iter(res['results'].values()))['gflop_per_gen_iter']
    line = (f'{model}: {gflop:.1f} GFLOP per generator iteration; at jax\'s dense GEMM rate '
            f'({ours_gemm:.0f} GFLOP/s) {res["gemm_ceiling_gen_iters_per_s"]:.3f} it/s')
    if 'gemm_ceiling_speedup_vs_torch' in res:
      line += f', {res["gemm_ceiling_speedup_vs_torch"]:.2f}x torch'
    lines.append(line)
    for label, r in res['results'].items():
      if 'share_of_spec_peak' in r:
        lines.append(f'  {label}: ' + ', '.join(
            f'{100 * share:.1f}% of the {kind} peak ({r["spec_peak_tflops"][kind]:g} TFLOP/s)'
            for kind, share in r['share_of_spec_peak'].items()))
  return '\n'.join(lines)
