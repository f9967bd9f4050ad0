//! The learning-rate policies against the golden table computed by upstream Caffe's C++ (and the
//! paper's appendix code), plus properties of the cyclical policies and the validation errors.

use proptest::prelude::*;
use rcaffe::lr_policy::{LrPolicyError, LrSchedule, LrState};
use rcaffe::proto::caffe::SolverParameter;
use std::collections::BTreeMap;

const GOLDEN: &str = "../shared/reference/lr_policies.csv";

fn solver(policy: &str) -> SolverParameter {
    SolverParameter {
        lr_policy: Some(policy.to_owned()),
        base_lr: Some(0.01),
        ..Default::default()
    }
}

fn cyclic(policy: &str, base_lr: f32, max_lr: f32, stepsize: i32) -> SolverParameter {
    SolverParameter {
        base_lr: Some(base_lr),
        max_lr: Some(max_lr),
        stepsize: Some(stepsize),
        ..solver(policy)
    }
}

fn schedule(param: &SolverParameter) -> LrSchedule {
    LrSchedule::new(param).expect("a valid solver")
}

fn error(param: &SolverParameter) -> LrPolicyError {
    LrSchedule::new(param).expect_err("an invalid solver")
}

/// One golden configuration: its solver, and the expected bits at the iterations listed.
struct Case {
    config: String,
    solver: SolverParameter,
    expected: BTreeMap<u32, u32>,
}

/// The golden table's configurations, in order, each with its rows.
fn golden_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| panic!("{GOLDEN}: {e}"));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("policy,base_lr,max_lr,gamma,power,start_lr_policy,stepsize,max_iter,stepvalue,iter,lr_bits,lr")
    );
    let mut cases: Vec<Case> = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 12, "{line}");
        let config = fields[..9].join(",");
        let iter: u32 = fields[9].parse().unwrap();
        let bits = u32::from_str_radix(fields[10].trim_start_matches("0x"), 16).unwrap();
        if cases.last().is_none_or(|case| case.config != config) {
            let float = |i: usize| -> f32 { fields[i].parse().unwrap() };
            let int = |i: usize| -> i32 { fields[i].parse().unwrap() };
            let solver = SolverParameter {
                lr_policy: Some(fields[0].to_owned()),
                base_lr: Some(float(1)),
                max_lr: Some(float(2)),
                gamma: Some(float(3)),
                power: Some(float(4)),
                start_lr_policy: Some(float(5)),
                stepsize: Some(int(6)),
                max_iter: Some(int(7)),
                stepvalue: fields[8]
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect(),
                ..Default::default()
            };
            cases.push(Case {
                config,
                solver,
                expected: BTreeMap::new(),
            });
        }
        let case = cases.last_mut().unwrap();
        assert!(case.expected.insert(iter, bits).is_none(), "{line}");
    }
    cases
}

#[test]
fn every_golden_rate_matches_bit_for_bit() {
    let cases = golden_cases();
    let rows: usize = cases.iter().map(|case| case.expected.len()).sum();
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for case in &cases {
        let schedule = schedule(&case.solver);
        let last = *case.expected.keys().next_back().unwrap();
        // Every iteration from 0, as the golden table was made: multistep's step is carried.
        for (iter, rate) in (0..=last).zip(schedule.rates()) {
            if let Some(&bits) = case.expected.get(&iter) {
                compared += 1;
                if rate.to_bits() != bits {
                    mismatches.push(format!(
                        "{} iter {iter}: got {:#010x} ({rate}), want {bits:#010x} ({})",
                        case.config,
                        rate.to_bits(),
                        f32::from_bits(bits)
                    ));
                }
            }
        }
    }
    assert_eq!(compared, rows, "every row compared");
    assert!(rows > 3000, "{GOLDEN} has only {rows} rows");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} rates differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // All eleven policies are covered.
    let policies: std::collections::BTreeSet<&str> =
        cases.iter().map(|c| c.solver.lr_policy()).collect();
    assert_eq!(policies.len(), rcaffe::lr_policy::POLICY_NAMES.len());
}

#[test]
fn step_records_its_step_and_multistep_resumes_from_a_restored_one() {
    let step = schedule(&SolverParameter {
        stepsize: Some(100),
        gamma: Some(0.1),
        ..solver("step")
    });
    let mut state = LrState::default();
    step.rate(250, &mut state);
    assert_eq!(state.current_step, 2);

    let multistep = schedule(&SolverParameter {
        gamma: Some(0.5),
        stepvalue: vec![10, 20, 30],
        ..solver("multistep")
    });
    // A run restored at iteration 25 with two steps passed continues as an unbroken run does.
    let unbroken: Vec<f32> = multistep.rates().take(40).collect();
    let mut restored = LrState { current_step: 2 };
    for (iter, &expected) in unbroken.iter().enumerate().skip(25) {
        assert_eq!(
            multistep.rate(iter as u32, &mut restored),
            expected,
            "{iter}"
        );
    }
    assert_eq!(restored.current_step, 3);
    assert_eq!(unbroken[39], 0.01 * 0.125);
}

#[test]
fn a_fractional_start_is_truncated_after_subtracting() {
    // iter - 100.5 truncates toward zero: iterations 100 and 101 both count as 0, 102 as 1.
    let triangular = schedule(&SolverParameter {
        start_lr_policy: Some(100.5),
        ..cyclic("triangular", 0.001, 0.006, 10)
    });
    let rates: Vec<f32> = triangular.rates().take(103).collect();
    assert_eq!(rates[100], 0.001);
    assert_eq!(rates[101], 0.001);
    assert!(rates[102] > 0.001);
}

proptest! {
    #[test]
    fn triangular_stays_in_bounds_and_returns_to_base_lr(
        base_lr in 1e-6f32..1.0,
        factor in 1.0f32..20.0,
        stepsize in 1i32..200,
        start in 0u32..300,
    ) {
        let max_lr = base_lr * factor;
        let schedule = schedule(&SolverParameter {
            start_lr_policy: Some(start as f32),
            ..cyclic("triangular", base_lr, max_lr, stepsize)
        });
        // The paper's code rounds max_lr - base_lr to float, then adds it back to base_lr in
        // double: when that subtraction rounds up, the peak lands one ulp above max_lr.
        let ceiling = f32::from_bits(max_lr.to_bits() + 1);
        let period = 2 * stepsize as u32;
        for (iter, rate) in schedule.rates().enumerate().take((start + 5 * period) as usize) {
            prop_assert!((base_lr..=ceiling).contains(&rate), "iter {}: {}", iter, rate);
            let iter = iter as u32;
            if iter <= start || (iter - start).is_multiple_of(period) {
                prop_assert_eq!(rate, base_lr, "iter {}", iter);
            }
        }
    }

    #[test]
    fn triangular2_halves_the_amplitude_each_cycle(
        base_lr in 1e-6f32..1.0,
        factor in 2.0f32..20.0,
        stepsize in 1i32..100,
    ) {
        let max_lr = base_lr * factor;
        let schedule = schedule(&cyclic("triangular2", base_lr, max_lr, stepsize));
        let rates: Vec<f32> = schedule.rates().take(12 * stepsize as usize).collect();
        // The peaks sit mid-cycle, at stepsize, 3·stepsize, 5·stepsize, …
        let amplitude = |cycle: usize| {
            f64::from(rates[(2 * cycle + 1) * stepsize as usize]) - f64::from(base_lr)
        };
        let first = amplitude(0);
        prop_assert!((first - f64::from(max_lr - base_lr)).abs() <= f64::from(max_lr) * 1e-6);
        for cycle in 1..6 {
            let expected = first / f64::from(1u32 << cycle);
            prop_assert!(
                (amplitude(cycle) - expected).abs() <= f64::from(max_lr) * 1e-6,
                "cycle {}: {} vs {}", cycle, amplitude(cycle), expected
            );
        }
    }

    #[test]
    fn exp_range_starts_each_cycle_at_exps_rate(
        base_lr in 1e-6f32..1.0,
        factor in 1.0f32..20.0,
        gamma in 0.99f32..1.0,
        stepsize in 1i32..500,
    ) {
        let exp_range = schedule(&SolverParameter {
            gamma: Some(gamma),
            ..cyclic("exp_range", base_lr, base_lr * factor, stepsize)
        });
        let exp = schedule(&SolverParameter {
            base_lr: Some(base_lr),
            gamma: Some(gamma),
            ..solver("exp")
        });
        let mut state = LrState::default();
        for cycle in 0..6u32 {
            let iter = cycle * 2 * stepsize as u32;
            prop_assert_eq!(
                exp_range.rate(iter, &mut state).to_bits(),
                exp.rate(iter, &mut state).to_bits(),
                "iter {}", iter
            );
        }
    }

    #[test]
    fn decay_falls_monotonically_to_base_lr(
        base_lr in 1e-6f32..1.0,
        factor in 1.0f32..20.0,
        stepsize in 1i32..500,
        start in 0u32..100,
    ) {
        let max_lr = base_lr * factor;
        let schedule = schedule(&SolverParameter {
            start_lr_policy: Some(start as f32),
            ..cyclic("decay", base_lr, max_lr, stepsize)
        });
        let end = start + stepsize as u32;
        let rates: Vec<f32> = schedule.rates().take(end as usize + 50).collect();
        prop_assert_eq!(rates[0], max_lr);
        prop_assert_eq!(rates[start as usize], max_lr);
        for pair in rates.windows(2) {
            prop_assert!(pair[1] <= pair[0], "{} then {}", pair[0], pair[1]);
        }
        prop_assert!(rates[end as usize..].iter().all(|&rate| rate == base_lr));
    }
}

#[test]
fn an_unknown_policy_lists_the_valid_ones() {
    let e = error(&solver("cosine"));
    assert_eq!(
        e,
        LrPolicyError::UnknownPolicy {
            name: "cosine".into()
        }
    );
    let message = e.to_string();
    assert!(message.contains("\"cosine\""), "{message}");
    for name in rcaffe::lr_policy::POLICY_NAMES {
        assert!(message.contains(name), "{message}");
    }
    // No lr_policy at all is an unknown (empty) one, as in Caffe.
    let none = SolverParameter::default();
    assert!(matches!(error(&none), LrPolicyError::UnknownPolicy { name } if name.is_empty()));
}

#[test]
fn cyclic_policies_need_a_stepsize_and_a_max_lr_above_base_lr() {
    for policy in ["triangular", "triangular2", "exp_range", "decay"] {
        let good = cyclic(policy, 0.001, 0.006, 2000);
        assert!(LrSchedule::new(&good).is_ok(), "{policy}");
        for stepsize in [None, Some(0), Some(-5)] {
            let e = error(&SolverParameter {
                stepsize,
                ..good.clone()
            });
            assert_eq!(
                e,
                LrPolicyError::StepsizeNotPositive {
                    policy,
                    stepsize: stepsize.unwrap_or(0)
                }
            );
        }
        let e = error(&SolverParameter {
            max_lr: None,
            ..good.clone()
        });
        assert_eq!(e, LrPolicyError::MissingMaxLr { policy });
        assert!(e.to_string().contains("max_lr"), "{e}");
        let e = error(&SolverParameter {
            max_lr: Some(0.0005),
            ..good.clone()
        });
        assert_eq!(
            e,
            LrPolicyError::MaxLrBelowBaseLr {
                policy,
                max_lr: 0.0005,
                base_lr: 0.001
            }
        );
        // max_lr == base_lr is a flat schedule, not an error.
        assert!(LrSchedule::new(&SolverParameter {
            max_lr: Some(0.001),
            ..good
        })
        .is_ok());
    }
}

#[test]
fn step_and_sigmoid_need_a_positive_stepsize() {
    for policy in ["step", "sigmoid"] {
        let e = error(&solver(policy));
        assert_eq!(
            e,
            LrPolicyError::StepsizeNotPositive {
                policy,
                stepsize: 0
            }
        );
        assert!(e.to_string().contains("stepsize > 0"), "{e}");
    }
}

#[test]
fn gamma_must_not_be_negative_where_caffe_checks_it() {
    for policy in ["step", "exp", "inv", "multistep", "exp_range"] {
        let param = SolverParameter {
            gamma: Some(-0.1),
            stepsize: Some(10),
            max_lr: Some(0.1),
            ..solver(policy)
        };
        assert_eq!(
            error(&param),
            LrPolicyError::NegativeGamma {
                policy,
                gamma: -0.1
            }
        );
    }
    // A decaying sigmoid needs gamma < 0 (see LrSchedule::new), and a negative power is a
    // growing inv/poly: upstream checks neither.
    let sigmoid = SolverParameter {
        gamma: Some(-0.001),
        stepsize: Some(10),
        ..solver("sigmoid")
    };
    assert!(LrSchedule::new(&sigmoid).is_ok());
    let inv = SolverParameter {
        gamma: Some(0.0001),
        power: Some(-0.75),
        ..solver("inv")
    };
    assert!(LrSchedule::new(&inv).is_ok());
}

#[test]
fn multistep_stepvalues_must_increase() {
    let param = SolverParameter {
        gamma: Some(0.5),
        stepvalue: vec![100, 200, 200, 300],
        ..solver("multistep")
    };
    let e = error(&param);
    assert_eq!(
        e,
        LrPolicyError::StepvaluesNotIncreasing {
            index: 2,
            previous: 200,
            value: 200
        }
    );
    assert!(e.to_string().contains("increasing"), "{e}");
    let decreasing = SolverParameter {
        stepvalue: vec![300, 100],
        ..param
    };
    assert!(matches!(
        error(&decreasing),
        LrPolicyError::StepvaluesNotIncreasing { index: 1, .. }
    ));
}

#[test]
fn poly_needs_max_iter() {
    assert_eq!(
        error(&solver("poly")),
        LrPolicyError::MaxIterNotPositive { max_iter: 0 }
    );
    let param = SolverParameter {
        max_iter: Some(1000),
        power: Some(0.5),
        ..solver("poly")
    };
    assert!(LrSchedule::new(&param).is_ok());
}
