#!/usr/bin/env python3
"""The nets `scripts/gpu-check.sh` times with rcaffe, built layer for layer in PyTorch and
timed the same two ways, in FP32 (TF32 off: rcaffe's cuBLAS SGEMM does not use it), cuDNN
autotuning on, each the average over N iterations after a warm-up:

- forward + backward, beside `rcaffe time -model` (AlexNet: deploy.prototxt, batch 256, its
  Softmax output summed so that backward runs through every layer, as `caffe time` does);
- a whole training iteration, beside `rcaffe time -solver`: zero the gradients, forward,
  cross-entropy loss, backward, SGD step with momentum 0.9 and weight decay (torch.optim.SGD's
  default multi-tensor form). AlexNet ends in its loss here, as a train net does.

Differences from rcaffe (stated in the table's notes): the input is a random tensor already on
the device (rcaffe's Data layers upload an LMDB batch each iteration; its AlexNet training net
has constant DummyData), and only whole iterations are timed (`rcaffe time -model` also
synchronises after every layer to time it).

Usage: scripts/torch_time.py [--iterations N] [NET ...]; prints one line per net:
`net<TAB>forward-backward ms<TAB>training iteration ms`.
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
    # cross-channel LRN, dropout), up to fc8; its Softmax is added for the deploy timing.
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
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))
    return net, (256, 3, 227, 227), 1000


NETS = {"lenet": lenet, "cifar10_quick": cifar10_quick, "cifar10_full": cifar10_full,
        "alexnet": alexnet}
# Timed forward-backward as their deploy.prototxt: a Softmax output and no loss layer.
DEPLOY = {"alexnet"}


def average_ms(step, iterations):
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0 / iterations


def time_net(name, iterations, device):
    """(forward-backward ms, training iteration ms) of net `name`."""
    net, shape, classes = NETS[name]()
    net = net.to(device).train()
    x = torch.randn(*shape, device=device)
    labels = torch.randint(0, classes, (shape[0],), device=device)

    def forward_backward():
        out = net(x)
        if name in DEPLOY:
            loss = F.softmax(out, dim=1).sum()
        else:
            loss = F.cross_entropy(out, labels)
        net.zero_grad(set_to_none=False)
        loss.backward()

    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def training_iteration():
        optimizer.zero_grad(set_to_none=False)
        F.cross_entropy(net(x), labels).backward()
        optimizer.step()

    return average_ms(forward_backward, iterations), average_ms(training_iteration, iterations)


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
        forward_backward, training = time_net(name, args.iterations, device)
        print(f"{name}\t{forward_backward:.3f}\t{training:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
