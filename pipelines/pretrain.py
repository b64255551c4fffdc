"""Pretrain a zoo model on a full dataset (CIFAR-100 by default), resumably.

python -m pipelines.pretrain --model=resnet20 --data=npz:PATH --epochs=30 \
    --workdir=runs/pretrain_resnet20 --output=tfprune/models/pretrained/resnet20.keras
Writes the `.keras` model and a JSON card beside it (test accuracy, epochs, seed, versions,
wall time); `--workdir` holds per-epoch checkpoints and `log.csv`, and a re-run resumes there.
"""
import json
import sys

from absl import app, flags

from tfprune import console, fileio

from tfprune.models.zoo import MODELS

flags.DEFINE_enum("model", "resnet20", sorted(MODELS), "Zoo model name.")
flags.DEFINE_string("data", "tfds:cifar100", "Data source: npz:PATH, tfds:NAME or folder:PATH.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default $TFDS_DATA_DIR).")
flags.DEFINE_enum("train_images", "train", ["train", "all"],
                  "train: the seeded 80% train split of every class (the experiments' val "
                  "split is never seen, val accuracy is logged); all: every training image.")
flags.DEFINE_integer("split_seed", 0, "Seed of the train/val split (the experiments use 0).",
                     lower_bound=0)
flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Peak learning rate (cosine decay after warm-up).",
                   lower_bound=0.0)
flags.DEFINE_integer("warmup_epochs", 2, "Linear warm-up epochs.", lower_bound=0)
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay (Keras SGD).",
                   lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed for initialisation and data order.")
flags.DEFINE_string("workdir", None, "Checkpoints and log.csv; a re-run resumes here.")
flags.DEFINE_string("output", None, "Where to write the trained .keras file (card beside it).")
flags.DEFINE_string("note", "", "Free text for the card (e.g. how a run was resumed).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output (and its card).")
flags.mark_flags_as_required(["workdir", "output"])
FLAGS = flags.FLAGS


def resume_hint() -> str:
    return f"rerun the same command to resume from the last epoch checkpointed in {FLAGS.workdir}"


@console.app_main("pretrain", resume_hint)
def main(argv):
    del argv
    import os

    import keras

    from tfprune import data
    from tfprune.models import cards as card
    from tfprune.training import fit as train
    from tfprune.models import zoo

    if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
        sys.exit(f"pretrain: --output {FLAGS.output} exists; pass --overwrite to replace it")
    if os.path.isdir(FLAGS.output):
        sys.exit(f"pretrain: --output {FLAGS.output} is a directory; name the .keras file")
    parent = os.path.dirname(os.path.abspath(FLAGS.output))
    if not os.access(parent if os.path.isdir(parent) else os.path.dirname(parent), os.W_OK):
        sys.exit(f"pretrain: --output {FLAGS.output} cannot be written ({parent})")
    keras.utils.set_random_seed(FLAGS.seed)
    source = data.load_source(FLAGS.data, FLAGS.data_dir)
    if FLAGS.train_images == "train":
        splits = data.split(source, "all", FLAGS.split_seed)
        train_images, monitor = splits.train, splits.val
    else:
        train_images, monitor = source.train, source.test
    train_ds = data.as_dataset(train_images, FLAGS.batch_size, training=True, seed=FLAGS.seed)
    monitor_ds = data.as_dataset(monitor, 500)
    test_ds = data.as_dataset(source.test, 500)
    steps = -(-len(train_images) // FLAGS.batch_size)

    schedule = train.cosine_schedule(FLAGS.lr, FLAGS.epochs, steps, FLAGS.warmup_epochs)

    def build():
        model = zoo.build(FLAGS.model, num_classes=len(source.class_names))
        return train.compile_sgd(model, schedule, FLAGS.weight_decay, nesterov=True)

    model, state = train.fit_resumable(build, train_ds, FLAGS.epochs, FLAGS.workdir,
                                       val_ds=monitor_ds, schedule=schedule)
    loss, accuracy = model.evaluate(test_ds, verbose=0)[:2]
    train.atomic_save(model, FLAGS.output, optimizer=False)  # ship weights, not optimizer slots
    model_card = {
        "model": FLAGS.model, "data": FLAGS.data, "test_accuracy": round(float(accuracy), 4),
        "test_loss": round(float(loss), 4), "test_images": len(source.test),
        "train_images": len(train_images), "train_split": FLAGS.train_images,
        "split_seed": FLAGS.split_seed,
        "monitored_on": "val split" if FLAGS.train_images == "train" else "test set",
        "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "peak_lr": FLAGS.lr,
        "warmup_epochs": FLAGS.warmup_epochs, "weight_decay": FLAGS.weight_decay,
        "schedule": "linear warm-up then cosine decay, SGD nesterov momentum 0.9",
        "augmentation": "random crop 32 after 4-pixel zero padding, horizontal flip",
        "seed": FLAGS.seed, "params": model.count_params(),
        "wall_seconds": round(state["wall_seconds"], 1), "versions": card.versions(),
        "note": FLAGS.note}
    fileio.atomic_write_text(card.card_path(FLAGS.output), json.dumps(model_card, indent=2))
    print(json.dumps(model_card, indent=2))


if __name__ == "__main__":
    app.run(main)
