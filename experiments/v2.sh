#!/bin/sh
# The v2 sweep (issue 17), stage by stage into results/v2; rerun to resume where it stopped.
#   nohup nice -n 10 experiments/v2.sh > results/v2.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for stage in 1_priority 2_level50 3_subsets 4_controls 5_seeds50; do
    .venv/bin/python -m pipelines.experiment --flagfile="experiments/v2_$stage.flags"
done
