#!/usr/bin/env python3
"""The pattern of the paper's Table 3 on LeNet and all of Fashion-MNIST: Nesterov, Adam,
RMSProp, AdaGrad and AdaDelta, each at its usual rate (upstream's LeNet and MNIST solvers for
that method) and with `triangular2` between the bounds a range test reads for that method
(over 2 epochs, from below where accuracy rises to past where training diverges), stepsize 2,000 (2.1 epochs), every run the same
length, three seeds.

    python3 scripts/paper/table3_lenet.py [--seeds 1 2 3] [--iterations 8000] [--out DIR]

Results in paper-runs/table3_lenet/ (see clr_experiment.py); docs/paper.md quotes them.
"""

import shutil
import subprocess

from clr_experiment import REPO, Setting, arguments, main, range_test_bounds

# Upstream's solver for each method on LeNet or MNIST: lenet_solver.prototxt's rule and rate
# for Nesterov (upstream has no LeNet Nesterov file), lenet_solver_adam, lenet_solver_rmsprop,
# mnist_autoencoder_solver_adagrad's rate, lenet_adadelta_solver.
INV = {"lr_policy": '"inv"', "gamma": 0.0001, "power": 0.75}
# Each method's range test: from below where accuracy rises to past where training diverges
# (RMSProp diverges from about 0.006, AdaDelta from about 2).
RANGES = {"nesterov": (0.001, 0.1), "adam": (0.0001, 0.01), "rmsprop": (0.00001, 0.003),
          "adagrad": (0.001, 0.1), "adadelta": (0.01, 3.0)}
METHODS = {
    "nesterov": ({"type": '"Nesterov"', "base_lr": 0.01, "momentum": 0.9,
                  "weight_decay": 0.0005}, INV),
    "adam": ({"type": '"Adam"', "base_lr": 0.001, "momentum": 0.9, "momentum2": 0.999},
             {"lr_policy": '"fixed"'}),
    "rmsprop": ({"type": '"RMSProp"', "base_lr": 0.01, "momentum": 0.0, "weight_decay": 0.0005,
                 "rms_decay": 0.98}, INV),
    "adagrad": ({"type": '"AdaGrad"', "base_lr": 0.01, "weight_decay": 0.0005},
                {"lr_policy": '"fixed"'}),
    "adadelta": ({"type": '"AdaDelta"', "base_lr": 1.0, "momentum": 0.95, "weight_decay": 0.0005,
                  "delta": 1e-6}, {"lr_policy": '"fixed"'}),
}
STEPSIZE = 2000


def prepare(rcaffe, workdir):
    data = REPO / "data" / "fashion-mnist"
    for part, name in [("train", "fmnist_train_lmdb"), ("t10k", "fmnist_test_lmdb")]:
        if not (workdir / name / "data.mdb").exists():
            subprocess.run([rcaffe, "convert-mnist", str(data / f"{part}-images-idx3-ubyte.gz"),
                            str(data / f"{part}-labels-idx1-ubyte.gz"), str(workdir / name)],
                           check=True, capture_output=True)
    shutil.copy(REPO / "models" / "lenet" / "lenet_train_test.prototxt", workdir)
    return {"net": '"lenet_train_test.prototxt"', "test_iter": 100, "test_interval": 500,
            "display": 100, "max_iter": ARGS.iterations, "solver_mode": "CPU"}


def settings(rcaffe, workdir, common):
    out = []
    for method, (rule, usual_policy) in METHODS.items():
        usual = rule["base_lr"]
        out.append(Setting(f"{method}_usual", method, f"{usual_policy['lr_policy'][1:-1]} "
                           f"{usual:g}", {**rule, **usual_policy}))
        # (lr-range sets its own length and rates.)
        range_fields = {**common, **rule, "lr_policy": '"fixed"', "random_seed": 1}
        del range_fields["max_iter"]
        bounds = range_test_bounds(rcaffe, workdir, method, range_fields, *RANGES[method], 2)
        note = ""
        if bounds is None:
            # No reading: the paper's rule of thumb around the usual rate.
            bounds, note = (usual / 3, usual), " (no range-test reading: usual/3 to usual)"
        base_lr, max_lr = bounds
        out.append(Setting(f"{method}_triangular2", method,
                           f"triangular2 {base_lr:g}–{max_lr:g}{note}",
                           {**rule, "base_lr": base_lr, "max_lr": max_lr,
                            "lr_policy": '"triangular2"', "stepsize": STEPSIZE},
                           baseline=f"{method}_usual"))
    return out


if __name__ == "__main__":
    ARGS = arguments("table3_lenet", 8000)
    main("Table 3's pattern on LeNet, Fashion-MNIST",
         "Each update rule at its usual rate against triangular2 between its range test's "
         f"bounds (stepsize {STEPSIZE}); every run {ARGS.iterations} iterations, tests of all "
         "10,000 test images every 500.",
         prepare, settings, ARGS.seeds, ARGS.out)
