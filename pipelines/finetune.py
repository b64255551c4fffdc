"""One run of the paper's protocol or a control (tfprune.experiments.protocol), with its schedule flags.

python -m pipelines.finetune --method=aware --criterion=finetune_l1 --subset=aquatic \
    --network=resnet20 --level=0.5 --protocol=paper --workdir=runs/one/aware_aquatic_50
Writes WORKDIR/result.json (accuracy = test accuracy at the epoch of best validation
accuracy; agnostic also Control 1's restricted-logits accuracy), train/log.csv (per epoch),
checkpoints, pruned.keras and plan.json; a re-run resumes a stopped run. The schedule flags
replace the protocol's recipe: the phase is `finetune` (aware, before pruning), `retrain`
(aware, after), `agnostic` or `control` (control2/3); LR strings are the paper's `epoch:lr`.
"""
import sys

from absl import app, flags

from tfprune import console

flags.DEFINE_enum("method", "aware", ["aware", "agnostic", "control2", "control3", "unpruned"],
                  "What to run.")
flags.DEFINE_string("criterion", "finetune_l1", "aware: finetune_l1 (the paper), act_l2, ...")
flags.DEFINE_list("subset", ["aquatic"], "Subset (agnostic/unpruned: every subset to evaluate).")
flags.DEFINE_string("network", "resnet20", "Network whose recipe applies.")
flags.DEFINE_string("model", None, "Model spec (default pretrained:NETWORK).")
flags.DEFINE_string("recipe_network", None, "Take the recipe of this network instead.")
flags.DEFINE_float("level", 0.5, "Fraction of parameters to remove.")
flags.register_validator("level", lambda v: 0 <= v < 1, "--level must be in [0, 1)")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("data", "tfds:cifar100", "Data source spec (the full dataset: the "
                    "agnostic baseline trains on all of it): tfds:NAME, npz:PATH, folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir.")
flags.DEFINE_enum("protocol", "paper", ["paper", "v2", "quick"], "Recipe family.")
flags.DEFINE_string("finetune_lr", None, "Fine-tune phase schedule (aware), e.g. 0:0.001.")
flags.DEFINE_integer("finetune_epochs", None, "Fine-tune phase epochs.", lower_bound=0)
flags.DEFINE_string("retrain_lr", None, "Retraining schedule of --method's phase.")
flags.DEFINE_integer("retrain_epochs", None, "Retraining epochs of --method's phase.",
                     lower_bound=0)
flags.DEFINE_integer("eval_from", None, "First epoch of --method's phase evaluated on val/test.",
                     lower_bound=0)
flags.DEFINE_integer("steps_per_epoch", None, "Fixed steps per epoch in every phase.",
                     lower_bound=1)
flags.DEFINE_float("gamma", None, "Factor of a -1 step in every phase.", lower_bound=0.0)
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay.", lower_bound=0.0)
flags.DEFINE_integer("batch_size", None, "Batch size.", lower_bound=1)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_enum("head", "full", ["full", "subset"], "Classifier head. The paper protocol "
                  "keeps `full`: its metric is the 100-way argmax (Control 1 reports the "
                  "restricted logits); a subset head is pipelines.run's / pipelines.prune's.")
flags.DEFINE_integer("bn_batches", 0, "BatchNorm re-estimation batches after pruning.",
                     lower_bound=0)
flags.DEFINE_integer("calibration_batches", 10, "Batches a data-aware criterion scores on.",
                     lower_bound=1)
flags.DEFINE_string("workdir", None, "Run directory (resumes when it holds a stopped run).")
flags.DEFINE_string("cache_dir", None, "Where the aware fine-tune phase is cached "
                    "(default: WORKDIR's parent).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def overrides() -> list:
    """The schedule flags as tfprune.experiments.recipes.override edits (unset flags: the recipe's)."""
    phase = {"aware": "retrain", "agnostic": "agnostic", "unpruned": "retrain"}.get(
        FLAGS.method, "control")
    edits = {"finetune.lr": FLAGS.finetune_lr, "finetune.epochs": FLAGS.finetune_epochs,
             f"{phase}.lr": FLAGS.retrain_lr, f"{phase}.epochs": FLAGS.retrain_epochs,
             f"{phase}.eval_from": FLAGS.eval_from,
             "weight_decay": FLAGS.weight_decay, "batch_size": FLAGS.batch_size}
    for name in ("finetune", "retrain", "agnostic", "control"):
        edits[f"{name}.steps_per_epoch"] = FLAGS.steps_per_epoch
        edits[f"{name}.gamma"] = FLAGS.gamma
    return [f"{k}={v}" for k, v in edits.items() if v is not None]


def resume_hint() -> str:
    return f"rerun the same command to resume {FLAGS.workdir}"


@console.app_main("finetune", resume_hint)
def main(argv):
    del argv
    import tensorflow as tf

    from tfprune.experiments import protocol
    tf.get_logger().setLevel("ERROR")
    if FLAGS.head != "full":
        sys.exit("finetune: --head=subset: the paper protocol measures the 100-way argmax and "
                 "keeps the full head; use pipelines.run or pipelines.prune --head=subset")
    try:
        setup = protocol.make_setup(
            FLAGS.protocol, FLAGS.network, FLAGS.data, FLAGS.model, overrides(),
            FLAGS.recipe_network, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy, bn_batches=FLAGS.bn_batches,
            calibration_batches=FLAGS.calibration_batches)
        subsets = FLAGS.subset[0] if FLAGS.method in ("aware", "control2", "control3") \
            and len(FLAGS.subset) == 1 else FLAGS.subset
        result = protocol.run(setup, FLAGS.workdir, FLAGS.method, subsets, FLAGS.level,
                              FLAGS.criterion if FLAGS.method == "aware" else None,
                              root=FLAGS.cache_dir)
    except (ValueError, OSError) as err:
        sys.exit(f"finetune: {err}")
    for name, r in result["subsets"].items():
        print(f"finetune: {FLAGS.method} on {name}: test accuracy {r['test_accuracy']:.4f} "
              f"(val {r['val_accuracy']:.4f}); restricted to the subset's classes "
              f"{r['restricted']['test_accuracy']:.4f}")
    print(f"finetune: result {FLAGS.workdir}/result.json")


if __name__ == "__main__":
    app.run(main)
