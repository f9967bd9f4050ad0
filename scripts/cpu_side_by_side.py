#!/usr/bin/env python3
"""rcaffe against PyTorch on the CPU, the same nets from the same prototxt files, side by side in
one run, taking turns: forward + backward (`rcaffe time -model`) and a whole training iteration
(`rcaffe time -solver`: SGD, momentum 0.9, weight decay 0.0005) in ms.

Each net is first rewritten into the form both sides time ("timing net", written to --out):
its data layers (Data, Input, `input:` fields) become DummyData of the same shape (Gaussian
images, labels 0), TEST-only layers and Accuracy go, a deploy net's closing Softmax becomes a
SoftmaxWithLoss (so backward carries real gradients through every layer, as in training),
BatchNorm computes batch statistics (`use_global_stats` cleared), and weights without a filler
get MSRA's (a deploy file's weights come from a .caffemodel; zeros would let sparse paths skip
work). PyTorch runs that net layer for layer as a PyTorch user writes it: BatchNorm followed by
an in-place Scale is one `nn.BatchNorm2d` with its affine parameters, an in-place ReLU or
Dropout runs in place, and `torch.optim.SGD` updates. Every timing runs in its own process, so
neither side's idle worker threads take the other's cores.

Needs `import caffe` (for caffe_pb2: `pip install ./python`, or PYTHONPATH=python after
`maturin develop`) and `import torch`, plus a release build of rcaffe.

    python3 scripts/cpu_side_by_side.py NET.prototxt [NET.prototxt ...] [--data-shape C,H,W]
        [--iterations N] [--rounds 2] [--threads 2] [--rcaffe target/release/rcaffe]
        [--out side-by-side]
"""

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from google.protobuf import text_format

from caffe.proto import caffe_pb2

DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "Input"}
LABEL_BLOB = "label"


def read_net(path):
    net = caffe_pb2.NetParameter()
    text_format.Merge(Path(path).read_text(), net)
    return net


def in_train_phase(layer):
    if any(rule.HasField("phase") and rule.phase == caffe_pb2.TEST for rule in layer.include):
        return False
    return not any(rule.HasField("phase") and rule.phase == caffe_pb2.TRAIN
                   for rule in layer.exclude)


def dummy_data(name, tops_and_shapes):
    """DummyData for `(top, shape)` pairs: labels (one number per image) 0, images Gaussian."""
    layer = caffe_pb2.LayerParameter(name=name, type="DummyData")
    for top, shape in tops_and_shapes:
        layer.top.append(top)
        layer.dummy_data_param.shape.add().dim.extend(shape)
        filler = layer.dummy_data_param.data_filler.add()
        if len(shape) == 1:
            filler.type = "constant"
        else:
            filler.type = "gaussian"
            filler.std = 1.0
    return layer


def input_shapes(net):
    """The `input:` fields of a deploy net with their shapes (input_dim or input_shape)."""
    shapes = []
    for i, name in enumerate(net.input):
        if net.input_shape:
            shapes.append((name, list(net.input_shape[i].dim)))
        else:
            shapes.append((name, list(net.input_dim[4 * i:4 * i + 4])))
    return shapes


def timing_net(net, data_shape):
    """`net` rewritten as both sides time it (see the module's docs)."""
    out = caffe_pb2.NetParameter(name=net.name)
    batch = None
    if net.input:
        shapes = input_shapes(net)
        batch = shapes[0][1][0]
        out.layer.append(dummy_data("inputs", shapes))
    layers = [layer for layer in net.layer if in_train_phase(layer) and layer.type != "Accuracy"]
    has_loss = any(layer.type.endswith("Loss") for layer in layers)
    for layer in layers:
        if layer.type in DATA_LAYERS:
            if layer.type == "Input":
                shapes = [(top, list(shape.dim))
                          for top, shape in zip(layer.top, layer.input_param.shape)]
            else:
                if data_shape is None:
                    sys.exit(f"layer {layer.name}: a {layer.type} layer needs --data-shape C,H,W")
                size = layer.transform_param.crop_size
                c, h, w = data_shape
                h, w = (size, size) if size else (h, w)
                batch_size = (layer.data_param.batch_size or layer.image_data_param.batch_size
                              or layer.hdf5_data_param.batch_size)
                shapes = [(layer.top[0], [batch_size, c, h, w])]
                shapes += [(top, [batch_size]) for top in layer.top[1:]]
            batch = batch or shapes[0][1][0]
            out.layer.append(dummy_data(layer.name, shapes))
            continue
        copy = out.layer.add()
        copy.CopyFrom(layer)
        layer = copy
        if layer.type == "BatchNorm":
            layer.batch_norm_param.ClearField("use_global_stats")
        if layer.type in ("Convolution", "InnerProduct"):
            param = (layer.convolution_param if layer.type == "Convolution"
                     else layer.inner_product_param)
            if not param.HasField("weight_filler"):
                param.weight_filler.type = "msra"
    if not has_loss:
        last = out.layer[-1]
        if last.type != "Softmax":
            sys.exit(f"{net.name}: no loss layer, and it does not end in a Softmax to replace")
        last.type = "SoftmaxWithLoss"
        last.bottom.append(LABEL_BLOB)
        del last.top[:]
        last.top.append("loss")
        out.layer.insert(1, dummy_data("labels", [(LABEL_BLOB, [batch])]))
    return out


def write_timing_files(path, data_shape, out_dir):
    net = timing_net(read_net(path), data_shape)
    stem = Path(path).stem
    net_path = out_dir / f"{stem}.timing.prototxt"
    net_path.write_text(text_format.MessageToString(net))
    solver_path = out_dir / f"{stem}.solver.prototxt"
    solver_path.write_text(
        f'net: "{net_path.name}"\nbase_lr: 0.0001\nlr_policy: "fixed"\nmomentum: 0.9\n'
        'weight_decay: 0.0005\nmax_iter: 100000\ndisplay: 0\nsolver_mode: CPU\n')
    return net_path, solver_path


# ---- PyTorch: the timing net, layer for layer ------------------------------------------------

def torch_net(net):
    import torch
    from torch import nn
    import torch.nn.functional as F

    from torch_time import WithinChannelLRN

    def pair(values, h, w, default):
        if h or w:
            return (h, w)
        values = list(values) or [default]
        return (values[0], values[-1])

    class ChannelScale(nn.Module):
        def __init__(self, channels, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = x * self.weight.view(shape)
            return y + self.bias.view(shape) if self.bias is not None else y

    class Pool(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            p = self.p
            if p.global_pooling:
                kernel, stride, pad = x.shape[2:], (1, 1), (0, 0)
            else:
                kernel = pair([p.kernel_size], p.kernel_h, p.kernel_w, 1)
                stride = pair([p.stride], p.stride_h, p.stride_w, 1)
                pad = pair([p.pad], p.pad_h, p.pad_w, 0)
            if p.pool == caffe_pb2.PoolingParameter.MAX:
                return F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)
            return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)

    class TimingNet(nn.Module):
        """Runs the layers in order over a dictionary of blobs; returns the loss."""

        def __init__(self, inputs):
            super().__init__()
            self.steps = []
            self.parts = nn.ModuleList()
            blobs = dict(inputs)
            layers = [layer for layer in net.layer if layer.type != "DummyData"]
            skip = set()
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    if i in skip:
                        continue
                    following = layers[i + 1] if i + 1 < len(layers) else None
                    module, kind = self.build(layer, following, blobs, skip, i)
                    if module is not None:
                        self.parts.append(module)
                    step = (kind, list(layer.bottom), list(layer.top), module)
                    self.steps.append(step)
                    self.run_step(step, blobs)

        def build(self, layer, following, blobs, skip, i):
            t = layer.type
            x = blobs[layer.bottom[0]] if layer.bottom else None
            if t == "Convolution":
                p = layer.convolution_param
                return nn.Conv2d(
                    x.shape[1], p.num_output,
                    pair(p.kernel_size, p.kernel_h, p.kernel_w, 1),
                    pair(p.stride, p.stride_h, p.stride_w, 1),
                    pair(p.pad, p.pad_h, p.pad_w, 0),
                    pair(p.dilation, 0, 0, 1), groups=p.group or 1,
                    bias=p.bias_term), "module"
            if t == "InnerProduct":
                p = layer.inner_product_param
                return nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), p.num_output,
                                                             bias=p.bias_term)), "module"
            if t == "BatchNorm":
                p = layer.batch_norm_param
                affine = (following is not None and following.type == "Scale"
                          and list(following.bottom) == list(layer.top)
                          and list(following.top) == list(layer.top))
                if affine:
                    skip.add(i + 1)
                bn = nn.BatchNorm2d(x.shape[1], eps=p.eps, momentum=1 - p.moving_average_fraction,
                                    affine=affine)
                return bn, "module"
            if t == "Scale":
                return ChannelScale(x.shape[1], layer.scale_param.bias_term), "module"
            if t == "ReLU":
                inplace = layer.top[0] == layer.bottom[0]
                slope = layer.relu_param.negative_slope
                if slope:
                    return nn.LeakyReLU(slope, inplace=inplace), "module"
                return nn.ReLU(inplace=inplace), "module"
            if t == "Dropout":
                return nn.Dropout(layer.dropout_param.dropout_ratio,
                                  inplace=layer.top[0] == layer.bottom[0]), "module"
            if t == "Pooling":
                return Pool(layer.pooling_param), "module"
            if t == "LRN":
                p = layer.lrn_param
                if p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL:
                    return WithinChannelLRN(p.local_size, p.alpha, p.beta), "module"
                return nn.LocalResponseNorm(p.local_size, p.alpha, p.beta, p.k), "module"
            if t in ("Sigmoid", "TanH"):
                return (nn.Sigmoid() if t == "Sigmoid" else nn.Tanh()), "module"
            if t in ("Concat", "Eltwise", "Split", "Softmax", "SoftmaxWithLoss", "Flatten"):
                return None, t
            sys.exit(f"layer {layer.name}: type {t} has no PyTorch form here")

        @staticmethod
        def run_step(step, blobs):
            kind, bottoms, tops, module = step
            xs = [blobs[b] for b in bottoms]
            if kind == "module":
                y = module(xs[0])
            elif kind == "Concat":
                y = torch.cat(xs, 1)
            elif kind == "Eltwise":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
            elif kind == "Split":
                for top in tops:
                    blobs[top] = xs[0]
                return None
            elif kind == "Softmax":
                y = F.softmax(xs[0], 1)
            elif kind == "Flatten":
                y = xs[0].flatten(1)
            else:  # SoftmaxWithLoss
                y = F.cross_entropy(xs[0].flatten(1), xs[1].long())
            blobs[tops[0]] = y
            return y

        def forward(self, inputs):
            blobs = dict(inputs)
            loss = None
            for step in self.steps:
                y = self.run_step(step, blobs)
                if step[0] == "SoftmaxWithLoss":
                    loss = y
            return loss

    inputs = {}
    for layer in net.layer:
        if layer.type == "DummyData":
            for top, shape in zip(layer.top, layer.dummy_data_param.shape):
                dims = list(shape.dim)
                inputs[top] = torch.zeros(dims) if len(dims) == 1 else torch.randn(dims)
    return TimingNet(inputs).train(), inputs


def torch_worker(net_path, iterations, threads):
    import torch
    torch.set_num_threads(threads)
    model, inputs = torch_net(read_net(net_path))

    def forward_backward():
        loss = model(inputs)
        model.zero_grad(set_to_none=False)
        loss.backward()

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def training_iteration():
        optimizer.zero_grad(set_to_none=False)
        model(inputs).backward()
        optimizer.step()

    for step in (forward_backward, training_iteration):
        step()  # warm-up: oneDNN's primitives are created on first use
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        print(f"{(time.perf_counter() - start) * 1000 / iterations:.1f}")


# ---- the side-by-side run --------------------------------------------------------------------

def rcaffe_ms(rcaffe, args, pattern, cwd):
    done = subprocess.run([rcaffe, "time", *args], cwd=cwd, capture_output=True, text=True)
    match = re.search(pattern + r": ([0-9.]+) ms", done.stderr + done.stdout)
    if done.returncode != 0 or not match:
        sys.exit(f"rcaffe time {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return float(match.group(1))


def torch_ms(net_path, iterations, threads):
    done = subprocess.run([sys.executable, __file__, "--torch-worker", str(net_path),
                           "--iterations", str(iterations), "--threads", str(threads)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"PyTorch on {net_path} failed:\n{done.stderr[-2000:]}")
    forward_backward, training = (float(v) for v in done.stdout.split())
    return forward_backward, training


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def simd_level():
    flags = Path("/proc/cpuinfo").read_text()
    return "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "SSE"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nets", nargs="+")
    parser.add_argument("--data-shape", help="C,H,W of Data layers' images")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rcaffe", default="target/release/rcaffe")
    parser.add_argument("--out", default="side-by-side")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        torch_worker(args.nets[0], args.iterations, args.threads)
        return 0

    import torch
    data_shape = tuple(int(v) for v in args.data_shape.split(",")) if args.data_shape else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rcaffe = str(Path(args.rcaffe).resolve())
    env_threads = os.environ.get("RAYON_NUM_THREADS")
    if env_threads and int(env_threads) != args.threads:
        sys.exit(f"RAYON_NUM_THREADS={env_threads} but --threads {args.threads}")
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    files = [(Path(p).stem, *write_timing_files(p, data_shape, out_dir)) for p in args.nets]
    times = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    for _ in range(args.rounds):
        for name, net_path, solver_path in files:
            n = str(args.iterations)
            row = times.setdefault(name, {"rf": [], "rt": [], "tf": [], "tt": []})
            row["rf"].append(rcaffe_ms(rcaffe, ["-model", net_path.name, "-iterations", n],
                                       "Average Forward-Backward", out_dir))
            row["rt"].append(rcaffe_ms(rcaffe, ["-solver", solver_path.name, "-iterations", n],
                                       "Average training iteration", out_dir))
            forward_backward, training = torch_ms(net_path, args.iterations, args.threads)
            row["tf"].append(forward_backward)
            row["tt"].append(training)
            print(f"{name}: rcaffe {row['rf'][-1]:.1f} / {row['rt'][-1]:.1f} ms, "
                  f"PyTorch {forward_backward:.1f} / {training:.1f} ms", file=sys.stderr)
    finished = datetime.datetime.now(datetime.timezone.utc)

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical, {simd_level()}), {args.threads} "
          f"threads each; PyTorch {torch.__version__}; {started:%Y-%m-%d %H:%M}-"
          f"{finished:%H:%M} UTC; {args.iterations} iterations, {args.rounds} rounds, medians\n")
    print("| net | rcaffe fwd+bwd | PyTorch fwd+bwd | ratio | rcaffe train iter | "
          "PyTorch train iter | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in times.items():
        rf, rt, tf, tt = (statistics.median(row[k]) for k in ("rf", "rt", "tf", "tt"))
        print(f"| {name} | {rf:.0f} | {tf:.0f} | {rf / tf:.2f} | {rt:.0f} | {tt:.0f} | "
              f"{rt / tt:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
