"""The solvers: building them by rule, stepping, solving, snapshots and restores, and the
train net seen from Python being the solver's own (after upstream's test_solver.py)."""

import gc
import os
import signal

import numpy as np
import pytest

import caffe
from conftest import NUM_OUTPUT


def fill_labels(net, seed):
    labels = net.blobs["label"].data
    labels[...] = np.random.default_rng(seed).integers(NUM_OUTPUT, size=labels.shape)


@pytest.fixture
def solver(solver_file):
    solver = caffe.SGDSolver(str(solver_file))
    fill_labels(solver.net, 0)
    fill_labels(solver.test_nets[0], 1)
    return solver


def test_get_solver_picks_the_rule_of_the_file(solver_file):
    solver = caffe.get_solver(str(solver_file))
    assert isinstance(solver, caffe.SGDSolver)
    assert solver.type == "SGD"


@pytest.mark.parametrize(
    "cls, rule, extra",
    [
        (caffe.NesterovSolver, "Nesterov", ""),
        (caffe.AdaGradSolver, "AdaGrad", ""),
        (caffe.RMSPropSolver, "RMSProp", "rms_decay: 0.98"),
        (caffe.AdaDeltaSolver, "AdaDelta", "momentum: 0.95 delta: 1e-6"),
        (caffe.AdamSolver, "Adam", "momentum: 0.9 momentum2: 0.999"),
    ],
)
def test_each_rule_class_trains_with_its_rule(tmp_path, net_file, cls, rule, extra):
    path = tmp_path / f"{rule}.prototxt"
    path.write_text(
        f"net: '{net_file}' base_lr: 0.01 lr_policy: 'fixed' max_iter: 5 display: 0 {extra}\n"
        "snapshot_after_train: false\n"
    )
    solver = cls(str(path))
    assert solver.type == rule
    fill_labels(solver.net, 0)
    before = solver.net.params["ip"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2
    assert not np.array_equal(before, solver.net.params["ip"][0].data)


def test_solve(solver):
    assert solver.iter == 0
    solver.solve()
    assert solver.iter == 100


def test_steps_on_data_written_from_python_lower_the_loss(tmp_path):
    # Constant fillers fill once: what Python writes into the blobs stays, so the solver
    # trains on it (three separable classes of 4-D points).
    net_file = tmp_path / "separable.prototxt"
    net_file.write_text("""name: 'separable'
layer { name: 'data' type: 'DummyData' top: 'data' top: 'label'
  dummy_data_param { shape { dim: 12 dim: 4 } shape { dim: 12 }
    data_filler { type: 'constant' } data_filler { type: 'constant' } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.1 } } }
layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }
""")
    solver_file = tmp_path / "separable_solver.prototxt"
    solver_file.write_text(
        f"net: '{net_file}' base_lr: 0.5 lr_policy: 'fixed' momentum: 0.9 max_iter: 100\n"
        "display: 0 random_seed: 3 snapshot_after_train: false\n"
    )
    solver = caffe.SGDSolver(str(solver_file))
    net = solver.net
    labels = np.arange(12) % 3
    rng = np.random.default_rng(5)
    net.blobs["data"].data[...] = np.eye(4)[labels] * 3 + rng.normal(0, 0.1, (12, 4))
    net.blobs["label"].data[...] = labels
    first = float(net.forward()["loss"])
    assert first == pytest.approx(np.log(3), abs=0.3)
    solver.step(30)
    assert solver.iter == 30
    # The net from Python is the solver's own: its loss after training is far lower.
    assert float(net.forward()["loss"]) < first / 10
    assert (net.blobs["ip"].data.argmax(1) == labels).all()
    assert solver.net is net


def test_python_sees_the_solvers_weights_change(solver):
    weights = solver.net.params["conv"][0].data
    before = weights.copy()
    solver.step(1)
    # The array taken before the step is a view of the solver's own weights.
    assert not np.array_equal(before, weights)
    np.testing.assert_array_equal(weights, solver.net.params["conv"][0].data)


def test_apply_update_is_sgd_on_the_current_gradients(tmp_path, net_file):
    path = tmp_path / "plain.prototxt"
    path.write_text(
        f"net: '{net_file}' base_lr: 0.1 lr_policy: 'fixed' max_iter: 10 display: 0\n"
        "snapshot_after_train: false\n"
    )
    solver = caffe.SGDSolver(str(path))
    fill_labels(solver.net, 0)
    net = solver.net
    net.clear_param_diffs()
    net.forward()
    net.backward()
    weights = net.params["ip"][0].data.copy()
    grad = net.params["ip"][0].diff.copy()
    solver.apply_update()
    np.testing.assert_allclose(net.params["ip"][0].data, weights - 0.1 * grad, rtol=1e-5, atol=1e-6)


def test_snapshot_and_restore(solver, tmp_path):
    solver.step(5)
    model, state = solver.snapshot()
    assert model == str(tmp_path / "model_iter_5.caffemodel")
    assert state == str(tmp_path / "model_iter_5.solverstate")
    assert os.path.isfile(model) and os.path.isfile(state)
    weights = solver.net.params["ip"][0].data.copy()
    solver.step(5)
    assert solver.iter == 10
    assert not np.array_equal(weights, solver.net.params["ip"][0].data)
    solver.restore(state)
    assert solver.iter == 5
    np.testing.assert_array_equal(weights, solver.net.params["ip"][0].data)


def test_solve_resumes_from_a_state(solver, solver_file, tmp_path):
    solver.step(3)
    _, state = solver.snapshot()
    resumed = caffe.SGDSolver(str(solver_file))
    fill_labels(resumed.net, 0)
    resumed.solve(state)
    assert resumed.iter == 100


def test_nets_survive_the_solver(solver):
    nets = [solver.net] + list(solver.test_nets)
    assert len(nets) == 2
    del solver
    gc.collect()
    total = 0.0
    for net in nets:
        for blobs in net.params.values():
            for p in blobs:
                total += p.data.sum() + p.diff.sum()
        for b in net.blobs.values():
            total += b.data.sum() + b.diff.sum()
    assert np.isfinite(total)


def test_solver_errors_are_python_exceptions(tmp_path):
    with pytest.raises(RuntimeError, match="missing.prototxt"):
        caffe.SGDSolver(str(tmp_path / "missing.prototxt"))
    bad = tmp_path / "bad.prototxt"
    bad.write_text("net: 'nowhere.prototxt' base_lr: 0.1 lr_policy: 'fixed'\n")
    with pytest.raises(RuntimeError, match="nowhere.prototxt"):
        caffe.get_solver(str(bad))


def test_ctrl_c_stops_training_and_raises(solver_file, tmp_path):
    # The engine holds the GIL while it trains, so the signal comes from another process.
    import subprocess

    path = tmp_path / "long.prototxt"
    path.write_text(solver_file.read_text().replace("max_iter: 100", "max_iter: 100000000"))
    solver = caffe.SGDSolver(str(path))
    fill_labels(solver.net, 0)
    sender = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -INT {os.getpid()}"])
    try:
        with pytest.raises(KeyboardInterrupt):
            solver.solve()
    finally:
        sender.wait()
    assert 0 < solver.iter < 100000000
    # The solver and its net are usable afterwards.
    model, _ = solver.snapshot()
    assert os.path.isfile(model)
    assert np.isfinite(solver.net.forward()["loss"])


def test_a_signal_handler_using_a_busy_solver_gets_an_error(solver_file):
    import subprocess

    path = solver_file.with_name("long.prototxt")
    path.write_text(solver_file.read_text().replace("max_iter: 100", "max_iter: 100000000"))
    solver = caffe.SGDSolver(str(path))
    fill_labels(solver.net, 0)
    errors = []

    def handler(signum, frame):
        # Runs between two iterations, while the solver is inside solve().
        try:
            solver.net.blobs["data"].data
        except RuntimeError as error:
            errors.append(str(error))

    previous = signal.signal(signal.SIGUSR1, handler)
    sender = subprocess.Popen(
        ["sh", "-c", f"sleep 0.5; kill -USR1 {os.getpid()}; sleep 0.2; kill -INT {os.getpid()}"]
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            solver.solve()
    finally:
        sender.wait()
        signal.signal(signal.SIGUSR1, previous)
    assert len(errors) == 1 and "busy" in errors[0]


def test_test_nets_share_the_train_nets_weights(solver):
    test = solver.test_nets[0]
    assert np.shares_memory(test.params["ip"][0].data, solver.net.params["ip"][0].data)
    solver.step(3)  # no test pass among these iterations
    out = test.forward(blobs=["conv"])
    # The test net's forward used the weights as they are now.
    weights, bias = (p.data for p in solver.net.params["ip"])
    expected = out["conv"].reshape(5, -1) @ weights.T + bias
    np.testing.assert_allclose(test.blobs["ip"].data, expected, rtol=1e-4, atol=1e-3)


def test_a_net_sharing_the_solvers_weights_follows_training(solver, net_file):
    deploy = caffe.Net(str(net_file), caffe.TEST)
    deploy.share_with(solver.net)
    solver.step(2)
    for name in ["conv", "ip"]:
        for mine, theirs in zip(deploy.params[name], solver.net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    # Writing the deploy net's weights changes what the solver trains.
    deploy.params["ip"][1].data[...] = 3.0
    assert (solver.net.params["ip"][1].data == 3.0).all()


def test_a_solvers_test_net_cannot_share_another_nets_weights(solver, net_file):
    other = caffe.Net(str(net_file), caffe.TEST)
    with pytest.raises(ValueError, match="share with solver.net instead"):
        solver.test_nets[0].share_with(other)
    with pytest.raises(ValueError, match="share with solver.net instead"):
        other.share_with(solver.test_nets[0])
