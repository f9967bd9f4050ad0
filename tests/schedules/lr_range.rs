//! The learning-rate range test (`rcaffe lr-range`) and the cyclic-policy guidance in the train
//! log: the bound suggestions on synthetic accuracy curves built with known bounds (clean,
//! noisy, with outliers, falling, flat, still rising), the report's divergence and "none
//! found" wording, a short real range test of LeNet on the bundled Fashion-MNIST (CSV rows, a
//! linear rate from min_lr to max_lr), the PNG/SVG plots, and the guidance lines.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcaffe::lr_range::{
    report, run_range_test_with, suggest_bounds, write_outputs, Divergence, NoBound, RangeLength,
    RangePoint, RangeTest, RangeTestOptions,
};
use rcaffe::proto::caffe::{NetParameter, SolverParameter};
use rcaffe::proto::{parse_text, read_net, read_solver};
use rcaffe::solver::guidance::{cycle_guidance, Epoch};

// ---- synthetic curves ----------------------------------------------------------------------

/// Rates from 0 to `top` at `count` evenly spaced points.
fn rates(top: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| top * i as f64 / (count - 1) as f64)
        .collect()
}

/// An accuracy curve built with bounds `lo` < `hi`: flat at chance below `lo`, rising linearly
/// to `peak` at `hi`, then `after(lr)` beyond it (a plateau, a fall, ...).
fn curve(lo: f64, hi: f64, after: impl Fn(f64) -> f64) -> impl Fn(f64) -> f64 {
    const CHANCE: f64 = 0.1;
    const PEAK: f64 = 0.8;
    move |lr| {
        if lr < lo {
            CHANCE
        } else if lr <= hi {
            CHANCE + (PEAK - CHANCE) * (lr - lo) / (hi - lo)
        } else {
            after(lr)
        }
    }
}

/// Deterministic noise in [-amplitude, amplitude] (xorshift), a different sequence per seed.
fn noise(seed: u64, amplitude: f64) -> impl FnMut() -> f64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
        amplitude * (2.0 * unit - 1.0)
    }
}

fn sample(lrs: &[f64], f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    lrs.iter().map(|&lr| (lr, f(lr))).collect()
}

fn assert_within(value: f64, lo: f64, hi: f64, what: &str) {
    // Rounding of the sampled rates aside (0.1 * 12 / 40 is 0.030000000000000006).
    let slack = 1e-12 * hi.abs();
    assert!(
        (lo - slack..=hi + slack).contains(&value),
        "{what} {value} is outside the curve's bounds [{lo}, {hi}]"
    );
}

/// Both suggestions inside [lo, hi], base below max.
fn assert_suggests_within(points: &[(f64, f64)], lo: f64, hi: f64) -> (f64, f64) {
    let suggestion = suggest_bounds(points);
    let base = suggestion.base_lr.clone().expect("a base_lr");
    let max = suggestion.max_lr.clone().expect("a max_lr");
    assert_within(base, lo, hi, "base_lr");
    assert_within(max, lo, hi, "max_lr");
    assert!(base < max, "base_lr {base} >= max_lr {max}");
    (base, max)
}

#[test]
fn suggestions_land_inside_the_bounds_of_clean_curves() {
    let lrs = rates(0.1, 41);
    for (lo, hi) in [(0.01, 0.05), (0.002, 0.03), (0.03, 0.07)] {
        // Plateau after the rise.
        assert_suggests_within(&sample(&lrs, curve(lo, hi, |_| 0.8)), lo, hi);
        // Falling after the rise (too high a rate).
        let falling = curve(lo, hi, move |lr| 0.8 - 6.0 * (lr - hi));
        assert_suggests_within(&sample(&lrs, falling), lo, hi);
    }
}

#[test]
fn base_lr_is_near_where_the_rise_starts_and_max_lr_near_where_it_ends() {
    let (lo, hi) = (0.01, 0.05);
    let points = sample(&rates(0.1, 41), curve(lo, hi, |_| 0.8));
    let (base, max) = assert_suggests_within(&points, lo, hi);
    let span = hi - lo;
    assert!(base < lo + 0.3 * span, "base_lr {base} far from {lo}");
    assert!(max > hi - 0.3 * span, "max_lr {max} far from {hi}");
}

#[test]
fn suggestions_are_robust_to_noise() {
    let (lo, hi) = (0.01, 0.05);
    let lrs = rates(0.1, 41);
    let clean = curve(lo, hi, move |lr| 0.8 - 3.0 * (lr - hi));
    for seed in 1..=20 {
        let mut jitter = noise(seed, 0.04);
        let points: Vec<(f64, f64)> = lrs.iter().map(|&lr| (lr, clean(lr) + jitter())).collect();
        assert_suggests_within(&points, lo, hi);
    }
}

#[test]
fn a_single_lucky_test_does_not_move_max_lr() {
    // An argmax would pick the outlier at the top of the range; the smoothed curve does not.
    let (lo, hi) = (0.01, 0.04);
    let lrs = rates(0.1, 41);
    let mut points = sample(&lrs, curve(lo, hi, move |lr| 0.8 - 4.0 * (lr - hi)));
    let outlier = points.len() - 3;
    points[outlier].1 = 0.95;
    assert_suggests_within(&points, lo, hi);
}

#[test]
fn a_bend_in_a_continuing_climb_does_not_end_the_rise() {
    // A steep rise to a bend at 0.015, then a slower climb that still makes more than a
    // quarter of the rise, to a plateau at 0.035 (the demo's own curve has this shape): the
    // paper's max_lr is where the climbing stops, not the bend.
    let (lo, bend, hi) = (0.005, 0.015, 0.035);
    let lrs = rates(0.1, 41);
    for seed in 0..10 {
        let mut jitter = noise(seed, if seed == 0 { 0.0 } else { 0.01 });
        let points: Vec<(f64, f64)> = lrs
            .iter()
            .map(|&lr| {
                let y = if lr < lo {
                    0.1
                } else if lr <= bend {
                    0.1 + 0.5 * (lr - lo) / (bend - lo)
                } else if lr <= hi {
                    0.6 + 0.2 * (lr - bend) / (hi - bend)
                } else {
                    0.8
                };
                (lr, y + jitter())
            })
            .collect();
        // (Smoothing may put base_lr a test's step before lo.)
        let (base, max) = assert_suggests_within(&points, lo - 0.0025, hi + 0.005);
        assert!(base < bend, "seed {seed}: base_lr {base} past the bend");
        assert!(max > bend + 0.01, "seed {seed}: max_lr {max} at the bend");
    }
}

#[test]
fn a_curve_turning_ragged_ends_the_rise_there() {
    // A slow rise to 0.08, but from 0.055 on (past the middle of the rise) every third test
    // falls far below the others: the rate has become too high for steady training, before
    // the rise is done.
    let (lo, hi, ragged_from) = (0.01, 0.08, 0.055);
    let points: Vec<(f64, f64)> = sample(&rates(0.1, 41), curve(lo, hi, |_| 0.8))
        .into_iter()
        .enumerate()
        .map(|(i, (lr, y))| {
            let dip = lr >= ragged_from && i % 3 == 0;
            (lr, if dip { y - 0.25 } else { y })
        })
        .collect();
    let suggestion = suggest_bounds(&points);
    let max = suggestion.max_lr.clone().expect("a max_lr");
    let first_dip = points
        .iter()
        .enumerate()
        .find(|(i, p)| p.0 >= ragged_from && i % 3 == 0)
        .map(|(_, p)| p.0)
        .unwrap();
    assert_eq!(suggestion.ragged_lr, Some(first_dip), "{suggestion:?}");
    assert_eq!(max, first_dip);
    assert!(suggestion.rise_stops_lr.unwrap() > first_dip);
    let text = report(&range_test(&points, None), &suggestion, 4.0);
    assert!(
        text.contains(&format!(
            "it turns ragged at {}",
            rcaffe::lr_range::format_rate(first_dip)
        )),
        "{text}"
    );
}

#[test]
fn a_ragged_top_ends_the_rise() {
    // Past hi the accuracy swings wildly around a lower level: the rate is too high.
    let (lo, hi) = (0.01, 0.05);
    let lrs = rates(0.1, 41);
    let mut swing = noise(7, 0.25);
    let points: Vec<(f64, f64)> = lrs
        .iter()
        .map(|&lr| {
            let y = if lr <= hi {
                curve(lo, hi, |_| 0.8)(lr)
            } else {
                0.55 + swing()
            };
            (lr, y)
        })
        .collect();
    assert_suggests_within(&points, lo, hi);
}

#[test]
fn no_rise_gives_no_bounds() {
    let mut jitter = noise(3, 0.02);
    let points: Vec<(f64, f64)> = rates(0.1, 40)
        .into_iter()
        .map(|lr| (lr, 0.1 + jitter()))
        .collect();
    let suggestion = suggest_bounds(&points);
    assert!(matches!(suggestion.base_lr, Err(NoBound::NoRise { .. })));
    assert!(matches!(suggestion.max_lr, Err(NoBound::NoRise { .. })));
    assert_eq!(suggestion.rule_of_thumb(), None);
    let text = report(&range_test(&points, None), &suggestion, 4.0);
    assert!(
        text.contains("base_lr (accuracy starts to rise): none found"),
        "{text}"
    );
    assert!(text.contains("No solver snippet"), "{text}");
    assert!(!text.contains("lr_policy"), "{text}");
}

#[test]
fn a_curve_still_rising_at_the_end_gives_no_max_lr() {
    let (lo, hi) = (0.02, 0.2);
    let points = sample(&rates(0.1, 40), curve(lo, hi, |_| 0.8));
    let suggestion = suggest_bounds(&points);
    let base = suggestion
        .base_lr
        .clone()
        .expect("the rise starts inside the range");
    assert_within(base, lo, 0.1, "base_lr");
    match &suggestion.max_lr {
        Err(NoBound::StillRising { at_lr }) => assert_eq!(*at_lr, 0.1),
        other => panic!("expected StillRising, got {other:?}"),
    }
    let text = report(&range_test(&points, None), &suggestion, 4.0);
    assert!(text.contains("still rising"), "{text}");
    assert!(text.contains("No solver snippet"), "{text}");
}

#[test]
fn too_few_points_give_no_bounds() {
    let points = [(0.0, 0.1), (0.01, 0.5), (0.02, 0.8)];
    let suggestion = suggest_bounds(&points);
    assert!(matches!(
        suggestion.base_lr,
        Err(NoBound::TooFewPoints { count: 3 })
    ));
}

/// A RangeTest holding `points` (losses made up), as a run would leave it.
fn range_test(points: &[(f64, f64)], divergence: Option<Divergence>) -> RangeTest {
    RangeTest {
        min_lr: points.first().map_or(0.0, |p| p.0),
        max_lr: points.last().map_or(1.0, |p| p.0),
        iterations: 10 * points.len() as u32,
        epoch: Some(Epoch {
            source: "train_lmdb".into(),
            images: 6000,
            batch_size: 64,
            iter_size: 1,
        }),
        accuracy_output: "accuracy".into(),
        points: points
            .iter()
            .enumerate()
            .map(|(i, &(lr, acc))| RangePoint {
                iteration: 10 * (i as u32 + 1),
                lr,
                train_loss: 2.0 - acc,
                test_accuracy: acc,
                test_loss: 2.1 - acc,
            })
            .collect(),
        divergence,
    }
}

#[test]
fn report_gives_a_solver_snippet_and_the_rule_of_thumb() {
    let (lo, hi) = (0.01, 0.05);
    let points = sample(&rates(0.1, 41), curve(lo, hi, |_| 0.8));
    let suggestion = suggest_bounds(&points);
    let text = report(&range_test(&points, None), &suggestion, 4.0);
    let max = suggestion.max_lr.clone().unwrap();
    let snippet = text
        .split("Solver snippet:")
        .nth(1)
        .expect("a snippet after the bounds");
    // The snippet parses as a solver and holds a triangular2 schedule with 4 epochs of 94.
    let param: SolverParameter = parse_text(snippet, Path::new("snippet")).unwrap();
    assert_eq!(param.lr_policy(), "triangular2");
    assert_eq!(param.stepsize(), 4 * 94);
    assert!(param.base_lr() < param.max_lr.unwrap());
    assert_within(f64::from(param.base_lr()), lo, hi, "snippet base_lr");
    assert_within(f64::from(param.max_lr.unwrap()), lo, hi, "snippet max_lr");
    let thumb = format!(
        "max_lr/3 = {} or max_lr/4 = {}",
        rcaffe::lr_range::format_rate(max / 3.0),
        rcaffe::lr_range::format_rate(max / 4.0)
    );
    assert!(text.contains(&thumb), "{text}");
}

#[test]
fn report_says_where_the_loss_diverged() {
    let points = sample(&rates(0.1, 20), curve(0.01, 0.05, |_| 0.8));
    let divergence = Divergence {
        iteration: 200,
        lr: 0.1,
        loss: f64::NAN,
    };
    let test = range_test(&points, Some(divergence));
    let text = report(&test, &suggest_bounds(&points), 4.0);
    assert!(
        text.contains("The loss diverged at iteration 200 (lr 0.1, training loss NaN)"),
        "{text}"
    );
}

// ---- plots ---------------------------------------------------------------------------------

#[test]
fn plots_are_valid_png_and_svg_with_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let points = sample(&rates(0.1, 41), curve(0.01, 0.05, |_| 0.8));
    let test = range_test(&points, None);
    let suggestion = suggest_bounds(&points);
    let [csv, png, svg] = write_outputs(&test, &suggestion, &dir.path().join("run"), "t").unwrap();
    assert_eq!(csv, dir.path().join("run.csv"));

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1024, 640));
    let colours: std::collections::HashSet<&[u8]> = pixels[..frame.buffer_size()]
        .chunks(frame.color_type.samples())
        .collect();
    assert!(
        colours.len() > 5,
        "a blank image ({} colours)",
        colours.len()
    );

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "not an SVG");
    assert!(text.trim_end().ends_with("</svg>"), "truncated SVG");
    for series in [
        "test accuracy",
        "smoothed accuracy",
        "suggested bounds",
        "train loss",
        "test loss",
        "learning rate",
    ] {
        assert!(text.contains(series), "the SVG lacks {series:?}");
    }
}

// ---- a real range test on LeNet ------------------------------------------------------------

/// The bundled Fashion-MNIST as LMDBs, converted once (kept in Cargo's test scratch folder).
fn lmdbs() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lr_range_fmnist");
        let done = dir.join("converted");
        let paths = (dir.join("train_lmdb"), dir.join("test_lmdb"));
        if !done.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (part, out) in [("train", &paths.0), ("t10k", &paths.1)] {
                let idx = Path::new("data/fashion-mnist-mini");
                rcaffe::data::convert_mnist(
                    &idx.join(format!("{part}-images-idx3-ubyte.gz")),
                    &idx.join(format!("{part}-labels-idx1-ubyte.gz")),
                    out,
                )
                .unwrap();
            }
            std::fs::write(&done, "").unwrap();
        }
        paths
    })
}

/// models/lenet's net reading the converted LMDBs.
fn lenet() -> NetParameter {
    let (train, test) = lmdbs();
    let mut net = read_net(Path::new("models/lenet/lenet_train_test.prototxt")).unwrap();
    for layer in &mut net.layer {
        if let Some(data) = &mut layer.data_param {
            let source = if data.source().contains("train") {
                train
            } else {
                test
            };
            data.source = Some(source.display().to_string());
        }
    }
    net
}

/// models/lenet/solver_fixed.prototxt training the net above, with a smaller test.
fn lenet_solver(extra: &str) -> SolverParameter {
    let mut param = read_solver(Path::new("models/lenet/solver_fixed.prototxt")).unwrap();
    param.net = None;
    param.net_param = Some(lenet());
    param.test_iter = vec![2];
    let extra: SolverParameter = parse_text(extra, Path::new("extra")).unwrap();
    prost::Message::merge(&mut param, prost::Message::encode_to_vec(&extra).as_slice()).unwrap();
    param
}

#[test]
fn lenet_range_test_writes_a_row_per_test_with_a_linear_rate() {
    let (min_lr, max_lr, iterations, tests) = (0.002f32, 0.02f32, 24u32, 6u32);
    let options = RangeTestOptions {
        min_lr: Some(min_lr),
        max_lr: Some(max_lr),
        length: Some(RangeLength::Iterations(iterations)),
        test_points: tests,
    };
    let origin = Path::new("models/lenet/solver_fixed.prototxt");
    let test = run_range_test_with(lenet_solver(""), origin, &options).unwrap();
    assert_eq!(test.divergence, None);
    assert_eq!(test.accuracy_output, "accuracy");
    let epoch = test.epoch.clone().expect("the LMDB's epoch");
    assert_eq!((epoch.images, epoch.batch_size), (6000, 64));

    let csv = test.to_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("iteration,lr,train_loss,test_accuracy,test_loss")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), tests as usize);
    let interval = iterations / tests;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 5);
        let iteration = interval * (i as u32 + 1);
        assert_eq!(row[0], f64::from(iteration));
        // The rate the solver trained with, linear from min_lr to max_lr.
        let expected = f64::from(min_lr)
            + f64::from(max_lr - min_lr) * f64::from(iteration) / f64::from(iterations);
        assert!(
            (row[1] - expected).abs() <= 1e-6 * expected,
            "row {i}: lr {} vs {expected}",
            row[1]
        );
        assert!(row[2].is_finite() && row[2] > 0.0, "train loss {}", row[2]);
        assert!((0.0..=1.0).contains(&row[3]), "accuracy {}", row[3]);
        assert!(row[4].is_finite() && row[4] > 0.0, "test loss {}", row[4]);
    }
    assert!((rows.last().unwrap()[1] - f64::from(max_lr)).abs() < 1e-7);
}

#[test]
fn lenet_range_test_stops_where_the_loss_diverges() {
    let options = RangeTestOptions {
        min_lr: Some(1.0),
        max_lr: Some(50.0),
        length: Some(RangeLength::Iterations(60)),
        test_points: 12,
    };
    let origin = Path::new("models/lenet/solver_fixed.prototxt");
    let test = run_range_test_with(lenet_solver(""), origin, &options).unwrap();
    let divergence = test.divergence.expect("a rate of 1 to 50 diverges");
    assert!(divergence.iteration < 60, "{divergence:?}");
    assert!(test.points.len() < 12, "{} tests", test.points.len());
    let text = report(&test, &suggest_bounds(&test.accuracy_curve()), 4.0);
    assert!(
        text.contains(&format!(
            "The loss diverged at iteration {}",
            divergence.iteration
        )),
        "{text}"
    );
}

#[test]
fn a_solver_without_a_test_net_is_refused_naming_the_file() {
    let origin = Path::new("models/lenet/solver_fixed.prototxt");
    let mut param = lenet_solver("");
    param.test_iter.clear();
    let error = run_range_test_with(param, origin, &RangeTestOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("models/lenet/solver_fixed.prototxt: ")
            && message.contains("test_iter"),
        "{message}"
    );
}

// ---- guidance in the train log -------------------------------------------------------------

fn cyclic(text: &str) -> SolverParameter {
    parse_text(text, Path::new("guidance")).unwrap()
}

const EPOCH: fn() -> Epoch = || Epoch {
    source: "train_lmdb".into(),
    images: 6000,
    batch_size: 64,
    iter_size: 1,
};

#[test]
fn guidance_gives_the_epoch_and_the_cycle_ends() {
    let param = cyclic(
        "lr_policy: 'triangular2' base_lr: 0.001 max_lr: 0.006 stepsize: 188 max_iter: 1128",
    );
    let lines = cycle_guidance(&param, Some(&EPOCH()));
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(lines.len(), 2, "{texts:?}");
    assert!(lines.iter().all(|l| !l.warning), "{texts:?}");
    assert!(
        texts[0].contains("an epoch is 94 iterations"),
        "{}",
        texts[0]
    );
    assert!(
        texts[0].contains("stepsize 188 is 2.0 epochs"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].starts_with("Cycles end at iterations 376, 752, 1128:"),
        "{}",
        texts[1]
    );
    assert!(!texts[1].contains("not at a cycle end"), "{}", texts[1]);
}

#[test]
fn guidance_warns_about_a_stepsize_outside_two_to_ten_epochs() {
    for (stepsize, epochs) in [(50, "0.5"), (1500, "16.0")] {
        let param = cyclic(&format!(
            "lr_policy: 'triangular' base_lr: 0.001 max_lr: 0.006 stepsize: {stepsize} \
             max_iter: 3150 start_lr_policy: 100"
        ));
        let lines = cycle_guidance(&param, Some(&EPOCH()));
        let warnings: Vec<&str> = lines
            .iter()
            .filter(|l| l.warning)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(warnings.len(), 1, "{lines:?}");
        assert!(
            warnings[0].contains(&format!("{epochs} epochs"))
                && warnings[0].contains("188-940 iterations"),
            "{}",
            warnings[0]
        );
        // Cycles are counted from start_lr_policy; max_iter is off the cycle.
        let ends = lines.last().unwrap().text.as_str();
        let first_end = 100 + 2 * stepsize;
        assert!(
            ends.contains(&format!("at iterations {first_end}")),
            "{ends}"
        );
        assert!(
            ends.contains("max_iter 3150 is not at a cycle end"),
            "{ends}"
        );
    }
}

#[test]
fn guidance_is_only_for_cyclic_policies_and_never_reads_as_an_iteration_line() {
    assert!(cycle_guidance(&cyclic("lr_policy: 'fixed' base_lr: 0.01"), Some(&EPOCH())).is_empty());
    assert!(cycle_guidance(&cyclic("lr_policy: 'step' stepsize: 10"), None).is_empty());
    for policy in ["triangular", "triangular2", "exp_range", "decay"] {
        let param = cyclic(&format!(
            "lr_policy: '{policy}' base_lr: 0.001 max_lr: 0.006 stepsize: 2000 max_iter: 25000 \
             gamma: 0.99994"
        ));
        for epoch in [None, Some(EPOCH())] {
            let lines = cycle_guidance(&param, epoch.as_ref());
            assert!(!lines.is_empty(), "{policy}");
            for line in &lines {
                assert!(!line.text.starts_with("Iteration "), "{}", line.text);
            }
            if epoch.is_none() {
                assert!(lines[0].text.contains("epoch length unknown"), "{lines:?}");
            }
        }
    }
}

#[test]
fn the_train_log_carries_the_guidance() {
    let param = lenet_solver(
        "lr_policy: 'triangular2' base_lr: 0.001 max_lr: 0.006 stepsize: 2 max_iter: 4 \
         test_interval: 1000 display: 0 snapshot: 0 snapshot_after_train: false",
    );
    let backend = rcaffe::backend::CpuBackend::default();
    let origin = Path::new("models/lenet/solver_triangular2.prototxt");
    let mut solver = rcaffe::solver::Solver::new_recording(param, origin, &backend).unwrap();
    solver.solve(None).unwrap();
    let log = solver.take_log();
    let after_policy: Vec<&String> = log
        .iter()
        .skip_while(|l| !l.starts_with("Learning Rate Policy: triangular2"))
        .collect();
    let find = |needle: &str| after_policy.iter().any(|l| l.contains(needle));
    assert!(
        find("an epoch is 94 iterations (6000 images in"),
        "{log:#?}"
    );
    assert!(
        find("stepsize 2 is 0.0 epochs, outside the 2-10 epochs"),
        "{log:#?}"
    );
    assert!(find("Cycles end at iterations 4:"), "{log:#?}");
}

#[test]
fn the_command_line_runs_a_range_test_with_caffe_spelling() {
    let (train, test) = lmdbs();
    let dir = tempfile::tempdir().unwrap();
    let net = std::fs::read_to_string("models/lenet/lenet_train_test.prototxt")
        .unwrap()
        .replace(
            "\"fmnist_train_lmdb\"",
            &format!("{:?}", train.display().to_string()),
        )
        .replace(
            "\"fmnist_test_lmdb\"",
            &format!("{:?}", test.display().to_string()),
        );
    let net_file = dir.path().join("net.prototxt");
    std::fs::write(&net_file, net).unwrap();
    let solver_file = dir.path().join("solver.prototxt");
    std::fs::write(
        &solver_file,
        format!(
            "net: {:?}\ntest_iter: 2\ntest_interval: 100\nbase_lr: 0.01\nmomentum: 0.9\n\
             lr_policy: \"fixed\"\nmax_iter: 100\n",
            net_file.display().to_string()
        ),
    )
    .unwrap();
    let prefix = dir.path().join("out");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rcaffe"))
        .args(["lr-range", "-solver", solver_file.to_str().unwrap()])
        .args(["-min_lr", "0.001", "--max-lr", "0.01", "-iterations", "20"])
        .args(["--tests", "5", "-o", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Range test: lr 0.001 to 0.01 over 20 iterations"),
        "{stdout}"
    );
    assert!(stdout.contains("Suggested base_lr"), "{stdout}");
    for extension in ["csv", "png", "svg"] {
        assert!(
            dir.path().join(format!("out.{extension}")).exists(),
            "{extension}"
        );
    }
    let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5);
}

// ---- the demo ------------------------------------------------------------------------------

/// The value of the snippet line `field: value` in `report`.
fn snippet_value<'a>(report: &'a str, field: &str) -> &'a str {
    report
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in the snippet:\n{report}"))
        .split_whitespace()
        .next()
        .unwrap()
}

/// `solver` with what the demo sets aside (the net and the paths it trains in, the seed it
/// gives both runs) and what a zoo file sets for its machine (`solver_mode`) cleared.
fn settings(mut solver: SolverParameter) -> SolverParameter {
    solver.net = None;
    solver.net_param = None;
    solver.snapshot_prefix = None;
    solver.random_seed = None;
    solver.solver_mode = None;
    solver
}

/// The demo's baseline is upstream's LeNet solver, setting for setting.
#[test]
fn the_demos_baseline_is_the_zoos_lenet_solver() {
    let ours = read_solver(Path::new("models/lenet/lenet_solver.prototxt")).unwrap();
    let zoo = read_solver(Path::new(
        "../shared/caffe-zoo/examples/mnist/lenet_solver.prototxt",
    ))
    .unwrap();
    assert_eq!(settings(ours), settings(zoo));
}

/// `rcaffe demo`, whole (about 3 minutes on 2 cores): the baseline is the solver file's,
/// the solver snippet it prints is the one its triangular2 run trained with, and its table and
/// summary.csv report the runs it made.
#[test]
fn the_demo_prints_the_solver_it_trained_with() {
    let out = tempfile::tempdir().unwrap();
    let demo = rcaffe::demo::run_demo(out.path()).unwrap();
    let [(baseline, baseline_param), (cyclic, cyclic_param)] = demo.runs.as_slice() else {
        panic!("{} runs", demo.runs.len());
    };
    let zoo = read_solver(Path::new("models/lenet/lenet_solver.prototxt")).unwrap();
    assert_eq!(settings(baseline_param.clone()), settings(zoo));
    assert_eq!(cyclic_param.lr_policy(), "triangular2");
    let report = &demo.range_report;
    assert_eq!(snippet_value(report, "lr_policy"), "\"triangular2\"");
    let rate = |field: &str| snippet_value(report, field).parse::<f32>().unwrap();
    assert_eq!(rate("base_lr"), cyclic_param.base_lr());
    assert_eq!(Some(rate("max_lr")), cyclic_param.max_lr);
    let stepsize: i32 = snippet_value(report, "stepsize").parse().unwrap();
    assert_eq!(stepsize, cyclic_param.stepsize());
    // The run ends at a cycle's end, as the snippet advises.
    assert_eq!(cyclic_param.max_iter() % (2 * stepsize), 0);
    assert!(
        report.contains(&format!("a multiple of {}", 2 * stepsize)),
        "{report}"
    );
    // Each run's row, in the table and in summary.csv (baseline first), from its tests.
    let (baseline_best, _) = baseline.best();
    let csv = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "policy,solver,iterations,best_accuracy,best_at,final_accuracy,\
             iterations_to_baseline_best"
        )
    );
    for (run, param) in [(baseline, baseline_param), (cyclic, cyclic_param)] {
        assert_eq!(run.iterations, param.max_iter());
        assert_eq!(run.accuracy.last().unwrap().0, param.max_iter());
        let (best, best_at) = run.best();
        let reach = run.iterations_to_reach(baseline_best);
        let row = format!(
            "| {} | {} | {} | {:.2}% ({best_at}) |",
            run.policy,
            run.solver,
            param.max_iter(),
            best * 100.0,
        );
        assert!(demo.table.contains(&row), "{row} in\n{}", demo.table);
        let fields: Vec<&str> = lines.next().expect("a row per run").split(',').collect();
        assert_eq!(fields[0], run.policy);
        assert_eq!(fields[2].parse::<i32>().unwrap(), param.max_iter());
        assert_eq!(fields[3].parse::<f32>().unwrap(), best);
        assert_eq!(fields[4].parse::<i32>().unwrap(), best_at);
        assert_eq!(fields[5].parse::<f32>().unwrap(), run.final_accuracy());
        assert_eq!(fields[6].parse::<i32>().ok(), reach);
    }
    assert_eq!(
        baseline.iterations_to_reach(baseline_best),
        Some(baseline.best().1)
    );
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert_eq!(summary, format!("{report}\n{}", demo.table));
}
