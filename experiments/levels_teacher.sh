#!/bin/sh
# Issue 14's outdoor cells (35 classes), the levels goals still under the bar with feature maps
# off (50%: val / test 68.9 / 68.7% against 69.3 / 69.7%; 70%: 65.8 / 66.3%): the same recipe
# distilled from a better teacher, the restricted original first fine-tuned 5 epochs on the
# training split (`--teacher_epochs`; cached in the workdir). The bar stays the untouched model.
# act_l2 first; then the student pruned from the tuned teacher itself (`--prune_tuned`, 50%:
# 68.7 / 68.6%, under the 69.2 / 69.4% of pruning the original, so its 70% and l1 rows were
# not run); then l1 with the tuned teacher. Finished rows are skipped, so rerun to resume.
#   nohup nice -n 5 experiments/levels_teacher.sh > runs/levels_teacher.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
run() {
    .venv/bin/python -m benchmarks.adaptation --part=levels \
        --data=npz:/work/shared/data/cifar100.npz --epochs=15 --mix=cutmix --subset=outdoor \
        --lr=0.1 --features=0 --teacher_epochs=5 "$@"
}
run --levels=0.5 --criteria=act_l2
run --levels=0.7 --criteria=act_l2
run --levels=0.5 --criteria=act_l2 --prune_tuned
run --levels=0.5,0.7 --criteria=l1
# a second seed, paired with levels_outdoor.sh's seed-1 row (--round_to=16, 134,451 params)
run --levels=0.5 --criteria=act_l2 --level_seed=1 --round_to=16
