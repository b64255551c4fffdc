"""On-device fine-tuning: export a Keras model as one builtin-only .tflite with training
signatures (`export_trainable`, needs TF), and drive it in LiteRT (`runtime.TrainableRuntime`,
NumPy + ai_edge_litert only: importing it does not load TensorFlow).

Modules: `grads` (custom-gradient ops whose backward pass lowers to builtin TFLite ops),
`forward` (the model rebuilt from its config over plain tensors, one rule per layer type),
`optim` (Keras-exact SGD/Adam updates), `export` (the signatures, conversion, manifest),
`runtime` (the app-side driver), `finetune` (the device training loop), `reference` (the
Keras twin of the device step, for checks and comparisons).

Design choices (see each module for details):
- BatchNorm runs in inference mode with frozen moving statistics; gamma/beta still train.
  On-device batches are small and come from a narrow class subset: batch statistics would be
  noisy and would drift the running averages away from what the pruned model was calibrated
  on. Dropout is the identity in every signature (a deterministic step that equals the Keras
  model called with training=False, so gradients can be checked against TF autodiff).
- The batch size is fixed at export. A final partial batch is padded: label -1 marks a padding
  row for `train` (it carries no loss; the loss is the mean over the real rows) and valid=0
  for `filter_stats`. `TrainableRuntime` pads for the app.
- save/restore exchange one flat float32 `state` tensor (all trained variables, optimiser
  slots, step count, learning rate; layout in the manifest) instead of a file path: TF's
  file ops (Save/Restore/ReadFile/WriteFile) are Flex-only. The app writes the tensor itself
  (the runtime: an .npz with the manifest's fingerprint, written to a temp file and renamed),
  and `restore` assigns it back bit for bit; a checkpoint of another model or export
  configuration is refused by fingerprint.
- The learning rate is a variable, set with `set_learning_rate` (schedules live in the app).
- Speed: TFLite's x86 CONV_2D / TRANSPOSE_CONV with a variable (non-constant) filter run
  im2col + an Eigen GEMM on ONE thread whatever num_threads says (the multithreaded conv
  kernel needs a constant filter; float GEMM goes to Eigen, not ruy, on x86), and XNNPACK
  refuses variable conv filters. So every Conv2D lowers to BATCH_MATMULs forward and back
  (`conv_impl="matmul"`, the default; grads.matmul_conv2d: shifted rows of the flattened
  image, strides through SPACE_TO_DEPTH), which the default XNNPACK delegate runs with its
  own GEMM kernels and threads; `conv_impl="conv"` keeps CONV_2D/TRANSPOSE_CONV.
  `TrainableRuntime` uses XNNPACK by default (the builtin BATCH_MATMUL is a slow reference
  kernel). Numbers and a per-op breakdown: benchmarks/results/ondevice_train.md.
"""
from tfprune.ondevice.runtime import MANIFEST_NAME, TFLITE_NAME

_LAZY = {"export_trainable": "export", "TrainingModule": "export", "LayerGraph": "forward",
         "UnsupportedModelError": "forward"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"tfprune.ondevice.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfprune.ondevice' has no attribute {name!r}")


__all__ = ["MANIFEST_NAME", "TFLITE_NAME", *_LAZY]
