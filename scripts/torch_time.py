#!/usr/bin/env python3
"""The nets `scripts/gpu-check.sh` times with `rcaffe time -gpu 0`, built layer for layer in
PyTorch and timed the same way: the average of forward + backward over N iterations, after a
warm-up, in FP32 (TF32 off: rcaffe's cuBLAS SGEMM does not use it), cuDNN autotuning on.

Differences from `rcaffe time` (stated in the table's notes): the input is a random tensor
already on the device (rcaffe's Data layers upload an LMDB batch each forward), and only the
whole iteration is timed (rcaffe also synchronises after every layer to time it).

Usage: scripts/torch_time.py [--iterations N] [NET ...]; prints one `net<TAB>ms` line per net.
"""

import argparse
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with norm_region WITHIN_CHANNEL: x / (1 + alpha * mean_{window}(x^2))^beta,
    the mean over a local_size x local_size window counting the zero padding (Caffe's AVE
    pooling divisor)."""

    def __init__(self, size, alpha, beta):
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x):
        mean = F.avg_pool2d(x * x, self.size, stride=1, padding=(self.size - 1) // 2,
                            count_include_pad=True)
        return x / (1 + self.alpha * mean).pow(self.beta)


def lenet():
    # examples/mnist/lenet_train_test.prototxt, batch 64 of 1x28x28.
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))
    return net, (64, 1, 28, 28), 10


def cifar10_quick():
    # examples/cifar10/cifar10_quick_train_test.prototxt, batch 100 of 3x32x32.
    net = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    return net, (100, 3, 32, 32), 10


def cifar10_full():
    # examples/cifar10/cifar10_full_train_test.prototxt, batch 100 of 3x32x32.
    net = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        WithinChannelLRN(3, 5e-5, 0.75),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=True),
        WithinChannelLRN(3, 5e-5, 0.75),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10))
    return net, (100, 3, 32, 32), 10


def alexnet():
    # models/bvlc_alexnet/deploy.prototxt with batch 256 of 3x227x227 (grouped conv2/4/5,
    # cross-channel LRN, dropout, softmax output).
    net = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000),
        nn.Softmax(dim=1))
    return net, (256, 3, 227, 227), None


NETS = {"lenet": lenet, "cifar10_quick": cifar10_quick, "cifar10_full": cifar10_full,
        "alexnet": alexnet}


def time_net(name, iterations, device):
    net, shape, classes = NETS[name]()
    net = net.to(device).train()
    x = torch.randn(*shape, device=device)
    labels = (torch.randint(0, classes, (shape[0],), device=device)
              if classes is not None else None)

    def iteration():
        out = net(x)
        # A loss layer where the prototxt has one; a sum where it has none (deploy), so that
        # backward runs through every layer as `caffe time`'s does.
        loss = F.cross_entropy(out, labels) if labels is not None else out.sum()
        net.zero_grad(set_to_none=False)
        loss.backward()

    for _ in range(5):
        iteration()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        iteration()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0 / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("nets", nargs="*", default=list(NETS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("torch_time: PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda:0")
    for name in args.nets:
        print(f"{name}\t{time_net(name, args.iterations, device):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
