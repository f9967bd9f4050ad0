//! models/cifar10_clr/: the paper's CIFAR-10 solver files. Every one parses, passes the
//! solver's own checks (learning-rate policy, update rule, regularisation) and names a zoo net
//! that parses and filters into a train net; the settings are the paper's (table 2's three
//! chained triangular2 stages, exp_range's gamma, table 3's bounds per method), and each
//! cyclic file's stepsize is within the 2-10 epochs the paper recommends (but table 2's last
//! stage, whose one-epoch stepsize the train log warns about).

use std::path::{Path, PathBuf};

use rcaffe::lr_policy::{LrSchedule, LrState};
use rcaffe::net::filter::filter_net;
use rcaffe::proto::caffe::SolverParameter;
use rcaffe::proto::{read_solver, resolve_solver_nets};
use rcaffe::solver::guidance::{cycle_guidance, Epoch};
use rcaffe::solver::{Regularization, UpdateRule};

const MODELS: &str = "models/cifar10_clr";
/// Upstream's files, laid out as Caffe's source tree (where the solvers' net paths point).
const ZOO: &str = "../shared/caffe-zoo";

fn solver_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(MODELS)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "prototxt"))
        .collect();
    files.sort();
    files
}

fn solver(name: &str) -> SolverParameter {
    read_solver(&Path::new(MODELS).join(format!("{name}.prototxt"))).unwrap()
}

fn rate(param: &SolverParameter, iteration: u32) -> f32 {
    LrSchedule::new(param)
        .unwrap()
        .rate(iteration, &mut LrState::default())
}

#[test]
fn every_solver_parses_validates_and_names_a_zoo_net() {
    let files = solver_files();
    assert!(files.len() >= 15, "{files:?}");
    for file in &files {
        let mut param = read_solver(file).unwrap_or_else(|e| panic!("{e}"));
        let context = file.display();
        LrSchedule::new(&param).unwrap_or_else(|e| panic!("{context}: {e}"));
        UpdateRule::from_param(&param).unwrap_or_else(|e| panic!("{context}: {e}"));
        Regularization::from_param(&param).unwrap_or_else(|e| panic!("{context}: {e}"));
        let net = param.net().to_string();
        assert!(
            net.starts_with("examples/cifar10/") && Path::new(ZOO).join(&net).exists(),
            "{context}: net {net} is not a zoo net"
        );
        // Resolve as if run from the zoo's root.
        param.net = Some(Path::new(ZOO).join(&net).display().to_string());
        let nets = resolve_solver_nets(&param, file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nets.tests.len(), param.test_iter.len(), "{context}");
        let (train, _) = filter_net(&nets.train.param).unwrap();
        assert!(
            train.layer.iter().any(|l| l.r#type() == "Data"),
            "{context}: no Data layer in the train net"
        );
        assert!(
            param.max_iter() > 0 && param.test_interval() > 0,
            "{context}"
        );
    }
}

#[test]
fn table_2_stages_chain_one_into_the_next() {
    let stages: Vec<SolverParameter> = (1..=3)
        .map(|n| solver(&format!("triangular2_stage{n}")))
        .collect();
    assert_eq!(stages[0].start_lr_policy(), 0.0);
    assert_eq!(stages[2].max_iter(), 25000);
    for pair in stages.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        // The next stage starts its cycles where the previous stopped, resuming from the
        // snapshot the previous stage writes at its end.
        assert_eq!(after.start_lr_policy(), before.max_iter() as f32);
        assert_eq!(before.max_iter() % before.snapshot(), 0);
        assert_eq!(before.snapshot_prefix(), after.snapshot_prefix());
        assert!(after.base_lr() < before.base_lr() && after.max_lr < before.max_lr);
    }
    for stage in &stages {
        assert_eq!(stage.lr_policy(), "triangular2");
        let start = stage.start_lr_policy() as u32;
        let step = stage.stepsize() as u32;
        assert_eq!(rate(stage, start), stage.base_lr());
        assert_eq!(rate(stage, start + step), stage.max_lr.unwrap());
        // Each stage ends at a cycle's end.
        assert_eq!((stage.max_iter() as u32 - start) % (2 * step), 0);
    }
    assert_eq!(
        (stages[0].base_lr(), stages[0].stepsize()),
        (0.001, 2000),
        "table 2, row 1"
    );
}

#[test]
fn exp_range_and_decay_are_the_papers() {
    let exp_range = solver("exp_range");
    assert_eq!(exp_range.lr_policy(), "exp_range");
    assert_eq!(exp_range.gamma(), 0.99994);
    assert_eq!(
        (exp_range.base_lr(), exp_range.max_lr, exp_range.stepsize()),
        (0.001, Some(0.006), 2000)
    );
    let decay = solver("decay");
    assert_eq!(decay.lr_policy(), "decay");
    assert_eq!(rate(&decay, 0), decay.max_lr.unwrap());
    assert_eq!(rate(&decay, decay.stepsize() as u32), decay.base_lr());
    assert_eq!(rate(&decay, decay.max_iter() as u32), decay.base_lr());
}

#[test]
fn table_3_pairs_share_the_method_and_the_lower_bound() {
    let bounds = [
        ("nesterov", "Nesterov", 0.001, 0.006),
        ("adam", "Adam", 0.0005, 0.002),
        ("rmsprop", "RMSProp", 0.0001, 0.0003),
        ("adagrad", "AdaGrad", 0.003, 0.035),
        ("adadelta", "AdaDelta", 0.01, 0.1),
    ];
    for (short, kind, base_lr, max_lr) in bounds {
        let fixed = solver(&format!("{short}_fixed"));
        let cyclic = solver(&format!("{short}_triangular"));
        assert_eq!((fixed.r#type(), cyclic.r#type()), (kind, kind));
        assert_eq!(fixed.lr_policy(), "fixed");
        assert_eq!(cyclic.lr_policy(), "triangular");
        assert_eq!((cyclic.base_lr(), cyclic.max_lr), (base_lr, Some(max_lr)));
        assert_eq!(fixed.base_lr(), cyclic.base_lr());
        assert_eq!(
            (fixed.momentum(), fixed.weight_decay()),
            (cyclic.momentum(), cyclic.weight_decay()),
            "{short}: the pair differs only in its schedule"
        );
    }
}

#[test]
fn cyclic_solvers_keep_the_stepsize_within_two_to_ten_cifar_epochs() {
    let cifar = Epoch {
        source: "examples/cifar10/cifar10_train_lmdb".into(),
        images: 50_000,
        batch_size: 100,
        iter_size: 1,
    };
    // Table 2's last stage is the exception: the paper's stepsize there is 500, one epoch,
    // and the train log warns about it.
    for file in solver_files() {
        let param = read_solver(&file).unwrap();
        if file.ends_with("triangular2_stage3.prototxt") {
            let lines = cycle_guidance(&param, Some(&cifar));
            assert!(lines
                .iter()
                .any(|l| l.warning && l.text.contains("1.0 epochs")));
            continue;
        }
        let warnings: Vec<String> = cycle_guidance(&param, Some(&cifar))
            .into_iter()
            .filter(|line| line.warning)
            .map(|line| line.text)
            .collect();
        assert!(warnings.is_empty(), "{}: {warnings:?}", file.display());
    }
}
