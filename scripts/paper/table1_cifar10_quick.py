#!/usr/bin/env python3
"""The pattern of the paper's Table 1 on Caffe's cifar10_quick and Fashion-CIFAR (all of
Fashion-MNIST in CIFAR-10's shape, made by `rcaffe mnist-to-cifar`): the zoo's own schedule
as the baseline against the paper's `triangular`, `triangular2`, `exp_range` and `decay`
between the bounds a range test reads (section 3.3), each run as long as the baseline, three
seeds.

The baseline is upstream's two cifar10_quick solver files in one: `cifar10_quick_solver`
(0.001 for 4,000 iterations) then `cifar10_quick_solver_lr1` resumed from its snapshot (0.0001
to 5,000), which is `multistep` with one step at 4,000 and gamma 0.1 (the solver state carries
across the resume, as it does here). The cyclic runs use stepsize 1,250 (2.1 epochs of 600
iterations) and end at 5,000, the end of their second cycle; exp_range's gamma is the paper's
0.99994; `decay` falls from max_lr to base_lr over one stepsize and stays there.

    python3 scripts/paper/table1_cifar10_quick.py [--seeds 1 2 3] [--iterations 5000] [--out DIR]
"""

import shutil

from clr_experiment import REPO, Setting, arguments, fashion_cifar, main, range_test_bounds

RULE = {"momentum": 0.9, "weight_decay": 0.004}
STEPSIZE = 1250
RANGE = (0.0001, 0.02)


def prepare(rcaffe, workdir):
    fashion_cifar(rcaffe, workdir)
    shutil.copy(REPO / "models" / "cifar10_quick" / "cifar10_quick_train_test.prototxt", workdir)
    return {"net": '"cifar10_quick_train_test.prototxt"', "test_iter": 100,
            "test_interval": 500, "display": 100, "max_iter": ARGS.iterations,
            "solver_mode": "CPU"}


def settings(rcaffe, workdir, common):
    range_fields = {**common, **RULE, "base_lr": 0.001, "lr_policy": '"fixed"',
                    "random_seed": 1}
    del range_fields["max_iter"]
    bounds = range_test_bounds(rcaffe, workdir, "cifar10_quick", range_fields, *RANGE, 4)
    note = ""
    if bounds is None:
        # No reading: the paper's own CIFAR-10 bounds.
        bounds, note = (0.001, 0.006), " (no range-test reading: the paper's 0.001–0.006)"
    base_lr, max_lr = bounds
    cyclic = {**RULE, "base_lr": base_lr, "max_lr": max_lr, "stepsize": STEPSIZE}
    span = f"{base_lr:g}–{max_lr:g}{note}"
    return [
        Setting("zoo", "cifar10_quick", "zoo: 0.001, 0.0001 from 4000",
                {**RULE, "base_lr": 0.001, "lr_policy": '"multistep"', "gamma": 0.1,
                 "stepvalue": 4000}),
        Setting("triangular", "cifar10_quick", f"triangular {span}",
                {**cyclic, "lr_policy": '"triangular"'}, baseline="zoo"),
        Setting("triangular2", "cifar10_quick", f"triangular2 {span}",
                {**cyclic, "lr_policy": '"triangular2"'}, baseline="zoo"),
        Setting("exp_range", "cifar10_quick", f"exp_range {span}, gamma 0.99994",
                {**cyclic, "lr_policy": '"exp_range"', "gamma": 0.99994}, baseline="zoo"),
        Setting("decay", "cifar10_quick", f"decay {span}",
                {**cyclic, "lr_policy": '"decay"'}, baseline="zoo"),
    ]


if __name__ == "__main__":
    ARGS = arguments("table1_cifar10_quick", 5000)
    main("Table 1's pattern on cifar10_quick, Fashion-CIFAR",
         "The zoo's schedule against the paper's cyclic policies between the range test's "
         f"bounds (stepsize {STEPSIZE}); every run {ARGS.iterations} iterations, tests of all "
         "10,000 test images every 500.",
         prepare, settings, ARGS.seeds, ARGS.out, plots_by_method=True)
