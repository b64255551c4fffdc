"""The paper's DaPR search: the highest pruning level at which the data-aware protocol still
matches the unpruned model's accuracy on a subset, chosen on the VALIDATION split.

python -m pipelines.search --subset=aquatic --network=resnet20 --criterion=finetune_l1 \
    --protocol=quick --workdir=runs/search
Binary search over 5%..95% in 5% steps from 50% (tfprune.experiments.level_search); every probed level is one
aware run (tfprune.experiments.protocol) kept in WORKDIR/runs/ under the sweep's run ids, so a stopped
search resumes and a sweep directory can be reused. Writes WORKDIR/search_SUBSET_NETWORK.json
and .md: the probes, the chosen level, and its test accuracy (reported, never used to choose).
"""
import json
import sys
from pathlib import Path

from absl import app, flags

from tfprune import console

flags.DEFINE_string("subset", "aquatic", "Subset to search for.")
flags.DEFINE_string("network", "resnet20", "Network whose recipe applies.")
flags.DEFINE_string("model", None, "Model spec (default pretrained:NETWORK).")
flags.DEFINE_string("recipe_network", None, "Take the recipe of this network instead.")
flags.DEFINE_list("recipe", [], "Recipe edits, e.g. retrain.epochs=2.")
flags.DEFINE_string("criterion", "finetune_l1", "Data-aware criterion of the aware runs.")
flags.DEFINE_enum("protocol", "quick", ["paper", "v2", "quick"], "Recipe family.")
flags.DEFINE_string("data", "tfds:cifar100", "Data source spec (the full dataset: the "
                    "agnostic baseline trains on all of it): tfds:NAME, npz:PATH, folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("start", 0.5, "First level probed.", lower_bound=0.05, upper_bound=0.95)
flags.DEFINE_float("tolerance", 0.0, "A level matches when its val accuracy >= unpruned - this.",
                   lower_bound=0.0)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("bn_batches", 0, "BatchNorm re-estimation batches after pruning.",
                     lower_bound=0)
flags.DEFINE_string("workdir", None, "Runs and the search result live here.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def resume_hint() -> str:
    return f"rerun the same command to resume the search in {FLAGS.workdir}"


@console.app_main("search", resume_hint)
def main(argv):
    del argv
    import tensorflow as tf

    from tfprune import fileio
    from tfprune.experiments import protocol
    from tfprune.experiments import level_search as search
    tf.get_logger().setLevel("ERROR")
    try:
        setup = protocol.make_setup(FLAGS.protocol, FLAGS.network, FLAGS.data, FLAGS.model,
                                    FLAGS.recipe, FLAGS.recipe_network, seed=FLAGS.seed,
                                    data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
                                    bn_batches=FLAGS.bn_batches)
        out = search.search_subset(setup, FLAGS.network, FLAGS.subset, FLAGS.criterion,
                                   FLAGS.seed, FLAGS.workdir, FLAGS.start, FLAGS.tolerance)
    except (ValueError, OSError) as err:
        sys.exit(f"search: {err}")
    out["protocol"] = FLAGS.protocol
    stem = Path(FLAGS.workdir) / f"search_{protocol.safe_name(FLAGS.subset)}_{FLAGS.network}"
    fileio.atomic_write_text(stem.with_suffix(".json"), json.dumps(out, indent=1))
    md = search.markdown(out, FLAGS.protocol)
    fileio.atomic_write_text(stem.with_suffix(".md"), md)
    print(f"search: {md.strip().splitlines()[-1]}; {stem}.json")


if __name__ == "__main__":
    app.run(main)
