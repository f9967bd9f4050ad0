#!/usr/bin/env python3
"""The paper's own Caffe experiment (end of its section 4.1.2) on Fashion-CIFAR: DenseNet-40
(growth rate 12, no bottleneck, dropout 0.2: the net of liuzhuang13/DenseNetCaffe's
`train_densenet.prototxt`, written out here layer for layer under the same layer names) trained
with Nesterov momentum at fixed rates of 0.1, 0.2 and 0.3 against a cyclic rate between 0.1 and
0.3 (the paper: 91.67, 92.17 and 92.46 % against 93.33 % on CIFAR-10, five runs each, at the
authors' full 300 epochs).

The authors' solver otherwise: Nesterov, momentum 0.9, weight decay 0.0001, batch 64. The
cyclic run is `triangular` with one cycle per run by default (stepsize half the run) — the paper
does not give its stepsize. On two CPU cores a training iteration takes about 1.4 s, so the
default here is a reduced run (500 iterations, about half an epoch, testing 2,000 test images
every 100): a GPU runs it at full length with `--iterations 234000 --stepsize 3750 --test-iter
200 --test-interval 800` (`solver_mode` from `--mode GPU`).

    python3 scripts/paper/densenet40.py [--seeds 1 2 3] [--iterations 500] [--stepsize N]
        [--test-iter 40] [--test-interval 100] [--mode CPU] [--out DIR]
"""

import sys

from clr_experiment import Setting, arguments, fashion_cifar, main

GROWTH = 12
LAYERS_PER_BLOCK = 12
FIRST_CHANNELS = 16
DROPOUT = 0.2


class NetWriter:
    """Writes layers in prototxt form, numbering each type as the authors' file does."""

    def __init__(self):
        self.lines = ['name: "DenseNet-40"']
        self.counts = {}

    def name(self, layer_type):
        self.counts[layer_type] = self.counts.get(layer_type, 0) + 1
        return f"{layer_type}{self.counts[layer_type]}"

    def layer(self, layer_type, bottoms, top, body="", name=None):
        name = name or self.name(layer_type)
        top = top or name
        lines = ["layer {", f'  name: "{name}"', f'  type: "{layer_type}"']
        lines += [f'  bottom: "{b}"' for b in bottoms]
        lines += [f'  top: "{top}"']
        lines += [f"  {line}" for line in body.strip().splitlines()]
        self.lines += lines + ["}"]
        return top

    def data(self, phase, source, batch):
        self.lines += ["layer {", '  name: "Data1"', '  type: "Data"', '  top: "Data1"',
                       '  top: "Data2"', f"  include {{ phase: {phase} }}",
                       '  transform_param { mean_file: "fcifar_mean.binaryproto" }',
                       f'  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}',
                       "}"]

    def convolution(self, bottom, outputs, kernel):
        pad = (kernel - 1) // 2
        return self.layer("Convolution", [bottom], None, f"""
convolution_param {{
  num_output: {outputs} bias_term: false pad: {pad} kernel_size: {kernel} stride: 1
  weight_filler {{ type: "msra" }}
}}""")

    def normalise(self, bottom):
        """BatchNorm (its statistics not learned), then Scale with a bias and ReLU in place."""
        frozen = "param { lr_mult: 0 decay_mult: 0 }\n" * 3
        top = self.layer("BatchNorm", [bottom], None, frozen)
        self.layer("Scale", [top], top,
                   "scale_param { filler { value: 1 } bias_term: true bias_filler { value: 0 } }")
        self.layer("ReLU", [top], top)
        return top

    def dropout(self, bottom):
        return self.layer("Dropout", [bottom], None,
                          f"dropout_param {{ dropout_ratio: {DROPOUT} }}")


def densenet40():
    net = NetWriter()
    net.data("TRAIN", "cifar10_train_lmdb", 64)
    net.data("TEST", "cifar10_test_lmdb", 50)
    features = net.convolution("Data1", FIRST_CHANNELS, 3)
    channels = FIRST_CHANNELS
    for block in range(3):
        for _ in range(LAYERS_PER_BLOCK):
            new = net.dropout(net.convolution(net.normalise(features), GROWTH, 3))
            features = net.layer("Concat", [features, new], None, "concat_param { axis: 1 }")
            channels += GROWTH
        if block < 2:
            # Transition: a 1x1 convolution keeping the channels, then 2x2 average pooling.
            new = net.dropout(net.convolution(net.normalise(features), channels, 1))
            features = net.layer("Pooling", [new], None,
                                 "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
    top = net.normalise(features)
    top = net.layer("Pooling", [top], None, "pooling_param { pool: AVE global_pooling: true }")
    top = net.layer("InnerProduct", [top], None, """
inner_product_param {
  num_output: 10 bias_term: true
  weight_filler { type: "xavier" } bias_filler { type: "constant" }
}""")
    net.layer("SoftmaxWithLoss", [top, "Data2"], None)
    net.layer("Accuracy", [top, "Data2"], "accuracy", "include { phase: TEST }")
    return "\n".join(net.lines) + "\n"


def densenet_options(parser):
    parser.add_argument("--stepsize", type=int, help="default: half the run (one cycle)")
    parser.add_argument("--test-iter", type=int, default=40, help="test batches of 50")
    parser.add_argument("--test-interval", type=int, default=100)
    parser.add_argument("--mode", choices=["CPU", "GPU"], default="CPU")


def prepare(rcaffe, workdir):
    fashion_cifar(rcaffe, workdir)
    (workdir / "densenet40_train_test.prototxt").write_text(densenet40())
    # No test before training: BatchNorm's running statistics are still zero then (upstream
    # divides by sqrt(eps)), and 39 of them in a row overflow to NaN, which Accuracy counts as
    # right.
    return {"net": '"densenet40_train_test.prototxt"', "test_iter": ARGS.test_iter,
            "test_interval": ARGS.test_interval, "test_initialization": "false",
            "display": 20, "max_iter": ARGS.iterations, "solver_mode": ARGS.mode}


if __name__ == "__main__":
    ARGS = arguments("densenet40", 500, densenet_options)
    if ARGS.iterations < 2:
        sys.exit("--iterations: at least 2")
    stepsize = ARGS.stepsize or ARGS.iterations // 2
    rule = {"type": '"Nesterov"', "momentum": 0.9, "weight_decay": 0.0001}
    fixed = [Setting(f"fixed_{lr}", "densenet40", f"fixed {lr}",
                     {**rule, "base_lr": lr, "lr_policy": '"fixed"'}) for lr in (0.1, 0.2, 0.3)]
    cyclic = Setting("triangular", "densenet40", f"triangular 0.1–0.3, stepsize {stepsize}",
                     {**rule, "base_lr": 0.1, "max_lr": 0.3, "stepsize": stepsize,
                      "lr_policy": '"triangular"'}, baseline="fixed_0.1")
    main("DenseNet-40 on Fashion-CIFAR: fixed rates against CLR",
         f"Nesterov at fixed 0.1, 0.2, 0.3 against triangular 0.1–0.3 (the paper's section "
         f"4.1.2); every run {ARGS.iterations} iterations at batch 64, tests of "
         f"{50 * ARGS.test_iter} test images every {ARGS.test_interval}.",
         prepare, fixed + [cyclic], ARGS.seeds, ARGS.out, plots_by_method=True)
