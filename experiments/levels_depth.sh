#!/bin/sh
# Issue 14's outdoor levels (35 classes), where channel pruning stays under the bar: the same
# parameter levels reached by removing stage-3 residual branches whole and cutting channels
# for the rest, so the other layers keep their width. The main job's recipe as in levels.sh;
# finished rows are skipped, so rerun to resume.
#   nohup nice -n 5 experiments/levels_depth.sh > runs/levels_depth.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
run() {
    .venv/bin/python -m benchmarks.adaptation --part=levels \
        --data=npz:/work/shared/data/cifar100.npz --epochs=15 --lr=0.1 --mix=cutmix \
        --subset=outdoor --criteria=act_l2 "$@"
}
run --levels=0.5 --level_blocks=s3b1_add,s3b2_add
run --levels=0.5 --level_blocks=s3b2_add
