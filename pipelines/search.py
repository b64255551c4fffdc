"""The paper's DaPR search: the highest pruning level at which the data-aware protocol still
matches the unpruned model's accuracy on a subset, chosen on the VALIDATION split.

python -m pipelines.search --subset=aquatic --network=resnet20 --criterion=finetune_l1 \
    --protocol=quick --workdir=runs/search
Binary search over 5%..95% in 5% steps from 50% (tfprune.search); every probed level is one
aware run (tfprune.protocol) kept in WORKDIR/runs/ under the sweep's run ids, so a stopped
search resumes and a sweep directory can be reused. Writes WORKDIR/search_SUBSET_NETWORK.json
and .md: the probes, the chosen level, and its test accuracy (reported, never used to choose).
"""
import json
import sys
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("subset", "aquatic", "Subset to search for.")
flags.DEFINE_string("network", "resnet20", "Network whose recipe applies.")
flags.DEFINE_string("model", None, "Model spec (default pretrained:NETWORK).")
flags.DEFINE_string("recipe_network", None, "Take the recipe of this network instead.")
flags.DEFINE_list("recipe", [], "Recipe edits, e.g. retrain.epochs=2.")
flags.DEFINE_string("criterion", "finetune_l1", "Data-aware criterion of the aware runs.")
flags.DEFINE_enum("protocol", "quick", ["paper", "quick"], "Recipe family.")
flags.DEFINE_string("data", "tfds:cifar100", "Data source spec (the full dataset: the "
                    "agnostic baseline trains on all of it): tfds:NAME, npz:PATH, folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("start", 0.5, "First level probed.")
flags.DEFINE_float("tolerance", 0.0, "A level matches when its val accuracy >= unpruned - this.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("bn_batches", 0, "BatchNorm re-estimation batches after pruning.")
flags.DEFINE_string("workdir", None, "Runs and the search result live here.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tensorflow as tf

    from tfprune import protocol, search, sweep, train
    tf.get_logger().setLevel("ERROR")
    net, subset = FLAGS.network, FLAGS.subset
    try:
        setup = protocol.make_setup(FLAGS.protocol, net, FLAGS.data, FLAGS.model, FLAGS.recipe,
                                    FLAGS.recipe_network, seed=FLAGS.seed,
                                    data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
                                    bn_batches=FLAGS.bn_batches)
        runs = {}

        def run(method, level=0.0):
            spec = sweep.RunSpec(method, net, level, FLAGS.seed, subset,
                                 FLAGS.criterion if method == "aware" else None)
            runs[level if method == "aware" else "unpruned"] = r = sweep.run_spec(
                spec, setup, FLAGS.workdir, [subset])
            return r["subsets"][subset]

        reference = run("unpruned")["val_accuracy"]
        result = search.binary_search(lambda lv: run("aware", lv)["val_accuracy"], reference,
                                      start=FLAGS.start, tolerance=FLAGS.tolerance)
    except (ValueError, OSError) as err:
        sys.exit(f"search: {err}")
    out = result.to_json()
    out.update(subset=subset, network=net, criterion=FLAGS.criterion, protocol=FLAGS.protocol,
               selected_on="validation", unpruned_test_accuracy=runs["unpruned"]["subsets"][
                   subset]["test_accuracy"],
               test_accuracy=(runs[result.level]["subsets"][subset]["test_accuracy"]
                              if result.level is not None else None))
    stem = Path(FLAGS.workdir) / f"search_{protocol.safe_name(subset)}_{net}"
    train.atomic_write_text(stem.with_suffix(".json"), json.dumps(out, indent=1))
    lines = [f"# DaPR search: {net} on {subset} ({FLAGS.criterion}, {FLAGS.protocol})", "",
             f"Unpruned val accuracy {100 * reference:.1f}% (tolerance "
             f"{100 * FLAGS.tolerance:.1f} pp). Chosen on validation only.", "",
             "| probe | level % | val accuracy % | matches |", "|---|---|---|---|"]
    lines += [f"| {i + 1} | {100 * s.level:.0f} | {100 * s.accuracy:.1f} | "
              f"{'yes' if s.matched else 'no'} |" for i, s in enumerate(result.steps)]
    chosen = ("no level matched" if result.level is None else
              f"chosen level {100 * result.level:.0f}%: val {100 * result.accuracy:.1f}%, "
              f"test {100 * out['test_accuracy']:.1f}% (unpruned test "
              f"{100 * out['unpruned_test_accuracy']:.1f}%)")
    train.atomic_write_text(stem.with_suffix(".md"), "\n".join(lines + ["", chosen, ""]))
    print(f"search: {chosen}; {stem}.json")


if __name__ == "__main__":
    app.run(main)
