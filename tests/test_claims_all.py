"""experiments/claims_all.sh: its deadlines, logs and reports, with a stand-in for each training process.

The stand-in takes the script's python for training commands only: it records its flags and every SIGTERM it
gets, then trains for a while (sleeps) or fails; the script's plan (`python -c`) still runs in the real one.
"""

import os
import re
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'experiments', 'claims_all.sh')

STAND_IN = r"""#!/usr/bin/env bash
if [ "$1" = -c ]; then exec "{python}" "$@"; fi
shift
case " $* " in *" --summarize_only "*) echo "summary $*"; exit 0 ;; esac
record={records}/$$.txt
echo "args $*" | tee -a "$record"
trap 'echo "TERM $(date +%s.%N)" >> "$record"; exit 0' TERM
case " $* " in *" --only=$FAIL_RUN "*) exit 3 ;; esac
for _ in $(seq "$((TRAIN_SECONDS * 10))"); do sleep 0.1; done
echo finished >> "$record"
"""


@pytest.fixture
def stand_in(tmp_path):
  records = tmp_path / 'records'
  records.mkdir()
  path = tmp_path / 'python'
  path.write_text(STAND_IN.format(python=sys.executable, records=records))
  path.chmod(0o755)
  return path, records


def _start(stand_in_path, workdirs, out, **env):
  env = {**os.environ, 'PYTHON': str(stand_in_path), 'WORKDIRS': str(workdirs), 'FAIL_RUN': '', 'TRAIN_SECONDS': '30',
         **env}
  return subprocess.Popen(['bash', SCRIPT, str(out), '1', 'mode_collapse'], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _records(records):
  """{--seeds or --only flag: (the process's flags, the times it got SIGTERM, whether it trained to its end)}."""
  found = {}
  for path in records.iterdir():
    lines = path.read_text().splitlines()
    args = lines[0].split(' ', 1)[1]
    key = re.search(r'--seeds=\S+', args) or re.search(r'--only=\S+', args)
    found[key.group(0)] = (args, [float(l.split()[1]) for l in lines if l.startswith('TERM')], 'finished' in lines)
  return found


def test_parts_of_one_run_from_two_invocations_each_stop_at_their_own_deadline(tmp_path, stand_in):
  path, records = stand_in
  workdirs = tmp_path / 'runs'
  started = time.time()
  first = _start(path, workdirs, tmp_path / 'out', ONLY='gaussians8-gan', CLAIMS_FLAGS='--seeds=0:1', DEADLINE='1')
  second = _start(path, workdirs, tmp_path / 'out', ONLY='gaussians8-gan', CLAIMS_FLAGS='--seeds=1:2',
                  DEADLINE='6')
  outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
  assert time.time() - started < 25, outputs  # neither part trained on to its end

  found = _records(records)
  assert sorted(found) == ['--seeds=0:1', '--seeds=1:2']
  (args0, term0, finished0), (args1, term1, finished1) = found['--seeds=0:1'], found['--seeds=1:2']
  # One SIGTERM each (a second would end a run before it saves), the earlier deadline's first.
  assert len(term0) == 1 and len(term1) == 1 and not finished0 and not finished1
  assert term1[0] - term0[0] > 2.5
  assert '--only=gaussians8-gan' in args0 and f'--out={workdirs}/mode_collapse/out_gaussians8-gan.seeds_0-1' in args0
  assert f'--out={workdirs}/mode_collapse/out_gaussians8-gan.seeds_1-2' in args1
  for part, args in (('0-1', args0), ('1-2', args1)):
    assert (workdirs / 'mode_collapse' / f'gaussians8-gan.seeds_{part}.log').read_text().strip() == f'args {args}'
  for output in outputs:
    assert 'mode_collapse/gaussians8-gan ended at the deadline' in output
    assert 'summary --experiment=mode_collapse --summarize_only' in output
  left = [p.name for p in workdirs.rglob('*') if p.name.endswith('.pid') or p.name.startswith('.deadline')]
  assert not left


def test_runs_are_reported_done_or_failed_and_none_starts_after_the_deadline(tmp_path, stand_in):
  path, records = stand_in
  workdirs = tmp_path / 'runs'
  output = _start(path, workdirs, tmp_path / 'out', ONLY='gaussians8-wgan gaussians8-gan', FAIL_RUN='gaussians8-gan',
                  TRAIN_SECONDS='1').communicate(timeout=120)[0]
  assert re.search(r'mode_collapse/gaussians8-wgan done in \d+ s', output), output
  assert f'mode_collapse/gaussians8-gan FAILED (see {workdirs}/mode_collapse/gaussians8-gan.log)' in output
  found = _records(records)
  assert found['--only=gaussians8-wgan'][2] and not found['--only=gaussians8-gan'][2]
  # ONLY's order is the training order.
  assert output.index('gaussians8-wgan done') < output.index('gaussians8-gan FAILED')

  # A run whose turn comes after the deadline is not started.
  output = _start(path, workdirs, tmp_path / 'out', ONLY='gaussians8-wgan gaussians8-gan', DEADLINE='1',
                  TRAIN_SECONDS='30').communicate(timeout=120)[0]
  assert 'mode_collapse/gaussians8-wgan ended at the deadline' in output, output
  assert 'mode_collapse/gaussians8-gan not started: the deadline has passed' in output
  assert len(list(records.iterdir())) == 3  # the first invocation's two processes, then one
