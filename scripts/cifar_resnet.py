#!/usr/bin/env python3
"""Writes He et al.'s CIFAR ResNets ("Deep Residual Learning for Image Recognition", section
4.2: depth 6n + 2, three stages of n basic blocks with 16, 32 and 64 channels on 32 x 32, 16 x 16
and 8 x 8 maps, global average pooling, a 10-way fully connected layer) as Caffe prototxt, in
Caffe's usual form: each 3 x 3 convolution without a bias, followed by BatchNorm, an in-place
Scale with a bias, and an in-place ReLU (after the sum in each block's second half); a stage's
first block halves the map with stride 2 and its shortcut is a 1 x 1 convolution of stride 2
with BatchNorm and Scale (the paper's option B: Caffe has no zero-padding shortcut).

The solver is the paper's: SGD, momentum 0.9, weight decay 0.0001, batch 128, rate 0.1 divided
by 10 at 32,000 and 48,000 iterations, 64,000 in all. Data: Fashion-CIFAR's LMDBs and mean in
the run folder (`rcaffe mnist-to-cifar`, `convert-cifar`, `compute-image-mean`), as the
cifar10_quick files in models/ name them.

    python3 scripts/cifar_resnet.py [--depths 20 56] [--out models/cifar_resnet]
"""

import argparse
import sys
from pathlib import Path

SOLVER = """\
# He et al.'s CIFAR-10 schedule (section 4.2): 0.1, divided by 10 at 32k and 48k, 64k iterations.
net: "{net}"
test_iter: 100
test_interval: 1000
base_lr: 0.1
lr_policy: "multistep"
gamma: 0.1
stepvalue: 32000
stepvalue: 48000
max_iter: 64000
momentum: 0.9
weight_decay: 0.0001
display: 100
snapshot: 10000
snapshot_prefix: "{name}"
solver_mode: CPU
# BatchNorm's running averages start at zero: a test before any training divides by sqrt(eps)
# through every stage and overflows (upstream Caffe does the same).
test_initialization: false
"""


class Writer:
    def __init__(self, name):
        self.lines = [f'name: "{name}"']

    def layer(self, name, layer_type, bottoms, top, *body):
        self.lines += ["layer {", f'  name: "{name}"', f'  type: "{layer_type}"']
        self.lines += [f'  bottom: "{b}"' for b in bottoms]
        self.lines += [f'  top: "{top}"'] + [f"  {line}" for line in body] + ["}"]
        return top

    def data(self, phase, source, batch):
        self.lines += [
            "layer {", '  name: "data"', '  type: "Data"', '  top: "data"', '  top: "label"',
            f"  include {{ phase: {phase} }}",
            '  transform_param { mean_file: "fcifar_mean.binaryproto" }',
            f'  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}', "}"]

    def conv_bn(self, name, bottom, outputs, kernel, stride, relu):
        """Convolution, BatchNorm, Scale (and ReLU), the last three in place."""
        top = self.layer(
            name, "Convolution", [bottom], name,
            "param { lr_mult: 1 decay_mult: 1 }",
            f"convolution_param {{ num_output: {outputs} bias_term: false pad: {kernel // 2} "
            f"kernel_size: {kernel} stride: {stride} weight_filler {{ type: \"msra\" }} }}")
        self.layer(f"{name}/bn", "BatchNorm", [top], top,
                   *["param { lr_mult: 0 decay_mult: 0 }"] * 3)
        self.layer(f"{name}/scale", "Scale", [top], top, "scale_param { bias_term: true }")
        if relu:
            self.layer(f"{name}/relu", "ReLU", [top], top)
        return top


def resnet(depth):
    if (depth - 2) % 6:
        sys.exit(f"depth {depth}: a CIFAR ResNet has depth 6n + 2")
    blocks = (depth - 2) // 6
    w = Writer(f"ResNet-{depth}")
    w.data("TRAIN", "cifar10_train_lmdb", 128)
    w.data("TEST", "cifar10_test_lmdb", 100)
    x = w.conv_bn("conv1", "data", 16, 3, 1, relu=True)
    for stage, channels in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks + 1):
            name = f"res{stage}.{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            y = w.conv_bn(f"{name}/conv1", x, channels, 3, stride, relu=True)
            y = w.conv_bn(f"{name}/conv2", y, channels, 3, 1, relu=False)
            shortcut = x
            if stride != 1:
                shortcut = w.conv_bn(f"{name}/shortcut", x, channels, 1, stride, relu=False)
            x = w.layer(f"{name}/sum", "Eltwise", [y, shortcut], name,
                        "eltwise_param { operation: SUM }")
            w.layer(f"{name}/relu", "ReLU", [x], x)
    x = w.layer("pool", "Pooling", [x], "pool", "pooling_param { pool: AVE global_pooling: true }")
    x = w.layer("fc", "InnerProduct", [x], "fc",
                "inner_product_param { num_output: 10 weight_filler { type: \"msra\" } }")
    w.layer("loss", "SoftmaxWithLoss", [x, "label"], "loss")
    w.lines += ["layer {", '  name: "accuracy"', '  type: "Accuracy"', '  bottom: "fc"',
                '  bottom: "label"', '  top: "accuracy"', "  include { phase: TEST }", "}"]
    return "\n".join(w.lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--out", default="models/cifar_resnet")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for depth in args.depths:
        net = f"resnet{depth}_train_test.prototxt"
        (out / net).write_text(resnet(depth))
        (out / f"resnet{depth}_solver.prototxt").write_text(
            SOLVER.format(net=net, name=f"resnet{depth}"))
        print(out / net)
    return 0


if __name__ == "__main__":
    sys.exit(main())
