#!/usr/bin/env bash
# Every run of every claims experiment, JOBS processes side by side, then one
# summary per experiment (JSON, figures) in OUT_DIR:
#
#   bash experiments/claims_all.sh [OUT_DIR] [JOBS] [EXPERIMENTS]
#
# e.g. `bash experiments/claims_all.sh experiments/results/convergence 6` on a GPU (small
# nets leave it mostly idle, so several runs share it), or
# `bash experiments/claims_all.sh /tmp/claims 1 mode_collapse`. Each run's log
# goes to WORKDIRS/<experiment>/<run>.log (<run>.seeds_A-B.log for a part
# --seeds=A:B; WORKDIRS: $WORKDIRS, default /tmp/wgan_jax_claims); a run that
# fails is reported and left out. Run it
# again with the same WORKDIRS to go on: stopped runs resume from their last
# checkpoint and finished ones are kept.
# CLAIMS_FLAGS adds flags to every claims.py command (a quick check:
# CLAIMS_FLAGS='--num_gen_iters=20 --checkpoints=2 --num_seeds=1'; a part of
# each run that fits one session or lease: CLAIMS_FLAGS='--seeds=0:2', then
# '--seeds=2:5' elsewhere, and the summaries in OUT_DIR merge them); ONLY
# names the runs to train, in the order given (e.g. ONLY='gaussians8-gan
# gaussians8-wgan' trains the cheaper run first).
# For a machine lent for minutes: DEADLINE=SECONDS stops every run that long
# after the start (SIGTERM: each keeps its last checkpoint) and starts no more;
# PACK=FILE.tgz then packs what the summaries need (each run's claims_run.json,
# measures, logs and last sample grid; no checkpoints) for another machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/results/convergence}
jobs=${2:-2}
experiments=${3:-mode_collapse loss_meaning architectures optimizers}
workdirs=${WORKDIRS:-/tmp/wgan_jax_claims}
python=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "$jobs" -gt 1 ]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(python3 -c "print(round(0.9 / $jobs, 3))")}
fi
# One line "experiment run" per run to train: a run that is another's
# (claims.SAME_AS) is trained once, under the first experiment that names it.
plan=$("$python" -c "import sys; sys.argv = ['x']; from experiments import claims
only, seen = '${ONLY:-}'.split(), set()
for experiment in '$experiments'.split():
  names = claims.RUNS[experiment]
  for name in [n for n in only if n in names] if only else names:
    if claims.source(experiment, name) not in seen:
      seen.add(claims.source(experiment, name))
      print(experiment, name)")
started=$(date +%s)
pids=()
running() { local n=0 p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done; echo $n; }
# The deadline's mark and signals are this invocation's own: another one
# sharing WORKDIRS keeps its runs (a second SIGTERM would end a run unsaved).
deadline_mark="$workdirs/.deadline.$$"
# Parts of one run (--seeds=A:B) may train side by side from two invocations:
# each part logs apart, and each invocation keeps its own pid files.
part=$(sed -n 's/.*--seeds[= ]\([0-9]*\):\([0-9]*\).*/.seeds_\1-\2/p' <<< "${CLAIMS_FLAGS:-}")
pidfile() { echo "$workdirs/$1/$2.$$.pid"; }
mkdir -p "$workdirs" && rm -f "$deadline_mark"
if [ -n "${DEADLINE:-}" ]; then
  ( sleep "$DEADLINE"; touch "$deadline_mark"
    while read -r experiment run; do
      f=$(pidfile "$experiment" "$run")
      [ -n "$run" ] && [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
    done <<< "$plan" ) &
  watchdog=$!
fi
while read -r experiment run; do
  [ -n "$run" ] || continue
  while [ "$(running)" -ge "$jobs" ]; do wait -n; done
  if [ -f "$deadline_mark" ]; then
    echo "$(date +%T) $experiment/$run not started: the deadline has passed"; continue
  fi
  mkdir -p "$workdirs/$experiment"
  echo "$(date +%T) $experiment/$run"
  ( start=$(date +%s)
    "$python" experiments/claims.py --experiment="$experiment" --only="$run" \
        --workdirs="$workdirs" --out="$workdirs/$experiment/out_$run$part" ${CLAIMS_FLAGS:-} \
        > "$workdirs/$experiment/$run$part.log" 2>&1 &
    echo $! > "$(pidfile "$experiment" "$run")"
    if wait $! && [ ! -f "$deadline_mark" ]; then
      echo "$(date +%T) $experiment/$run done in $(( $(date +%s) - start )) s"
    elif [ -f "$deadline_mark" ]; then
      echo "$(date +%T) $experiment/$run ended at the deadline after $(( $(date +%s) - start )) s (resumes from its last checkpoint)"
    else
      echo "$(date +%T) $experiment/$run FAILED (see $workdirs/$experiment/$run$part.log)"
    fi
    rm -f "$(pidfile "$experiment" "$run")" ) &
  pids+=($!)
done <<< "$plan"
[ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
[ -z "${watchdog:-}" ] || { pkill -P "$watchdog"; kill "$watchdog"; } 2>/dev/null
rm -f "$deadline_mark"
for experiment in $experiments; do
  [ -d "$workdirs/$experiment" ] || continue
  "$python" experiments/claims.py --experiment="$experiment" --summarize_only \
      --workdirs="$workdirs" --out="$out" ${CLAIMS_FLAGS:-} 2>&1 | grep -v '^[IW][0-9]'
done
if [ -n "${PACK:-}" ]; then
  pack=$(realpath -m "$PACK") && mkdir -p "$(dirname "$pack")"
  ( cd "$workdirs" && { find . -type f ! -path '*/checkpoints/*' ! -path '*/tensorboard/*' \
        ! -path '*/samples/*' ! -name metrics.jsonl ! -name '*.pid' ! -name '.deadline.*' \
        ! -name "$(basename "$pack")"
      find . -type d -name samples | while read -r d; do ls -d "$d"/* 2>/dev/null | sort | tail -1; done
    } | tar czf "$pack" -T - ) && echo "packed into $pack ($(du -h "$pack" | cut -f1))"
fi
