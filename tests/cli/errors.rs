//! The `rcaffe` binary on what goes wrong around it: output into a closed pipe, files that are
//! missing or of the wrong kind, a misspelt layer type, a blob too large for memory. Each error
//! is one line that names the place and says everything once.

use crate::common::{rcaffe_command, rcaffe_in, stderr, stdout, TINY_SOLVER};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Output, Stdio};

use crate::UPSTREAM;

/// The message of `rcaffe: error: MESSAGE`, checked to be a failure that says nothing twice: no
/// part of it between ": " separators appears again (as when an error prints its cause's text
/// and the cause is then printed again).
fn error_message(output: &Output) -> String {
    let log = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let message = log
        .split("rcaffe: error: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no error line: {log}"))
        .trim_end()
        .to_string();
    let parts: Vec<&str> = message.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "'{part}' is said twice: {message}"
        );
    }
    message
}

/// A pipe whose reading end is already closed, as `| head -1` leaves it once `head` is done.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// `TINY_SOLVER` in `folder` as solver.prototxt, with snapshots named tiny_iter_N.
fn write_tiny_solver(folder: &Path) {
    let solver = TINY_SOLVER.replace("snapshot_after_train: false", "snapshot_prefix: \"tiny\"");
    std::fs::write(folder.join("solver.prototxt"), solver).unwrap();
}

#[test]
fn output_into_a_closed_pipe_ends_the_process_as_sigpipe_does() {
    // stdout: a report printed into `| head`.
    let model = format!("{UPSTREAM}/lenet/init.caffemodel");
    let output = rcaffe_command(&["inspect", &model])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {log}",
        output.status
    );

    // stderr: the log of a training run, as `rcaffe train ... 2>&1 | head`.
    let folder = tempfile::tempdir().unwrap();
    write_tiny_solver(folder.path());
    let status = rcaffe_command(&["train", "-solver", "solver.prototxt"])
        .current_dir(folder.path())
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
}

#[test]
fn a_missing_file_is_named_once_with_what_was_expected_there() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    write_tiny_solver(dir);
    let solver_tail = "base_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 1\n";
    std::fs::write(
        dir.join("lost_net.solver.prototxt"),
        format!("net: \"no_net.prototxt\"\n{solver_tail}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("data.prototxt"),
        "layer { name: \"data\" type: \"Data\" top: \"x\" \
         data_param { source: \"no_lmdb\" batch_size: 2 backend: LMDB } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lost_lmdb.solver.prototxt"),
        format!("net: \"data.prototxt\"\n{solver_tail}"),
    )
    .unwrap();
    let cases: [(&[&str], &str, &str); 11] = [
        (
            &["train", "-solver", "no_solver.prototxt"],
            "no_solver.prototxt",
            "solver prototxt",
        ),
        (
            &["train", "-solver", "lost_net.solver.prototxt"],
            "no_net.prototxt",
            "net file",
        ),
        (
            &["train", "-solver", "lost_lmdb.solver.prototxt"],
            "no_lmdb",
            "LMDB",
        ),
        (
            &[
                "train",
                "-solver",
                "solver.prototxt",
                "-weights",
                "no.caffemodel",
            ],
            "no.caffemodel",
            "model's weights",
        ),
        (
            &[
                "train",
                "-solver",
                "solver.prototxt",
                "-snapshot",
                "no.solverstate",
            ],
            "no.solverstate",
            "solver state",
        ),
        (
            &[
                "test",
                "-model",
                "no_net.prototxt",
                "-weights",
                "w.caffemodel",
            ],
            "no_net.prototxt",
            "net prototxt",
        ),
        (
            &["upgrade-net", "no_net.prototxt", "out.prototxt"],
            "no_net.prototxt",
            "net prototxt",
        ),
        (
            &["inspect", "no_model.caffemodel"],
            "no_model.caffemodel",
            "file to inspect",
        ),
        (
            &["convert-mnist", "no_images", "no_labels", "out_lmdb"],
            "no_images",
            "MNIST images",
        ),
        (
            &["convert-imageset", "images", "no_list.txt", "out_lmdb"],
            "no_list.txt",
            "image list",
        ),
        (&["compute-image-mean", "no_lmdb"], "no_lmdb", "LMDB"),
    ];
    for (args, path, expected) in cases {
        let message = error_message(&rcaffe_in(dir, args));
        assert!(
            message.contains(path) && message.contains(expected),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn a_file_of_the_wrong_kind_is_named_with_the_flag_that_takes_it() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    write_tiny_solver(dir);
    let output = rcaffe_in(
        dir,
        &["train", "-solver", "solver.prototxt", "-max_iter", "2"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let (model, state) = ("tiny_iter_2.caffemodel", "tiny_iter_2.solverstate");
    // The contents decide, not the name.
    std::fs::copy(dir.join(state), dir.join("misnamed.caffemodel")).unwrap();
    std::fs::write(
        dir.join("net.prototxt"),
        "name: \"n\"\nlayer { name: \"x\" type: \"Input\" top: \"x\" \
         input_param { shape { dim: 1 } } }\n",
    )
    .unwrap();

    let model_is = "is a model's weights (.caffemodel), not";
    let state_is = "is a solver state (.solverstate), not";
    let to_weights = ": start from it with -weights";
    let to_snapshot = ": resume from it with -snapshot";
    let cases: [(&[&str], String); 9] = [
        (
            &["train", "-solver", "solver.prototxt", "-weights", state],
            format!("{state} {state_is} a model's weights (.caffemodel){to_snapshot}"),
        ),
        (
            &[
                "train",
                "-solver",
                "solver.prototxt",
                "-weights",
                "misnamed.caffemodel",
            ],
            format!("misnamed.caffemodel {state_is} a model's weights (.caffemodel){to_snapshot}"),
        ),
        (
            &["train", "-solver", "solver.prototxt", "-snapshot", model],
            format!("{model} {model_is} a solver state (.solverstate){to_weights}"),
        ),
        (
            &["upgrade-net", model, "out.prototxt"],
            format!("{model} {model_is} a net prototxt{to_weights}"),
        ),
        (
            &["upgrade-solver", state, "out.prototxt"],
            format!("{state} {state_is} a solver prototxt{to_snapshot}"),
        ),
        (
            &["test", "-model", model, "-weights", model],
            format!("{model} {model_is} a net prototxt{to_weights}"),
        ),
        (
            &["train", "-solver", model],
            format!("{model} {model_is} a solver prototxt{to_weights}"),
        ),
        (
            &["train", "-solver", "net.prototxt"],
            "net.prototxt is a net prototxt, not a solver prototxt: give it to -model, or name \
             it in a solver's net field"
                .to_string(),
        ),
        (
            &[
                "test",
                "-model",
                "solver.prototxt",
                "-weights",
                "w.caffemodel",
            ],
            "solver.prototxt is a solver prototxt, not a net prototxt: train from it with -solver"
                .to_string(),
        ),
    ];
    for (args, want) in cases {
        let message = error_message(&rcaffe_in(dir, args));
        assert_eq!(message, want, "{args:?}");
    }
    assert!(!dir.join("out.prototxt").exists());

    // inspect goes by the contents too.
    let output = rcaffe_in(dir, &["inspect", "misnamed.caffemodel"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("iteration 2"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_misspelt_layer_type_is_placed_at_its_line_with_the_closest_type() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    let layers = "  layer {\n    name: \"in\" type: \"Input\" top: \"x\"\n    \
                  input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } }\n  }\n  layer {\n    \
                  name: \"pool\"\n    type: \"Poolling\"\n    bottom: \"x\" top: \"y\"\n  }\n";
    // The type is on line 8 of the net file, line 12 of a solver that holds the net inline.
    std::fs::write(dir.join("net.prototxt"), format!("name: \"n\"\n{layers}")).unwrap();
    let solver_tail = "base_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 1\n";
    std::fs::write(
        dir.join("solver.prototxt"),
        format!("net: \"net.prototxt\"\n{solver_tail}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("inline.prototxt"),
        format!("{solver_tail}net_param {{\n  name: \"n\"\n{layers}}}\n"),
    )
    .unwrap();
    // Top-level input fields: the upgrade puts an Input layer first, which the file does not
    // have; the type is on line 5.
    std::fs::write(
        dir.join("input_fields.prototxt"),
        "name: \"n\"\ninput: \"x\"\ninput_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n\
         layer {\n  name: \"pool\" type: \"Poolling\"\n  bottom: \"x\" top: \"y\"\n}\n",
    )
    .unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["time", "-model", "input_fields.prototxt"],
            "input_fields.prototxt:5: ",
        ),
        (
            &["test", "-model", "net.prototxt", "-weights", "w.caffemodel"],
            "net.prototxt:8: ",
        ),
        (&["time", "-model", "net.prototxt"], "net.prototxt:8: "),
        (&["train", "-solver", "solver.prototxt"], "net.prototxt:8: "),
        (
            &["train", "-solver", "inline.prototxt"],
            "inline.prototxt:12: ",
        ),
    ];
    for (args, place) in cases {
        let message = error_message(&rcaffe_in(dir, args));
        assert!(message.starts_with(place), "{args:?}: {message}");
        assert!(
            message.contains("layer 'pool' (type Poolling): unknown layer type \"Poolling\"; did you mean 'Pooling'?"),
            "{args:?}: {message}"
        );
        assert_eq!(message.matches("SoftmaxWithLoss").count(), 1, "{message}");
    }
}

#[test]
fn a_blob_too_large_for_memory_is_an_error_naming_layer_blob_and_bytes() {
    let folder = tempfile::tempdir().unwrap();
    // 2e9 values: within a blob's limit of 2^31 - 1, and 8 GB a buffer, twice the 4 GiB of
    // address space the process may have.
    std::fs::write(
        folder.path().join("huge.prototxt"),
        "name: \"huge\"\nlayer { name: \"input\" type: \"Input\" top: \"data\" \
         input_param { shape { dim: 2 dim: 1000 dim: 1000 dim: 1000 } } }\n",
    )
    .unwrap();
    let mut command = rcaffe_command(&[
        "test",
        "-model",
        "huge.prototxt",
        "-weights",
        "w.caffemodel",
    ]);
    command.current_dir(folder.path());
    // SAFETY: setrlimit is async-signal-safe, and it limits only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let message = error_message(&command.output().unwrap());
    for named in ["layer 'input'", "blob 'data'", "8000000000 bytes"] {
        assert!(message.contains(named), "{named}: {message}");
    }
}
