#!/bin/sh
# Issue 14: does the main job's feature-map term (x20, chosen on device images the earlier
# base had trained on) still pay on a phone's data the clean base never saw? Without it most
# full-data levels scored 1-2 val points higher (levels_features.sh). The defaults against the
# defaults without the term, paired seeds 0 and 1, on aquatic (the recipes' subset) and the
# three untuned pairs of untuned.sh. Finished rows are skipped, so rerun to resume.
#   nohup experiments/phone_features.sh > runs/logs/phone_features.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for subset in medium_mammals,trees aquatic large_natural_outdoor_scenes,flowers \
              fruit_and_vegetables,non-insect_invertebrates; do
    .venv/bin/python -m benchmarks.adaptation --part=phone \
        --data=npz:/work/shared/data/cifar100.npz --subset=$subset --train_per_class=50 \
        --phone_recipes=default,default_f0 --seeds=0,1
done
