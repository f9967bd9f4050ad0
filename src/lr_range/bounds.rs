//! Reading a range test's accuracy-against-rate curve as the paper tells a person to:
//! `base_lr` where accuracy starts to rise, `max_lr` where the rise stops ("slows"), turns ragged
//! or falls, on a smoothed curve (a running median, then a running mean), saying so when the
//! curve gives no bound rather than inventing one. The paper reads its CIFAR-10 figure 3 so:
//! accuracy climbs from 0.001 and levels off, turning ragged, by 0.006; a bend where the curve
//! keeps climbing steeply is not where it stops.

/// A rate with two significant digits, as a solver file would hold it ("0.0012", "0.03"):
/// C's `%.2g`, the same formatting the prototxt printer uses.
pub fn format_rate(rate: f64) -> String {
    crate::proto::format_g(rate, 2)
}

/// Why a bound could not be read from the curve.
#[derive(Debug, Clone, PartialEq)]
pub enum NoBound {
    /// Too few finite points to smooth.
    TooFewPoints { count: usize },
    /// The smoothed accuracy never rises clearly above the noise.
    NoRise { rise: f64, noise: f64 },
    /// Accuracy is still climbing at the highest rate tested: the upper bound is beyond it.
    StillRising { at_lr: f64 },
}

impl std::fmt::Display for NoBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBound::TooFewPoints { count } => write!(
                f,
                "only {count} test points; the curve needs at least {MIN_POINTS} to be read"
            ),
            NoBound::NoRise { rise, noise } => write!(
                f,
                "accuracy does not rise clearly over the range (smoothed rise {rise:.3}, noise \
                 {noise:.3}); try a wider range or a longer test"
            ),
            NoBound::StillRising { at_lr } => write!(
                f,
                "accuracy is still rising at the highest rate tested ({}); rerun with a larger \
                 max_lr",
                format_rate(*at_lr)
            ),
        }
    }
}

/// The fewest points [`suggest_bounds`] reads.
pub const MIN_POINTS: usize = 5;
/// The smoothed rise must exceed this many noise deviations (and [`MIN_RISE`]).
const RISE_OVER_NOISE: f64 = 4.0;
/// The smallest accuracy rise taken as a rise at all.
const MIN_RISE: f64 = 0.02;
/// `base_lr` is where the smoothed curve has made this fraction of its rise…
const START_FRACTION: f64 = 0.1;
/// …and the rise has stopped where it has made this fraction: the rest is the slow approach
/// to the plateau, within the noise of a few tests.
const TOP_FRACTION: f64 = 0.9;
/// A test this many noise deviations off the smoothed curve, past the middle of the rise,
/// marks where the curve turns ragged…
const RAGGED_DEVIATIONS: f64 = 3.0;
/// …and at least this fraction of the rise off it (a clean curve has next to no noise).
const RAGGED_MIN_FRACTION: f64 = 0.1;

/// The bounds read from an accuracy-against-rate curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// Where accuracy starts to rise.
    pub base_lr: std::result::Result<f64, NoBound>,
    /// Where the rise stops, turns ragged or falls.
    pub max_lr: std::result::Result<f64, NoBound>,
    /// The curve as read: (lr, smoothed accuracy).
    pub smoothed: Vec<(f64, f64)>,
    /// The estimated noise of one test (a robust standard deviation).
    pub noise: f64,
    /// Where the rise stops: the smoothed curve has made nine tenths of its rise.
    pub rise_stops_lr: Option<f64>,
    /// Where the curve turns ragged: the first test past the middle of the rise that is
    /// three noise deviations (and a tenth of the rise) off the smoothed curve.
    pub ragged_lr: Option<f64>,
}

impl Suggestion {
    /// The paper's rule of thumb from `max_lr`: `base_lr` = `max_lr`/3 and `max_lr`/4.
    pub fn rule_of_thumb(&self) -> Option<(f64, f64)> {
        self.max_lr.as_ref().ok().map(|&m| (m / 3.0, m / 4.0))
    }
}

/// Reads `base_lr` and `max_lr` from (lr, accuracy) points, as the paper reads its figure 3:
/// the curve is smoothed (running median, then running mean, over about an eighth of the
/// points), `base_lr` is where it has made a tenth of its rise above its lowest level before the
/// peak, `max_lr` where the rise stops (nine tenths of it made; never past the peak, where the
/// curve falls) or, if earlier, where the curve turns ragged (a test far off the smoothed curve
/// past the middle of the rise). A rise within the noise gives no bounds; a curve still climbing
/// at its end gives no `max_lr`. Non-finite points are ignored.
pub fn suggest_bounds(points: &[(f64, f64)]) -> Suggestion {
    let mut points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(lr, acc)| lr.is_finite() && acc.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = points.len();
    if n < MIN_POINTS {
        let none = NoBound::TooFewPoints { count: n };
        return Suggestion {
            base_lr: Err(none.clone()),
            max_lr: Err(none),
            smoothed: points,
            noise: f64::NAN,
            rise_stops_lr: None,
            ragged_lr: None,
        };
    }
    let lrs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let accuracy: Vec<f64> = points.iter().map(|p| p.1).collect();
    let window = (n / 8).max(3) | 1;
    // The median takes out single wild tests and keeps corners where they are; the mean after
    // it takes out the rest of the noise.
    let smooth = running_mean(&running_median(&accuracy, window), window);
    let residuals: Vec<f64> = accuracy
        .iter()
        .zip(&smooth)
        .map(|(a, s)| (a - s).abs())
        .collect();
    let noise = 1.4826 * median(&residuals);
    let smoothed: Vec<(f64, f64)> = lrs.iter().copied().zip(smooth.iter().copied()).collect();

    let peak = argmax(&smooth);
    let low_index = argmin(&smooth[..=peak]);
    let low = smooth[low_index];
    let rise = smooth[peak] - low;
    if rise < MIN_RISE.max(RISE_OVER_NOISE * noise) {
        let none = NoBound::NoRise { rise, noise };
        return Suggestion {
            base_lr: Err(none.clone()),
            max_lr: Err(none),
            smoothed,
            noise,
            rise_stops_lr: None,
            ragged_lr: None,
        };
    }
    let crossing = |fraction: f64| {
        let level = low + fraction * rise;
        let i = (low_index..=peak)
            .find(|&i| smooth[i] >= level)
            .unwrap_or(peak);
        if i == 0 || smooth[i] == smooth[i - 1] {
            return lrs[i];
        }
        // Between the last point below the level and the first at or above it.
        let t = (level - smooth[i - 1]) / (smooth[i] - smooth[i - 1]);
        lrs[i - 1] + t.clamp(0.0, 1.0) * (lrs[i] - lrs[i - 1])
    };
    let base_lr = crossing(START_FRACTION);
    let top_lr = crossing(TOP_FRACTION);
    // Ragged: a test far off the smoothed curve once the steep part of the rise is over (in
    // the steep part a test a little early or late is far off too, and means nothing).
    let half_rise_lr = crossing(0.5);
    let far_off = (RAGGED_DEVIATIONS * noise).max(RAGGED_MIN_FRACTION * rise);
    let ragged_lr = (0..n)
        .find(|&i| lrs[i] > half_rise_lr && residuals[i] > far_off)
        .map(|i| lrs[i]);
    let slowing_lr = ragged_lr.map_or(top_lr, |ragged| top_lr.min(ragged));

    // Still climbing at the end: the peak is among the last half-window of points and the last
    // window's slope is at least half the slope of the main rise.
    let last = n - 1;
    let tail = last - (window - 1).min(last);
    let end_slope = (smooth[last] - smooth[tail]) / (lrs[last] - lrs[tail]).max(f64::MIN_POSITIVE);
    let rise_slope =
        (TOP_FRACTION - START_FRACTION) * rise / (top_lr - base_lr).max(f64::MIN_POSITIVE);
    let still_rising = peak + window / 2 >= last && end_slope >= 0.5 * rise_slope;
    let max_lr = if still_rising {
        Err(NoBound::StillRising { at_lr: lrs[last] })
    } else {
        Ok(slowing_lr)
    };
    Suggestion {
        base_lr: Ok(base_lr),
        max_lr,
        smoothed,
        noise,
        rise_stops_lr: Some(top_lr),
        ragged_lr,
    }
}

fn window_bounds(i: usize, n: usize, window: usize) -> std::ops::Range<usize> {
    let half = window / 2;
    i.saturating_sub(half)..(i + half + 1).min(n)
}

fn running_median(values: &[f64], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| median(&values[window_bounds(i, values.len(), window)]))
        .collect()
}

fn running_mean(values: &[f64], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let part = &values[window_bounds(i, values.len(), window)];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// The first index of the largest value.
fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// The first index of the smallest value.
fn argmin(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v < values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_helpers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(
            running_median(&[0.0, 9.0, 0.0, 0.0], 3),
            vec![4.5, 0.0, 0.0, 0.0]
        );
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmin(&[2.0, 1.0, 1.0]), 1);
    }
}
