#!/bin/sh
# Issue 14's outdoor 50% (35 classes), the one subset where the main job's recipe stays under
# the bar (val / test 67.6 / 67.9% against 69.3 / 69.7%, three seeds): fine-tuning knobs not
# yet tried there, one seed each unless said, chosen by val. First feature maps off (the x20
# weight was chosen on 500 device images, not on a full training split); then, on that, less
# weight decay for a student that underfits its teacher, the 70% level, a second seed, and a
# higher peak rate (lr 0.1 with cutmix views gave +1.7 val over lr 0.01 without). Finished
# rows are skipped, so rerun to resume.
#   nohup nice -n 5 experiments/levels_outdoor.sh > runs/levels_outdoor.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
run() {
    .venv/bin/python -m benchmarks.adaptation --part=levels \
        --data=npz:/work/shared/data/cifar100.npz --epochs=15 --mix=cutmix \
        --subset=outdoor --levels=0.5 --criteria=act_l2 "$@"
}
run --lr=0.1 --features=0
# feature maps off scored val / test 68.9 / 68.7% (x20: 67.6 / 67.9%): the next knobs on it
run --lr=0.1 --features=0 --weight_decay=0.0001
run --lr=0.1 --features=0 --levels=0.7
# a second seed: run with --round_to=16 (134,451 params; round_to=auto's tile 16 steps a
# 16-channel group by 8 and keeps 136,723)
run --lr=0.1 --features=0 --level_seed=1 --round_to=16
run --lr=0.2 --features=0
