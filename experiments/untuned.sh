#!/bin/sh
# Issue 14 on class subsets nobody tuned on: the main job's defaults, and the same job with
# l1 filters, on a phone's data (50 device images a class; four seeds for the defaults, two
# for l1). The three pairs of
# superclasses were drawn once from the 15 outside aquatic and indoor (the subsets recipes
# were chosen on): np.random.default_rng(2026).choice(15, 6, replace=False) over the sorted
# names. Finished rows are skipped, so rerun to resume.
#   nohup nice -n 10 experiments/untuned.sh > runs/untuned.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for subset in medium_mammals,trees large_natural_outdoor_scenes,flowers \
              fruit_and_vegetables,non-insect_invertebrates; do
    .venv/bin/python -m benchmarks.adaptation --part=phone \
        --data=npz:/work/shared/data/cifar100.npz --subset=$subset --train_per_class=50 \
        --phone_recipes=default,default_l1 --seeds=0,1
    .venv/bin/python -m benchmarks.adaptation --part=phone \
        --data=npz:/work/shared/data/cifar100.npz --subset=$subset --train_per_class=50 \
        --phone_recipes=default --seeds=2,3
done
