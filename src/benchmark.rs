//! `rcaffe time`: per-layer forward and backward times of a net, as upstream's `caffe time`
//! (tools/caffe.cpp) measures and words them, so the two tables read side by side.
//!
//! After upstream's per-layer lines comes what upstream's `caffe time` leaves out: for each
//! prefetching data layer, how long its prefetch thread took to produce the batches of an
//! iteration (read + transform, upstream's debug-level `Prefetch batch` / `Read time` /
//! `Transform time` words) and how long forward waited for them, then whether data loading is
//! the bottleneck.
//!
//! Then the arithmetic rate: for each layer that multiplies matrices (Convolution,
//! Deconvolution, InnerProduct) the FLOPs of its products (two per multiply-add, the usual GEMM
//! count) over its time, forward and backward, and the same over the whole iteration. The other
//! layers move memory rather than compute and get no rate.
//!
//! `rcaffe time -solver` times whole training iterations instead ([`training`]).

pub mod training;

use crate::backend::Backend;
use crate::blob::BlobError;
use crate::data::prefetch::LoadStats;
use crate::log::cpp_float;
use crate::net::{Net, Result};
use std::time::{Duration, Instant};

/// Average times over the timed iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub iterations: u32,
    /// Per layer, in net order: (name, forward, backward).
    pub layers: Vec<(String, Duration, Duration)>,
    pub forward: Duration,
    pub backward: Duration,
    pub forward_backward: Duration,
    pub total: Duration,
    /// Per prefetching data layer, in net order: its name and its loading times summed over
    /// the timed iterations (not averaged; `batches` counts the batches taken).
    pub data_load: Vec<(String, LoadStats)>,
    /// Per layer, in net order: the FLOPs of one forward and one backward pass (0 for layers
    /// that do not multiply matrices).
    pub flops: Vec<(u64, u64)>,
}

impl Timing {
    /// The data layers' loading times summed together.
    pub fn data_load_total(&self) -> LoadStats {
        let mut total = LoadStats::default();
        for (_, stats) in &self.data_load {
            total.add(stats);
        }
        total
    }

    /// FLOPs of one forward-backward iteration, summed over the layers.
    pub fn iteration_flops(&self) -> u64 {
        self.flops.iter().map(|&(f, b)| f + b).sum()
    }
}

/// The FLOPs of layer `i`'s matrix products in one forward and one backward pass, from its
/// weight and blob shapes: each output of a Convolution or InnerProduct is a dot product over
/// `weight.count() / outputs` terms (per group), each input of a Deconvolution likewise.
/// Backward repeats that product once for the weight gradient and once for the data gradient,
/// for each one the layer's backward computes.
pub fn layer_flops<B: Backend>(net: &Net<B>, i: usize) -> (u64, u64) {
    let Some(&weight_id) = net.layer_learnable_ids(i).first() else {
        return (0, 0);
    };
    let weight = &net.learnable_params()[weight_id];
    let Some(&rows) = weight.shape().first() else {
        return (0, 0);
    };
    if rows == 0 {
        return (0, 0);
    }
    let count = |ids: &[usize]| -> u64 { ids.iter().map(|&b| net.blobs()[b].count() as u64).sum() };
    let forward = match net.layer_type(i) {
        "Convolution" => 2 * count(net.top_ids(i)) * (weight.count() / rows) as u64,
        "Deconvolution" => 2 * count(net.bottom_ids(i)) * (weight.count() / rows) as u64,
        "InnerProduct" => {
            let outputs = net
                .layer_param(i)
                .inner_product_param
                .as_ref()
                .map_or(0, |p| p.num_output() as u64);
            if outputs == 0 {
                return (0, 0);
            }
            2 * count(net.top_ids(i)) / outputs * weight.count() as u64
        }
        _ => return (0, 0),
    };
    // `time` runs every layer's backward, as upstream's does: the weight gradient whenever the
    // parameter learns, even in a net without a loss.
    let weight_grad = net
        .param_propagate_down(i)
        .first()
        .copied()
        .unwrap_or(false);
    let data_grad = net.bottom_need_backward(i).iter().any(|&b| b);
    (
        forward,
        forward * (u64::from(weight_grad) + u64::from(data_grad)),
    )
}

/// `flops` done in `time`, in GFLOP/s.
fn gflops(flops: u64, time: Duration) -> String {
    if flops == 0 || time.is_zero() {
        return "-".to_string();
    }
    format!("{:.1}", flops as f64 / time.as_secs_f64() / 1e9)
}

fn milliseconds(duration: Duration) -> String {
    cpp_float(duration.as_secs_f64() * 1e3)
}

/// Runs one untimed forward/backward pass (allocations settle), then `iterations` timed ones,
/// layer by layer, logging upstream's lines; returns the averages.
pub fn time_net<B: Backend>(net: &mut Net<B>, iterations: u32) -> Result<Timing> {
    let iterations = iterations.max(1);
    log::info!("Performing Forward");
    let initial_loss = net.forward()?;
    log::info!("Initial loss: {}", cpp_float(f64::from(initial_loss)));
    log::info!("Performing Backward");
    net.backward()?;

    let layer_count = net.num_layers();
    let mut forward_per_layer = vec![Duration::ZERO; layer_count];
    let mut backward_per_layer = vec![Duration::ZERO; layer_count];
    let (mut forward, mut backward) = (Duration::ZERO, Duration::ZERO);
    let load_before: Vec<Option<LoadStats>> = (0..layer_count)
        .map(|i| net.layer(i).load_stats())
        .collect();
    log::info!("*** Benchmark begins ***");
    log::info!("Testing for {iterations} iterations.");
    let total_start = Instant::now();
    for iteration in 1..=iterations {
        let iteration_start = Instant::now();
        for (layer, time) in forward_per_layer.iter_mut().enumerate() {
            let start = Instant::now();
            net.forward_from_to(layer, layer)?;
            net.backend().synchronize().map_err(BlobError::from)?;
            *time += start.elapsed();
        }
        forward += iteration_start.elapsed();
        let backward_start = Instant::now();
        for (layer, time) in backward_per_layer.iter_mut().enumerate().rev() {
            let start = Instant::now();
            net.backward_layer(layer)?;
            net.backend().synchronize().map_err(BlobError::from)?;
            *time += start.elapsed();
        }
        backward += backward_start.elapsed();
        log::info!(
            "Iteration: {iteration} forward-backward time: {} ms.",
            milliseconds(iteration_start.elapsed())
        );
    }
    let total = total_start.elapsed();
    let data_load: Vec<(String, LoadStats)> = load_before
        .iter()
        .enumerate()
        .filter_map(|(i, before)| {
            let after = net.layer(i).load_stats()?;
            let before = before.unwrap_or_default();
            Some((net.layer_name(i).to_string(), after.since(&before)))
        })
        .collect();
    let average = |d: Duration| d / iterations;
    let layers: Vec<(String, Duration, Duration)> = net
        .layer_names()
        .zip(forward_per_layer.iter().zip(&backward_per_layer))
        .map(|(name, (&f, &b))| (name.to_string(), average(f), average(b)))
        .collect();
    log::info!("Average time per layer: ");
    for (name, f, b) in &layers {
        log::info!("{name:>10}\tforward: {} ms.", milliseconds(*f));
        log::info!("{name:>10}\tbackward: {} ms.", milliseconds(*b));
    }
    let flops: Vec<(u64, u64)> = (0..layer_count).map(|i| layer_flops(net, i)).collect();
    let timing = Timing {
        iterations,
        layers,
        forward: average(forward),
        backward: average(backward),
        forward_backward: average(total),
        total,
        data_load,
        flops,
    };
    log_rates(&timing);
    log_data_load(&timing);
    log::info!("Average Forward pass: {} ms.", milliseconds(timing.forward));
    log::info!(
        "Average Backward pass: {} ms.",
        milliseconds(timing.backward)
    );
    log::info!(
        "Average Forward-Backward: {} ms.",
        milliseconds(timing.forward_backward)
    );
    log::info!("Total Time: {} ms.", milliseconds(timing.total));
    log::info!("*** Benchmark ends ***");
    Ok(timing)
}

/// The arithmetic-rate lines: per layer with matrix products, its GFLOP and GFLOP/s forward
/// and backward, then the whole iteration's.
fn log_rates(timing: &Timing) {
    if timing.iteration_flops() == 0 {
        return;
    }
    log::info!("Achieved GFLOP/s per layer (matrix products, 2 FLOPs per multiply-add): ");
    for ((name, f, b), &(ff, bf)) in timing.layers.iter().zip(&timing.flops) {
        if ff == 0 {
            continue;
        }
        log::info!(
            "{name:>10}	forward: {} GFLOP/s ({} GFLOP).",
            gflops(ff, *f),
            cpp_float(ff as f64 / 1e9)
        );
        if bf > 0 {
            log::info!(
                "{name:>10}	backward: {} GFLOP/s ({} GFLOP).",
                gflops(bf, *b),
                cpp_float(bf as f64 / 1e9)
            );
        }
    }
    let forward: u64 = timing.flops.iter().map(|&(f, _)| f).sum();
    let backward: u64 = timing.flops.iter().map(|&(_, b)| b).sum();
    log::info!(
        "Iteration: {} GFLOP; Forward {} GFLOP/s, Backward {} GFLOP/s, Forward-Backward {} \
         GFLOP/s.",
        cpp_float(timing.iteration_flops() as f64 / 1e9),
        gflops(forward, timing.forward),
        gflops(backward, timing.backward),
        gflops(timing.iteration_flops(), timing.forward_backward)
    );
}

/// The data-loading lines: per data layer, the prefetch thread's time per iteration (read +
/// transform) and forward's wait for it, then a verdict on whether loading is the bottleneck.
fn log_data_load(timing: &Timing) {
    if timing.data_load.is_empty() {
        return;
    }
    let average = |d: Duration| d / timing.iterations;
    log::info!("Average data loading per iteration (prefetch thread): ");
    for (name, stats) in &timing.data_load {
        log::info!(
            "{name:>10}\tPrefetch batch: {} ms ({} batches).",
            milliseconds(average(stats.prefetch)),
            stats.batches
        );
        log::info!(
            "{name:>10}\t     Read time: {} ms.",
            milliseconds(average(stats.read))
        );
        log::info!(
            "{name:>10}\tTransform time: {} ms.",
            milliseconds(average(stats.transform))
        );
        log::info!(
            "{name:>10}\tWait for batch: {} ms.",
            milliseconds(average(stats.wait))
        );
    }
    let total = timing.data_load_total();
    let loading = average(total.prefetch);
    let wait = average(total.wait);
    // The net computes for the forward-backward time less the waits; the prefetch thread runs
    // beside it, so loading holds the net back when it takes longer than that.
    let computing = timing.forward_backward.saturating_sub(wait);
    let share = if timing.forward_backward.is_zero() {
        0.0
    } else {
        100.0 * wait.as_secs_f64() / timing.forward_backward.as_secs_f64()
    };
    let verdict = if loading > computing {
        "data loading is the bottleneck"
    } else {
        "data loading keeps up"
    };
    log::info!(
        "Data loading: {} ms per iteration beside {} ms of computing; forward waited {} ms \
         ({}% of Forward-Backward): {verdict}.",
        milliseconds(loading),
        milliseconds(computing),
        milliseconds(wait),
        cpp_float((share * 10.0).round() / 10.0)
    );
}
