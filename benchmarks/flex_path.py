"""The standard Flex-based training signature (TF autodiff: Conv2DBackpropFilter, ReluGrad...
as select-TF ops), for comparison with tfprune's builtin-only one. Needs a TensorFlow whose
`tf.lite.Interpreter` links the Flex delegate (TF 2.19; not 2.21), run in its own venv:

  /tmp/tf219/bin/python benchmarks/flex_path.py export MODEL.keras OUT.tflite BATCH LR
  /tmp/tf219/bin/python benchmarks/flex_path.py serve OUT.tflite THREADS X.npy Y.npy

`serve` is a worker for benchmarks/ondevice_train.py: per line `STEPS` on stdin it runs that
many `train` steps over the cached batches and answers the images/s (and the last loss).
The step matches tfprune's: inference-mode BatchNorm, mean cross-entropy, tfprune.ondevice.optim
SGD (momentum 0.9, weight decay 5e-4), batch fixed at export.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def export(keras_path, out_path, batch, learning_rate):
    import keras
    import tensorflow as tf
    from tfprune.ondevice.optim import Optimizer

    model = keras.models.load_model(keras_path, compile=False)

    class Flex(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights_ = [w.value for w in model.weights]     # the module must own them
            self.trained = [w.value for w in model.trainable_weights]
            self.opt = Optimizer("sgd", self.trained, learning_rate, 0.9, 5e-4)

        @tf.function(input_signature=[tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32, "x"),
                                      tf.TensorSpec([batch], tf.int32, "y")])
        def train(self, x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=False)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            self.opt.apply(tape.gradient(loss, self.trained), self.trained)
            return {"loss": loss}

    module = Flex()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"train": module.train.get_concrete_function()})
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["train"])
        conv.experimental_enable_resource_variables = True
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        blob = conv.convert()
    with open(out_path + ".tmp", "wb") as f:
        f.write(blob)
    os.replace(out_path + ".tmp", out_path)
    print(len(blob), tf.__version__)


def serve(tflite_path, threads, x_path, y_path, resolver="AUTO"):
    import ctypes

    import numpy as np
    import tensorflow as tf

    # The interpreter finds the Flex delegate by dlsym(TF_AcquireFlexDelegate), which lives in
    # libtensorflow_cc; Python loads it privately (RTLD_LOCAL), so make its symbols global.
    ctypes.CDLL(os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2"),
                mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    interp = tf.lite.Interpreter(model_path=tflite_path, num_threads=int(threads),
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType[resolver])
    run = interp.get_signature_runner("train")
    x, y = np.load(x_path), np.load(y_path).astype(np.int32)
    batch = run.get_input_details()["x"]["shape"][0]
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]
    run(x=batches[0][0], y=batches[0][1])                       # warm-up
    print("ready", tf.__version__, flush=True)
    for line in sys.stdin:
        steps = int(line)
        start = time.perf_counter()
        for i in range(steps):
            out = run(x=batches[i % len(batches)][0], y=batches[i % len(batches)][1])
        print(steps * batch / (time.perf_counter() - start), float(out["loss"]), flush=True)


if __name__ == "__main__":
    {"export": lambda a: export(a[0], a[1], int(a[2]), float(a[3])), "serve": lambda a: serve(*a)}[sys.argv[1]](sys.argv[2:])
