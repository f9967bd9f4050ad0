//! Which nets a solver trains and tests, resolved the way upstream's `Solver::InitTrainNet` and
//! `Solver::InitTestNets` (src/caffe/solver.cpp) resolve them.
//!
//! Exactly one of `net`, `net_param`, `train_net`, `train_net_param` names the train net. Test
//! nets come from `test_net_param` entries, then `test_net` files, then, for each `test_iter`
//! left over, the generic `net_param`/`net`. File paths are opened as given, relative to the
//! working directory, as Caffe opens them.

use super::caffe::{NetParameter, NetState, Phase, SolverParameter};
use super::text::nested_field_line;
use super::{read_net, ProtoError};
use std::path::{Path, PathBuf};

/// A net ready to build: its parameters, with `state` already merged, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSource {
    pub param: NetParameter,
    /// "train_net file: lenet.prototxt", "net_param", … as upstream logs it.
    pub description: String,
    pub origin: NetOrigin,
}

/// Where a net is written: a file, and the message fields of it that hold the net (a solver's
/// `net_param`; none for a net file of its own). For errors that point at a line.
#[derive(Debug, Clone, PartialEq)]
pub struct NetOrigin {
    pub path: PathBuf,
    /// Field name and occurrence of each enclosing message, outermost first.
    pub blocks: Vec<(&'static str, usize)>,
}

impl NetOrigin {
    /// A net file of its own.
    pub fn file(path: &Path) -> Self {
        NetOrigin {
            path: path.to_path_buf(),
            blocks: Vec::new(),
        }
    }

    /// The line of the `type:` field of the `layer` named `name` whose type is `layer_type`, when
    /// the file (read again) writes it there. Found by name and type, not by position: an upgrade
    /// may have put layers first that the file does not have (an `Input` for `input:` fields).
    pub fn layer_type_line(&self, name: &str, layer_type: &str) -> Option<usize> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let holds = |line: usize, value: &str| {
            lines.get(line.wrapping_sub(1)).is_some_and(|text| {
                text.contains(&format!("\"{value}\"")) || text.contains(&format!("'{value}'"))
            })
        };
        let field_of = |index: usize, field: &str| {
            let mut blocks = self.blocks.clone();
            blocks.push(("layer", index));
            nested_field_line(&text, &blocks, field, 0)
        };
        (0..)
            .map(|index| (field_of(index, "name"), field_of(index, "type")))
            .take_while(|fields| *fields != (None, None))
            .find_map(|(name_line, type_line)| {
                let type_line = type_line?;
                (holds(name_line?, name) && holds(type_line, layer_type)).then_some(type_line)
            })
    }
}

/// The train net and the test nets of a solver, in upstream's order.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverNets {
    pub train: NetSource,
    pub tests: Vec<NetSource>,
}

/// Resolves the nets of `solver`, read from `solver_path` (named in errors).
pub fn resolve_solver_nets(
    solver: &SolverParameter,
    solver_path: &Path,
) -> Result<SolverNets, ProtoError> {
    let invalid = |message: String| ProtoError::Invalid {
        path: solver_path.to_path_buf(),
        message,
    };
    let from_file = |file: &str, description: &str| -> Result<_, ProtoError> {
        let param = read_net_relative(file, solver_path)?;
        let origin = NetOrigin::file(Path::new(file));
        Ok((param, format!("{description} file: {file}"), origin))
    };
    let inline = |param: &NetParameter, field: &'static str, index: usize| {
        let origin = NetOrigin {
            path: solver_path.to_path_buf(),
            blocks: vec![(field, index)],
        };
        (param.clone(), field.to_string(), origin)
    };

    let train_fields = [
        ("net", solver.net.is_some()),
        ("net_param", solver.net_param.is_some()),
        ("train_net", solver.train_net.is_some()),
        ("train_net_param", solver.train_net_param.is_some()),
    ];
    let given: Vec<&str> = train_fields
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    if given.len() != 1 {
        return Err(invalid(format!(
            "a solver must name exactly one train net with one of net, net_param, train_net, \
             train_net_param; found {}",
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(", ")
            }
        )));
    }
    let (param, description, origin) = if let Some(param) = &solver.train_net_param {
        inline(param, "train_net_param", 0)
    } else if let Some(file) = &solver.train_net {
        from_file(file, "train_net")?
    } else if let Some(param) = &solver.net_param {
        inline(param, "net_param", 0)
    } else {
        from_file(solver.net(), "net")?
    };
    let train = with_state(
        param,
        Phase::Train,
        solver.train_state.as_ref(),
        description,
        origin,
    );

    let explicit_tests = solver.test_net_param.len() + solver.test_net.len();
    let has_generic = solver.net.is_some() || solver.net_param.is_some();
    let test_iters = solver.test_iter.len();
    if test_iters < explicit_tests || (!has_generic && test_iters != explicit_tests) {
        return Err(invalid(format!(
            "test_iter must be given once for each test net: {test_iters} test_iter for \
             {explicit_tests} test_net/test_net_param"
        )));
    }
    if !solver.test_state.is_empty() && solver.test_state.len() != test_iters {
        return Err(invalid(format!(
            "test_state must be unspecified or given once per test net: {} test_state for {} \
             test nets",
            solver.test_state.len(),
            test_iters
        )));
    }
    if test_iters > 0 && solver.test_interval() <= 0 {
        return Err(invalid(format!(
            "test_interval must be positive when there are test nets (it is {})",
            solver.test_interval()
        )));
    }

    let mut sources = Vec::with_capacity(test_iters);
    for (index, param) in solver.test_net_param.iter().enumerate() {
        sources.push(inline(param, "test_net_param", index));
    }
    for file in &solver.test_net {
        sources.push(from_file(file, "test_net")?);
    }
    let generic_instances = test_iters - explicit_tests;
    if generic_instances > 0 {
        let generic = match &solver.net_param {
            Some(param) => inline(param, "net_param", 0),
            None => from_file(solver.net(), "net")?,
        };
        sources.extend(std::iter::repeat_n(generic, generic_instances));
    }
    let tests = sources
        .into_iter()
        .enumerate()
        .map(|(index, (param, description, origin))| {
            with_state(
                param,
                Phase::Test,
                solver.test_state.get(index),
                description,
                origin,
            )
        })
        .collect();
    Ok(SolverNets { train, tests })
}

/// Sets the net's state: the phase, overridden by the net's own state, overridden by the
/// solver's train_state/test_state (protobuf merge: set fields replace, stages append).
fn with_state(
    mut param: NetParameter,
    phase: Phase,
    solver_state: Option<&NetState>,
    description: String,
    origin: NetOrigin,
) -> NetSource {
    let mut state = NetState::default();
    state.set_phase(phase);
    for overriding in param.state.iter().chain(solver_state) {
        if overriding.phase.is_some() {
            state.phase = overriding.phase;
        }
        if overriding.level.is_some() {
            state.level = overriding.level;
        }
        state.stage.extend(overriding.stage.iter().cloned());
    }
    param.state = Some(state);
    NetSource {
        param,
        description,
        origin,
    }
}

/// Reads a net file named in a solver. Caffe opens it relative to the working directory; when
/// that fails but the file sits beside the solver, the error says so.
fn read_net_relative(file: &str, solver_path: &Path) -> Result<NetParameter, ProtoError> {
    let path = Path::new(file);
    match read_net(path) {
        Err(ProtoError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            // Zoo solvers name nets relative to Caffe's root: find the folder that would work.
            let root = solver_path
                .parent()
                .into_iter()
                .flat_map(Path::ancestors)
                .find(|folder| path.is_relative() && folder.join(path).exists());
            let hint = match root {
                Some(folder) => format!(
                    "; paths in a solver are relative to the working directory, as in Caffe: \
                     run from {}",
                    if folder.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        folder
                    }
                    .display()
                ),
                None => "; paths in a solver are relative to the working directory, as in Caffe"
                    .to_string(),
            };
            Err(ProtoError::Invalid {
                path: solver_path.to_path_buf(),
                message: format!("net file '{file}' not found{hint}"),
            })
        }
        other => other,
    }
}
