//! `plot-lr`'s outputs (CSV, PNG, SVG) and the general chart module.

use rcaffe::lr_policy::{write_lr_schedule, LrSchedule, ScheduleError};
use rcaffe::plot::{Chart, PlotError, Series};
use rcaffe::proto::caffe::SolverParameter;
use std::path::PathBuf;

/// The first series' colour (the palette's first entry).
const CURVE: [u8; 3] = [31, 119, 180];

/// A fresh folder under cargo's per-target scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("plot")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Four triangular cycles of 2 · 50 iterations between 0.001 and 0.006.
fn triangular() -> SolverParameter {
    SolverParameter {
        lr_policy: Some("triangular".into()),
        base_lr: Some(0.001),
        max_lr: Some(0.006),
        stepsize: Some(50),
        max_iter: Some(400),
        ..Default::default()
    }
}

fn rates(solver: &SolverParameter, count: usize) -> Vec<f32> {
    LrSchedule::new(solver)
        .unwrap()
        .rates()
        .take(count)
        .collect()
}

#[test]
fn csv_round_trips_to_the_exact_rates() {
    let dir = scratch("csv");
    let solver = SolverParameter {
        lr_policy: Some("exp_range".into()),
        gamma: Some(0.99994),
        ..triangular()
    };
    let path = dir.join("lr.csv");
    write_lr_schedule(&solver, Some(1000), &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("iteration,lr"));
    let parsed: Vec<(u32, f32)> = lines
        .map(|line| {
            let (iter, lr) = line.split_once(',').unwrap();
            (iter.parse().unwrap(), lr.parse().unwrap())
        })
        .collect();
    let expected = rates(&solver, 1001);
    assert_eq!(parsed.len(), expected.len());
    for (i, ((iter, lr), want)) in parsed.iter().zip(&expected).enumerate() {
        assert_eq!(*iter as usize, i);
        assert_eq!(lr.to_bits(), want.to_bits(), "iteration {i}");
    }
}

#[test]
fn iterations_default_to_max_iter() {
    let dir = scratch("default");
    let path = dir.join("lr.csv");
    write_lr_schedule(&triangular(), None, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1 + 401);
    assert_eq!(text.lines().last(), Some("400,0.001"));

    let no_max_iter = SolverParameter {
        max_iter: Some(-1),
        ..triangular()
    };
    let e = write_lr_schedule(&no_max_iter, None, &path).unwrap_err();
    assert!(matches!(
        e,
        ScheduleError::NoIterations { max_iter: -1, .. }
    ));
    assert!(e.to_string().contains("lr.csv"), "{e}");
}

/// Groups of adjacent columns (gaps of more than a few pixels start a new group).
fn column_groups(mut columns: Vec<u32>) -> Vec<(u32, u32)> {
    columns.sort_unstable();
    columns.dedup();
    let mut groups: Vec<(u32, u32)> = Vec::new();
    for x in columns {
        match groups.last_mut() {
            Some((_, end)) if x <= *end + 4 => *end = x,
            _ => groups.push((x, x)),
        }
    }
    groups
}

#[test]
fn png_draws_the_cycles_where_they_belong() {
    let dir = scratch("png");
    let path = dir.join("triangular.png");
    write_lr_schedule(&triangular(), None, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1024, 640));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let width = frame.width;
    let pixel = |x: u32, y: u32| {
        let i = 3 * (y * width + x) as usize;
        [pixels[i], pixels[i + 1], pixels[i + 2]]
    };
    let all = || (0..frame.height).flat_map(move |y| (0..width).map(move |x| (x, y)));

    // Dark text (title, labels, tick labels) and axes.
    let dark = all()
        .filter(|&(x, y)| pixel(x, y).iter().all(|&c| c < 80))
        .count();
    assert!(dark > 2000, "only {dark} dark pixels: no text or axes?");

    let curve: Vec<(u32, u32)> = all().filter(|&(x, y)| pixel(x, y) == CURVE).collect();
    assert!(curve.len() > 1000, "only {} curve pixels", curve.len());
    let top = curve.iter().map(|p| p.1).min().unwrap();
    let bottom = curve.iter().map(|p| p.1).max().unwrap();
    let left = curve.iter().map(|p| p.0).min().unwrap();
    let right = curve.iter().map(|p| p.0).max().unwrap();
    assert!(bottom - top > 400, "the curve spans rows {top}..{bottom}");
    assert!(
        right - left > 700,
        "the curve spans columns {left}..{right}"
    );

    // Four cycles: four peaks at the top, five troughs (both ends included) at the bottom, evenly
    // spaced across the curve's width.
    let near = |row: u32| {
        let columns = curve.iter().filter(|p| p.1.abs_diff(row) <= 2).map(|p| p.0);
        column_groups(columns.collect())
    };
    let peaks = near(top);
    let troughs = near(bottom);
    assert_eq!(peaks.len(), 4, "peaks at {peaks:?}");
    assert_eq!(troughs.len(), 5, "troughs at {troughs:?}");
    let cycle = f64::from(right - left) / 4.0;
    for (k, (start, end)) in peaks.iter().enumerate() {
        let expected = f64::from(left) + cycle * (k as f64 + 0.5);
        let middle = f64::from(start + end) / 2.0;
        assert!(
            (middle - expected).abs() < 6.0,
            "peak {k} at {middle}, not {expected}"
        );
    }
}

/// The contents of the `<text>` elements, trimmed.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .map(|element| {
            let content = &element[element.find('>').unwrap() + 1..];
            content[..content.find("</text>").unwrap()].trim()
        })
        .collect()
}

/// The numbers in a polyline's `points` attribute, as (x, y) pixel pairs.
fn polylines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    svg.split("<polyline")
        .skip(1)
        .map(|element| {
            let element = &element[..element.find("/>").unwrap()];
            let points = element.split("points=\"").nth(1).unwrap();
            let points = &points[..points.find('"').unwrap()];
            let pairs = points
                .split_whitespace()
                .map(|pair| {
                    let (x, y) = pair.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (element.to_owned(), pairs)
        })
        .collect()
}

#[test]
fn svg_holds_the_schedule_as_a_polyline_and_the_labels_as_text() {
    let dir = scratch("svg");
    let path = dir.join("triangular.svg");
    let solver = triangular();
    write_lr_schedule(&solver, None, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let texts = texts(&svg);
    for text in [
        "Learning rate schedule",
        "iteration",
        "learning rate",
        "0.006",
        "400",
    ] {
        assert!(texts.contains(&text), "no {text} in {texts:?}");
    }

    let curve: Vec<Vec<(f64, f64)>> = polylines(&svg)
        .into_iter()
        .filter(|(element, _)| element.contains("#1F77B4"))
        .map(|(_, points)| points)
        .collect();
    assert_eq!(curve.len(), 1, "one curve");
    let points = &curve[0];
    let lr = rates(&solver, 401);
    assert_eq!(points.len(), lr.len(), "one point per iteration");

    // Pixel y falls linearly as the rate rises; pixel x rises linearly with the iteration.
    let (low, high) = (f64::from(lr[0]), f64::from(lr[50]));
    let (y_low, y_high) = (points[0].1, points[50].1);
    assert!(
        y_low - y_high > 400.0,
        "the curve's height is {}",
        y_low - y_high
    );
    let x_step = (points[400].0 - points[0].0) / 400.0;
    for (i, (&(x, y), &rate)) in points.iter().zip(&lr).enumerate() {
        let expected_y = y_low + (f64::from(rate) - low) / (high - low) * (y_high - y_low);
        assert!(
            (y - expected_y).abs() <= 1.0,
            "iteration {i}: y {y}, not {expected_y}"
        );
        let expected_x = points[0].0 + x_step * i as f64;
        assert!(
            (x - expected_x).abs() <= 1.0,
            "iteration {i}: x {x}, not {expected_x}"
        );
    }
}

#[test]
fn an_unsupported_extension_is_refused_naming_the_file_and_the_formats() {
    let dir = scratch("extension");
    for name in ["lr.txt", "lr"] {
        let path = dir.join(name);
        let e = write_lr_schedule(&triangular(), None, &path).unwrap_err();
        assert!(
            matches!(e, ScheduleError::UnsupportedFormat { .. }),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(message.contains(name), "{message}");
        assert!(message.contains("csv, png, svg"), "{message}");
        assert!(!path.exists());
    }
    let e = Chart::new("t").write(&dir.join("chart.csv")).unwrap_err();
    assert!(matches!(e, PlotError::UnsupportedFormat { .. }), "{e:?}");
    assert!(e.to_string().contains("png, svg"), "{e}");
}

#[test]
fn write_errors_name_the_file() {
    let dir = scratch("io");
    for name in ["lr.csv", "lr.png", "lr.svg"] {
        let path = dir.join("missing-folder").join(name);
        let e = write_lr_schedule(&triangular(), Some(10), &path).unwrap_err();
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
    let bad = SolverParameter {
        max_lr: None,
        ..triangular()
    };
    let e = write_lr_schedule(&bad, None, &dir.join("lr.csv")).unwrap_err();
    assert!(matches!(e, ScheduleError::Policy(_)), "{e:?}");
}

#[test]
fn a_chart_can_overlay_series_with_a_legend_and_a_secondary_axis() {
    let dir = scratch("overlay");
    let loss: Vec<(f64, f64)> = (0..200)
        .map(|i| (f64::from(i), 2.3 * (-f64::from(i) / 60.0).exp()))
        .collect();
    let mut diverged = loss.clone();
    diverged[120].1 = f64::NAN; // breaks the line rather than spoiling the range
    let lr: Vec<(f64, f64)> = rates(&triangular(), 200)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as f64, f64::from(r)))
        .collect();
    let chart = Chart::new("Two runs")
        .x_label("iteration")
        .y_label("loss")
        .secondary_y_label("learning rate")
        .series(Series::new("run A", loss))
        .series(Series::new("run B", diverged))
        .series(Series::new("lr", lr).on_secondary_axis());
    let svg = chart.to_svg(&dir.join("overlay.svg")).unwrap();
    let texts = texts(&svg);
    for text in ["Two runs", "run A", "run B", "lr", "loss", "learning rate"] {
        assert!(texts.contains(&text), "no {text} in {texts:?}");
    }
    // Run B is drawn in two pieces around its NaN (plus its legend sample).
    let run_b = polylines(&svg)
        .into_iter()
        .filter(|(element, _)| element.contains("#D62728"))
        .count();
    assert_eq!(run_b, 3);
    let png = dir.join("overlay.png");
    chart.write(&png).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}

#[test]
fn an_accuracy_axis_stays_within_zero_and_one() {
    let dir = scratch("y-within");
    // Accuracy rising to exactly 1: padding would lift the axis past 1.
    let accuracy: Vec<(f64, f64)> = (0..=50)
        .map(|i| (f64::from(i), 0.5 + 0.01 * f64::from(i)))
        .collect();
    // The pixel row of the curve's highest point, and of the plot area's top (its grid lines').
    let rows = |limited: bool| {
        let chart = Chart::new("accuracy").series(Series::new("", accuracy.clone()));
        let chart = if limited {
            chart.y_within(0.0, 1.0)
        } else {
            chart
        };
        let path = dir.join(format!("limited-{limited}.svg"));
        chart.write(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let curve_top = polylines(&svg)
            .into_iter()
            .filter(|(element, _)| element.contains("#1F77B4"))
            .flat_map(|(_, points)| points.into_iter().map(|(_, y)| y))
            .fold(f64::INFINITY, f64::min);
        let plot_top = svg
            .split("y2=\"")
            .skip(1)
            .filter_map(|rest| rest[..rest.find('"').unwrap()].parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min);
        (curve_top, plot_top)
    };
    let (unlimited_top, plot_top) = rows(false);
    assert!(
        unlimited_top > plot_top + 5.0,
        "padding leaves room above 1"
    );
    let (limited_top, plot_top) = rows(true);
    assert!(
        (limited_top - plot_top).abs() <= 1.0,
        "accuracy 1 is drawn at row {limited_top}, the plot's top at {plot_top}"
    );
}
