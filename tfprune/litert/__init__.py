"""LiteRT: reading .tflite files, converting Keras models to them (float32, full int8, QAT),
the files a model ships as (`targets`) and the validation gate they pass (`validate`).

The reader (`model_file`) needs no TensorFlow, so importing this package does not load it."""
from tfprune.litert.model_file import (FLEX_PREFIX, OP_NAMES, TYPE_NAMES, ModelInfo, OpInfo,
                                       TensorInfo, TFLiteFileError, flex_ops, inspect,
                                       io_details, load_interpreter, op_counts, read_bytes,
                                       run, signature_details)

__all__ = ["FLEX_PREFIX", "OP_NAMES", "TYPE_NAMES", "ModelInfo", "OpInfo", "TensorInfo",
           "TFLiteFileError", "flex_ops", "inspect", "io_details", "load_interpreter",
           "op_counts", "read_bytes", "run", "signature_details"]
