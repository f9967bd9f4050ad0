#!/usr/bin/env python3
"""Runs one of the paper's experiments with rcaffe and writes its results: for each setting
(an update rule at its usual rate, or with a cyclic policy) and each seed, `rcaffe train` with a
solver file written from the setting, its log kept; then per setting the best and final test
accuracy (mean and spread over the seeds) and, for the cyclic settings, the iterations at which
each seed first reached the best accuracy of its baseline's run with the same seed.

Python 3 standard library only; `rcaffe` is `target/release/rcaffe` (built first if missing) or
$RCAFFE. Each experiment is a small module beside this one (`table3_lenet.py`, ...) that
describes its settings and calls `main`.

Outputs in the experiment's folder: `runs/<setting>_seed<N>.{prototxt,log}`, `results.csv`
(one row per run), `summary.md` (the table), `<method>.png` (test accuracy against iteration,
every seed of the baseline and the cyclic setting overlaid, through `rcaffe plot-log`).
"""

import argparse
import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setting:
    """One solver configuration: `fields` are written as `key: value` lines (strings quoted by
    the caller), with the net, seed, snapshot prefix and length added per run. A setting with a
    `baseline` is compared against that setting's runs of the same seed."""

    name: str
    method: str
    policy: str
    fields: dict
    baseline: str = None
    bounds_from_range_test: dict = field(default_factory=dict)


def rcaffe_binary():
    explicit = os.environ.get("RCAFFE")
    if explicit:
        return explicit
    binary = REPO / "target" / "release" / "rcaffe"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    return str(binary)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def solver_text(fields):
    lines = []
    for key, value in fields.items():
        values = value if isinstance(value, list) else [value]
        lines.extend(f"{key}: {v}" for v in values)
    return "\n".join(lines) + "\n"


TEST_LINE = re.compile(r"Iteration (\d+), Testing net \(#0\)")
ACCURACY_LINE = re.compile(r"Test net output #\d+: accuracy = ([0-9.eE+-]+|nan)")


def test_accuracy(log_text):
    """(iteration, accuracy) for every test of test net #0 in a Caffe-format log."""
    points, iteration = [], None
    for line in log_text.splitlines():
        match = TEST_LINE.search(line)
        if match:
            iteration = int(match.group(1))
            continue
        match = ACCURACY_LINE.search(line)
        if match and iteration is not None:
            points.append((iteration, float(match.group(1))))
            iteration = None
    return points


def run_training(rcaffe, workdir, run_name, fields):
    """Writes the solver, trains, returns the test accuracies and the wall time."""
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    solver = runs / f"{run_name}.prototxt"
    log = runs / f"{run_name}.log"
    text = solver_text(fields)
    finished = log.exists() and "Optimization Done" in log.read_text(errors="replace")
    if finished and solver.exists() and solver.read_text() == text:
        # The same run, finished before: reused.
        return test_accuracy(log.read_text(errors="replace")), None
    solver.write_text(text)
    started = time.time()
    with open(log, "w") as out:
        result = subprocess.run(
            [rcaffe, "train", "-solver", str(solver)],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLOG_logtostderr": "1"},
        )
    if result.returncode != 0:
        sys.exit(f"{run_name}: rcaffe train failed; see {log}")
    return test_accuracy(log.read_text(errors="replace")), time.time() - started


SUGGESTED = re.compile(r"Suggested (base_lr|max_lr) \([^)]*\): ([0-9.eE+-]+)")


def range_test_bounds(rcaffe, workdir, name, fields, min_lr, max_lr, epochs):
    """Runs `rcaffe lr-range` on the setting's solver; returns (base_lr, max_lr) as suggested,
    or None where the curve gave none."""
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    solver = runs / f"{name}_range.prototxt"
    text = solver_text(fields)
    prefix = runs / f"{name}_range"
    # The report, named by the test's span: a test of another span is run again.
    report = runs / f"{name}_range_{min_lr:g}_{max_lr:g}_{epochs:g}.txt"
    if not report.exists() or not solver.exists() or solver.read_text() != text:
        solver.write_text(text)
        result = subprocess.run(
            [rcaffe, "lr-range", "--solver", str(solver), "--min-lr", str(min_lr),
             "--max-lr", str(max_lr), "--epochs", str(epochs), "-o", str(prefix)],
            cwd=workdir, capture_output=True, text=True,
            env={**os.environ, "GLOG_minloglevel": "1"},
        )
        if result.returncode != 0:
            sys.exit(f"{name}: rcaffe lr-range failed:\n{result.stderr}")
        report.write_text(result.stdout)
    found = dict(SUGGESTED.findall(report.read_text()))
    if "base_lr" in found and "max_lr" in found:
        return float(found["base_lr"]), float(found["max_lr"])
    return None


def fashion_cifar(rcaffe, workdir):
    """Fashion-CIFAR in Caffe's CIFAR-10 layout in `workdir`: the batches made from the bundled
    Fashion-MNIST (`rcaffe mnist-to-cifar`), `cifar10_{train,test}_lmdb` and the training
    set's mean `fcifar_mean.binaryproto`, each made once."""
    batches = workdir / "fashion-cifar"
    if not (batches / "test_batch.bin").exists():
        subprocess.run([rcaffe, "mnist-to-cifar", str(REPO / "data" / "fashion-mnist"),
                        str(batches)], check=True, capture_output=True)
    if not (workdir / "cifar10_test_lmdb" / "data.mdb").exists():
        subprocess.run([rcaffe, "convert-cifar", str(batches), str(workdir)], check=True,
                       capture_output=True)
    if not (workdir / "fcifar_mean.binaryproto").exists():
        subprocess.run([rcaffe, "compute-image-mean", str(workdir / "cifar10_train_lmdb"),
                        str(workdir / "fcifar_mean.binaryproto")], check=True,
                       capture_output=True)


def mean_spread(values):
    if not values:
        return "—"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{100 * mean:.2f}%"
    return f"{100 * mean:.2f}% ± {100 * statistics.stdev(values):.2f} ({100 * min(values):.2f}–{100 * max(values):.2f})"


def main(title, description, prepare, settings, seeds, workdir, plots_by_method=True):
    """`prepare(rcaffe, workdir)` makes the data and returns the per-run fields every solver
    gets (net, test_iter, ...). `settings` may be a function of (rcaffe, workdir, common)
    when it needs range tests first."""
    rcaffe = rcaffe_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    common = prepare(rcaffe, workdir)
    if callable(settings):
        settings = settings(rcaffe, workdir, common)
    rows = []
    # Seed by seed, so that a run cut short has every setting at the first seeds.
    for seed in seeds:
        for setting in settings:
            run_name = f"{setting.name}_seed{seed}"
            fields = {**common, **setting.fields, "random_seed": seed,
                      "snapshot_prefix": f'"runs/{run_name}"'}
            accuracy, seconds = run_training(rcaffe, workdir, run_name, fields)
            if not accuracy:
                sys.exit(f"{run_name}: no test results in its log")
            best = max(a for _, a in accuracy)
            best_at = next(i for i, a in accuracy if a == best)
            rows.append({"setting": setting.name, "method": setting.method,
                         "policy": setting.policy, "seed": seed,
                         "iterations": accuracy[-1][0], "best_accuracy": best,
                         "best_at": best_at, "final_accuracy": accuracy[-1][1],
                         "accuracy": accuracy, "seconds": seconds})
            print(f"{run_name}: best {100 * best:.2f}% at {best_at}, final "
                  f"{100 * accuracy[-1][1]:.2f}%", flush=True)
    by_run = {(r["setting"], r["seed"]): r for r in rows}
    for r in rows:
        setting = next(s for s in settings if s.name == r["setting"])
        target = by_run.get((setting.baseline, r["seed"])) if setting.baseline else r
        reach = next((i for i, a in r["accuracy"] if a >= target["best_accuracy"]), None)
        r["iterations_to_baseline_best"] = reach

    columns = ["setting", "method", "policy", "seed", "iterations", "best_accuracy", "best_at",
               "final_accuracy", "iterations_to_baseline_best"]
    with open(workdir / "results.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    lines = [f"# {title}", "", description, "",
             f"CPU: {cpu_name()}, {os.cpu_count()} threads; seeds {', '.join(map(str, seeds))}; "
             f"{time.strftime('%Y-%m-%d')}; wall time {(time.time() - started) / 60:.0f} min "
             "(runs already in the folder are reused, not rerun).", "",
             "| setting | iterations | best accuracy | final accuracy | iterations to the "
             "baseline's best (per seed) |",
             "| --- | ---: | --- | --- | --- |"]
    for setting in settings:
        runs = [r for r in rows if r["setting"] == setting.name]
        reaches = [r["iterations_to_baseline_best"] for r in runs]
        reach_text = ", ".join("not reached" if x is None else str(x) for x in reaches)
        lines.append(
            f"| {setting.name} ({setting.policy}) | {runs[0]['iterations']} | "
            f"{mean_spread([r['best_accuracy'] for r in runs])} | "
            f"{mean_spread([r['final_accuracy'] for r in runs])} | {reach_text} |")
    (workdir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    if plots_by_method:
        for method in dict.fromkeys(s.method for s in settings):
            logs, labels = [], []
            for setting in (s for s in settings if s.method == method):
                for seed in seeds:
                    logs.append(str(workdir / "runs" / f"{setting.name}_seed{seed}.log"))
                    labels += ["--label", f"{setting.policy} seed {seed}"]
            subprocess.run([rcaffe, "plot-log", "-o", str(workdir / f"{method}.png"),
                            "--title", f"{title}: {method}", *labels, *logs], check=True,
                           capture_output=True)


def arguments(default_out, default_iterations, more=None):
    """The options every experiment takes (seeds, run length, output folder), and those
    `more(parser)` adds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iterations", type=int, default=default_iterations,
                        help="length of every run (default %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "paper-runs" / default_out)
    if more:
        more(parser)
    return parser.parse_args()
