"""Model zoo: Keras 3 functional CIFAR networks (32x32 input, 100-way head), built by name.

resnet20 / resnet56: He et al. 2016 CIFAR ResNets (1x1 projection shortcut where the shape
changes, identity elsewhere). mobilenetv2: Sandler et al. 2018 with early strides reduced for
32x32 input. squeezenet: SqueezeNet 1.1 fire modules (Concatenate), BatchNorm added.
alexnet: a CIFAR AlexNet with two hidden Dense layers and dropout 0.5.
"""
from __future__ import annotations

import keras
from keras import layers

from tfprune.errors import TfpruneError

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 100
WEIGHT_INIT = "he_normal"


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                      kernel_initializer=WEIGHT_INIT, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _cifar_resnet(depth: int, num_classes: int, input_shape, name: str) -> keras.Model:
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, 16, 3, 1, "stem")
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            prefix = f"s{stage}b{block}"
            y = _conv_bn(x, width, 3, stride, f"{prefix}_a")
            y = _conv_bn(y, width, 3, 1, f"{prefix}_b", relu=False)
            if stride != 1 or x.shape[-1] != width:
                x = _conv_bn(x, width, 1, stride, f"{prefix}_proj", relu=False)
            x = layers.Add(name=f"{prefix}_add")([x, y])
            x = layers.ReLU(name=f"{prefix}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=WEIGHT_INIT, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet20(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    return _cifar_resnet(20, num_classes, input_shape, "resnet20")


def resnet56(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    return _cifar_resnet(56, num_classes, input_shape, "resnet56")


# (expansion, output channels, repeats, first stride); strides 2 -> 1 in the first two stages.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, 32, 3, 1, "stem")
    index = 0
    for expansion, out, repeats, first_stride in MOBILENETV2_STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            prefix = f"block{index}"
            y = x
            if expansion != 1:
                y = _conv_bn(y, x.shape[-1] * expansion, 1, 1, f"{prefix}_expand")
            y = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False,
                                       depthwise_initializer=WEIGHT_INIT, name=f"{prefix}_dw")(y)
            y = layers.BatchNormalization(name=f"{prefix}_dw_bn")(y)
            y = layers.ReLU(6.0, name=f"{prefix}_dw_relu")(y)
            y = _conv_bn(y, out, 1, 1, f"{prefix}_project", relu=False)
            x = layers.Add(name=f"{prefix}_add")([x, y]) if stride == 1 and x.shape[-1] == out else y
            index += 1
    x = layers.Conv2D(1280, 1, use_bias=False, kernel_initializer=WEIGHT_INIT, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=WEIGHT_INIT, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2")


def _fire(x, squeeze, expand, name):
    s = _conv_bn(x, squeeze, 1, 1, f"{name}_squeeze")
    e1 = _conv_bn(s, expand, 1, 1, f"{name}_expand1")
    e3 = _conv_bn(s, expand, 3, 1, f"{name}_expand3")
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([e1, e3])


def squeezenet(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, 64, 3, 1, "stem")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _fire(x, 16, 64, "fire2")
    x = _fire(x, 16, 64, "fire3")
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = _fire(x, 32, 128, "fire4")
    x = _fire(x, 32, 128, "fire5")
    x = layers.MaxPooling2D(2, name="pool5")(x)
    x = _fire(x, 48, 192, "fire6")
    x = _fire(x, 48, 192, "fire7")
    x = _fire(x, 64, 256, "fire8")
    x = _fire(x, 64, 256, "fire9")
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Conv2D(num_classes, 1, kernel_initializer=WEIGHT_INIT, name="classifier")(x)
    outputs = layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name="squeezenet")


def alexnet(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, (filters, kernel, pool) in enumerate(
            ((64, 5, True), (192, 5, True), (384, 3, False), (256, 3, False), (256, 3, True)), 1):
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu",
                          kernel_initializer=WEIGHT_INIT, name=f"conv{i}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dropout(0.5, name=f"dropout{i}")(x)
        x = layers.Dense(1024, activation="relu", kernel_initializer=WEIGHT_INIT, name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=WEIGHT_INIT, name="logits")(x)
    return keras.Model(inputs, outputs, name="alexnet")


MODELS = {"resnet20": resnet20, "resnet56": resnet56, "mobilenetv2": mobilenetv2,
          "squeezenet": squeezenet, "alexnet": alexnet}


def build(name: str, num_classes: int = NUM_CLASSES, input_shape=INPUT_SHAPE) -> keras.Model:
    """A freshly initialised zoo model by name."""
    if name not in MODELS:
        raise TfpruneError(f"unknown zoo model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, input_shape=input_shape)
