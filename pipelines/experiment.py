"""Data-aware vs data-agnostic pruning over CIFAR-100 subsets: a resumable sweep and its report.

python -m pipelines.experiment --flagfile=experiments/quick.flags --sweep_dir=runs/quick
Runs subsets x networks x levels x seeds x methods (tfprune.experiments.sweep; order: per level, the
agnostic run, then every subset's methods), skipping runs whose result.json exists, so the
same command resumes a stopped sweep. Then writes SWEEP/report/: results.csv, summary.md
(tables per subset and network, the paper's mean and max delta, controls side by side),
headline.json and plots/*.png. `--report_only` only aggregates; `--estimate_only` prints the
images to process and the hours at the assumed rates.
"""
import json
import sys

from absl import app, flags

flags.DEFINE_enum("protocol", "quick", ["paper", "quick"], "Recipe family (tfprune.experiments.recipes).")
flags.DEFINE_string("data", "tfds:cifar100", "Data source spec (the full dataset: the "
                    "agnostic baseline trains on all of it): tfds:NAME, npz:PATH, folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_list("subsets", ["aquatic", "indoor", "outdoor", "natural", "random"], "Subsets.")
flags.DEFINE_list("networks", ["resnet20"], "Networks (recipes in tfprune.experiments.recipes).")
flags.DEFINE_list("levels", ["0.5", "0.9", "0.7", "0.3"], "Pruning levels, run in this order.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_list("methods", ["aware:finetune_l1", "control2", "aware:act_l2", "control3",
                              "agnostic"], "aware:CRITERION, agnostic (+control 1), control2, "
                  "control3; unpruned always runs.")
flags.DEFINE_list("models", [], "NETWORK=MODEL_SPEC overrides (default pretrained:NETWORK).")
flags.DEFINE_string("recipe_network", None, "Use this network's recipe for every network.")
flags.DEFINE_list("recipe", [], "Recipe edits, e.g. retrain.epochs=2,agnostic.steps_per_epoch=5.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy for model building and training.")
flags.DEFINE_integer("bn_batches", 0, "BatchNorm re-estimation batches after pruning.")
flags.DEFINE_integer("calibration_batches", 10, "Batches a data-aware criterion scores on.")
flags.DEFINE_string("sweep_dir", None, "Runs and report live here; a re-run resumes.")
flags.DEFINE_integer("max_runs", None, "Stop after this many runs (time-boxed sessions).")
flags.DEFINE_bool("report_only", False, "Only aggregate the finished runs.")
flags.DEFINE_bool("estimate_only", False, "Only print the cost estimate.")
flags.DEFINE_float("train_rate", 300.0, "Training img/s assumed by the estimate.")
flags.DEFINE_float("infer_rate", 1000.0, "Inference img/s assumed by the estimate.")
flags.DEFINE_float("run_overhead", 20.0, "Seconds per run the estimate adds (load, trace, save).")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")
flags.mark_flag_as_required("sweep_dir")
FLAGS = flags.FLAGS


def setups() -> dict:
    from tfprune.experiments import protocol
    models = {}
    for item in FLAGS.models:
        net, sep, spec = item.partition("=")
        if not sep or not spec:
            raise ValueError(f"--models item {item!r} is not NETWORK=MODEL_SPEC")
        models[net] = spec
    return {net: protocol.make_setup(
        FLAGS.protocol, net, FLAGS.data, models.get(net), FLAGS.recipe, FLAGS.recipe_network,
        data_dir=FLAGS.data_dir, strategy=FLAGS.strategy, bn_batches=FLAGS.bn_batches,
        calibration_batches=FLAGS.calibration_batches, verbose=FLAGS.verbose)
        for net in FLAGS.networks}


def main(argv):
    del argv
    import tensorflow as tf

    from tfprune import data
    from tfprune.models import loader as modelio
    from tfprune.experiments import sweep
    from tfprune.experiments import sweep_report
    tf.get_logger().setLevel("ERROR")  # retracing notes from per-run predict functions
    try:
        if not FLAGS.report_only:
            levels = [float(x) for x in FLAGS.levels]
            seeds = [int(x) for x in FLAGS.seeds]
            specs = sweep.grid(FLAGS.subsets, FLAGS.networks, levels, seeds, FLAGS.methods)
            by_net = setups()
            est = sweep.estimate(specs, by_net, FLAGS.subsets, FLAGS.train_rate,
                                 FLAGS.infer_rate, FLAGS.run_overhead)
            print(f"experiment: estimate {json.dumps(est)}", flush=True)
            if FLAGS.estimate_only:
                return
            sweep.run_sweep(specs, by_net, FLAGS.sweep_dir, FLAGS.subsets,
                            log=lambda m: print(f"experiment: {m}", flush=True),
                            max_runs=FLAGS.max_runs)
        paths = sweep_report.report(FLAGS.sweep_dir)
    except (ValueError, OSError, data.DataError, modelio.ModelSpecError) as err:
        sys.exit(f"experiment: {err}")
    print(f"experiment: report {paths['markdown']}, {paths['csv']}, "
          f"{len(paths['plots'])} plots in {paths['markdown'].parent / 'plots'}")


if __name__ == "__main__":
    app.run(main)
