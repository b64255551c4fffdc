#!/usr/bin/env bash
# The clean base (issue 17): ResNet-20 on the seeded 40k train split only (split seed 0, so the
# experiments' val split is never seen), 40 epochs, resumable. Run in the background:
#   setsid nohup bash experiments/pretrain_clean/run.sh >/dev/null 2>&1 &
# The run directory lives outside the work tree ($TFPRUNE_RUNS, default ~/tfprune_runs); when it
# has no checkpoint yet, a committed one in checkpoint/ (if any) seeds it. The run finished
# (61.07% test) and ships as pretrained:resnet20 (tfprune/models/pretrained/).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${TFPRUNE_RUNS:-$HOME/tfprune_runs}/pretrain_clean"
mkdir -p "$runs/work"
if [ ! -f "$runs/work/state.json" ] && [ -f experiments/pretrain_clean/checkpoint/state.json ]; then
    cp experiments/pretrain_clean/checkpoint/* "$runs/work/"
fi
exec nice -n 10 .venv/bin/python -m pipelines.pretrain --model=resnet20 \
  --data=npz:../shared/data/cifar100.npz --train_images=train --epochs=40 \
  --workdir="$runs/work" --output="$runs/resnet20.keras" \
  --note="Clean base: trained on the 40k train split only (split seed 0); the experiments' val split was never seen. Monitored on val; test accuracy of the final epoch, no selection on test." \
  >> "$runs/log.txt" 2>&1
