"""Data-aware vs data-agnostic pruning over CIFAR-100 subsets: a resumable sweep and its report.

python -m pipelines.experiment --flagfile=experiments/v2_1_priority.flags
(`experiments/v2.sh` runs every stage of v2.)
Runs subsets x networks x levels x seeds x methods (tfprune.experiments.sweep; order: per
level, the agnostic run, then every subset's methods), skipping runs whose result.json
exists, so the same command resumes a stopped sweep. Then writes SWEEP/report/: results.csv,
summary.md (tables per subset and network, the paper's mean and max delta with paired
bootstrap CIs, controls side by side, convergence), headline.json, deltas.json and
plots/*.png. `--shard=i/n` runs the i-th of n disjoint parts of the grid in
SWEEP/shard_i_of_n/ (one machine or job each); `--report_only` merges SWEEP, its shard_*
directories and `--merge` directories into one report. `--estimate_only` prints the images
to process and the hours at the assumed (or `--rates`-measured) speeds.
"""
import json
import sys

from absl import app, flags

from tfprune import console
from tfprune.errors import TfpruneError

flags.DEFINE_enum("protocol", "quick", ["paper", "v2", "quick"],
                  "Recipe family (tfprune.experiments.recipes).")
flags.DEFINE_integer("finetune_epochs", None, "v2: E1, aware fine-tune epochs of the subset "
                     "(default recipes.V2_EPOCHS).", lower_bound=1)
flags.DEFINE_integer("retrain_epochs", None, "v2: E2, retraining epochs of the subset after "
                     "pruning (agnostic: E1+E2 of the full train split).", lower_bound=2)
flags.DEFINE_enum("l1_normalizer", "none", ["none", "mean", "max"],
                  "How l1 scores compare across layers (paper: none); METHOD@NORMALIZER "
                  "names a variant.")
flags.DEFINE_string("data", "tfds:cifar100", "Data source spec (the full dataset: the "
                    "agnostic baseline trains on all of it): tfds:NAME, npz:PATH, folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_list("subsets", ["aquatic", "indoor", "outdoor", "natural", "random"], "Subsets.")
flags.DEFINE_list("shared_subsets", [], "Subsets the shared runs (agnostic: one run per level "
                  "and seed, evaluated on many subsets) are evaluated on; default --subsets. "
                  "Stages of one sweep that differ in --subsets share these runs: name every "
                  "subset they need.")
flags.DEFINE_list("networks", ["resnet20"], "Networks (recipes in tfprune.experiments.recipes).")
flags.DEFINE_list("levels", ["0.5", "0.9", "0.7", "0.3"], "Pruning levels, run in this order.")


def _levels_ok(values) -> bool:
    try:
        return all(0 <= float(v) < 1 for v in values)
    except ValueError:
        return False


flags.register_validator("levels", _levels_ok, "--levels must be numbers in [0, 1)")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_list("subset_seeds", [], "SUBSET:SEED[;SEED...] items: these subsets run only those "
                  "seeds, after all runs of the other subsets (e.g. outdoor:0,random:0).")
flags.DEFINE_list("methods", ["aware:finetune_l1", "control2", "aware:act_l2", "control3",
                              "agnostic"], "aware:CRITERION, adapt:CRITERION, agnostic "
                  "(+control 1), control2, control3, control4, each with an optional "
                  "@NORMALIZER; unpruned always runs.")
flags.DEFINE_list("models", [], "NETWORK=MODEL_SPEC overrides (default pretrained:NETWORK).")
flags.DEFINE_string("recipe_network", None, "Use this network's recipe for every network.")
flags.DEFINE_list("recipe", [], "Recipe edits, e.g. retrain.epochs=2,agnostic.steps_per_epoch=5.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy for model building and training.")
flags.DEFINE_integer("bn_batches", 0, "BatchNorm re-estimation batches after pruning.",
                     lower_bound=0)
flags.DEFINE_integer("calibration_batches", 10, "Batches a data-aware criterion scores on.",
                     lower_bound=1)
flags.DEFINE_string("sweep_dir", None, "Runs and report live here; a re-run resumes.")
flags.DEFINE_string("shard", None, "i/n: run only the i-th (0-based) of n disjoint parts of "
                    "the grid, in SWEEP_DIR/shard_i_of_n.")
flags.DEFINE_list("merge", [], "More sweep directories (other machines' shards) merged into "
                  "the report.")
flags.DEFINE_integer("bootstrap_samples", 1000, "Bootstrap samples of every CI.",
                     lower_bound=100, upper_bound=100000)
flags.DEFINE_string("rates", None, "benchmarks/results/experiment_rates.json: measured "
                    "speeds per pruning level for the estimate.")
flags.DEFINE_integer("max_runs", None, "Stop after this many runs (time-boxed sessions).",
                     lower_bound=0)
flags.DEFINE_bool("report_only", False, "Only aggregate the finished runs.")
flags.DEFINE_bool("estimate_only", False, "Only print the cost estimate.")
flags.DEFINE_float("train_rate", 300.0, "Training img/s assumed by the estimate.",
                   lower_bound=1e-6)
flags.DEFINE_float("infer_rate", 1000.0, "Inference img/s assumed by the estimate.",
                   lower_bound=1e-6)
flags.DEFINE_float("run_overhead", 20.0, "Seconds per run the estimate adds (load, trace, save).",
                   lower_bound=0.0)
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")
flags.mark_flag_as_required("sweep_dir")
FLAGS = flags.FLAGS


def setups() -> dict:
    from tfprune.experiments import protocol
    models = {}
    for item in FLAGS.models:
        net, sep, spec = item.partition("=")
        if not sep or not spec:
            raise TfpruneError(f"--models item {item!r} is not NETWORK=MODEL_SPEC")
        models[net] = spec
    epochs = None
    if FLAGS.finetune_epochs is not None or FLAGS.retrain_epochs is not None:
        from tfprune.experiments import recipes
        epochs = (FLAGS.finetune_epochs or recipes.V2_EPOCHS[0],
                  FLAGS.retrain_epochs or recipes.V2_EPOCHS[1])
    return {net: protocol.make_setup(
        FLAGS.protocol, net, FLAGS.data, models.get(net), FLAGS.recipe, FLAGS.recipe_network,
        epochs=epochs, data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
        bn_batches=FLAGS.bn_batches, calibration_batches=FLAGS.calibration_batches,
        l1_normalizer=FLAGS.l1_normalizer, verbose=FLAGS.verbose)
        for net in FLAGS.networks}


def subset_seeds() -> dict:
    out = {}
    for item in FLAGS.subset_seeds:
        name, sep, seeds = item.partition(":")
        try:
            out[name] = [int(x) for x in seeds.split(";")]
        except ValueError:
            sep = ""
        if not sep or not name:
            raise TfpruneError(f"--subset_seeds item {item!r} is not SUBSET:SEED[;SEED...]")
    return out


def measured_rates() -> dict | None:
    """{level: (train img/s, inference img/s)} from a benchmarks/experiment_rates.py JSON."""
    if not FLAGS.rates:
        return None
    rows = json.loads(open(FLAGS.rates).read())["rows"]
    return {float(r["level"]): (float(r["train_img_s"]), float(r["infer_img_s"]))
            for r in rows}


def resume_hint() -> str:
    return f"rerun the same command to resume the sweep in {FLAGS.sweep_dir}"


@console.app_main("experiment", resume_hint)
def main(argv):
    del argv
    import tensorflow as tf

    from tfprune import data
    from tfprune.models import loader as modelio
    from tfprune.experiments import sweep
    from tfprune.experiments import sweep_report
    tf.get_logger().setLevel("ERROR")  # retracing notes from per-run predict functions
    try:
        run_dir, report_dirs = FLAGS.sweep_dir, [FLAGS.sweep_dir] + FLAGS.merge
        if not FLAGS.report_only:
            levels = [float(x) for x in FLAGS.levels]
            seeds = [int(x) for x in FLAGS.seeds]
            specs = sweep.grid(FLAGS.subsets, FLAGS.networks, levels, seeds, FLAGS.methods,
                               subset_seeds())
            shared = FLAGS.shared_subsets or FLAGS.subsets
            by_net = setups()
            if FLAGS.shard:
                index, count = sweep.parse_shard(FLAGS.shard)
                total = len(specs)
                specs = sweep.shard(specs, index, count, lambda spec: sum(sweep.run_images(
                    spec, by_net[spec.network], shared)))
                run_dir = f"{FLAGS.sweep_dir}/shard_{index}_of_{count}"
                report_dirs = [run_dir]
                print(f"experiment: shard {index}/{count}: {len(specs)} of {total} runs in "
                      f"{run_dir}", flush=True)
            est = sweep.estimate(specs, by_net, shared, FLAGS.train_rate,
                                 FLAGS.infer_rate, FLAGS.run_overhead, measured_rates())
            print(f"experiment: estimate {json.dumps(est)}", flush=True)
            if FLAGS.estimate_only:
                return
            sweep.run_sweep(specs, by_net, run_dir, shared,
                            log=lambda m: print(f"experiment: {m}", flush=True),
                            max_runs=FLAGS.max_runs)
        paths = sweep_report.report(report_dirs, f"{report_dirs[0]}/report",
                                    FLAGS.bootstrap_samples)
    except (ValueError, OSError, KeyError, data.DataError, modelio.ModelSpecError) as err:
        sys.exit(f"experiment: {err}")
    print(f"experiment: report {paths['markdown']}, {paths['csv']}, "
          f"{len(paths['plots'])} plots in {paths['markdown'].parent / 'plots'}")


if __name__ == "__main__":
    app.run(main)
