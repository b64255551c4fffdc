#!/bin/sh
# Issue 16: the main job with --blocks=auto (branches and channels share the 30% latency cut,
# the count chosen by the candidates' KL to the model) on a phone's data, against the
# defaults' rows: aquatic on 4 seeds, then the three untuned subsets on 2. Finished rows are
# skipped, so rerun to resume.
#   nohup nice -n 10 experiments/depth_auto.sh > runs/depth_auto.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for subset in aquatic medium_mammals,trees large_natural_outdoor_scenes,flowers \
              fruit_and_vegetables,non-insect_invertebrates; do
    seeds=0,1
    [ "$subset" = aquatic ] && seeds=0,1,2,3
    .venv/bin/python -m benchmarks.adaptation --part=phone \
        --data=npz:/work/shared/data/cifar100.npz --subset=$subset --train_per_class=50 \
        --phone_recipes=default_auto --seeds=$seeds
done
