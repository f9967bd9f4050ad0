//! `rcaffe time`: per-layer forward and backward times of a net, as upstream's `caffe time`
//! (tools/caffe.cpp) measures and words them, so the two tables read side by side.

use crate::backend::Backend;
use crate::blob::BlobError;
use crate::net::{cpp_float, Net, Result};
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
    let average = |d: Duration| d / iterations;
    let layers: Vec<(String, Duration, Duration)> = net
        .layer_names()
        .iter()
        .zip(forward_per_layer.iter().zip(&backward_per_layer))
        .map(|(name, (&f, &b))| (name.clone(), average(f), average(b)))
        .collect();
    log::info!("Average time per layer: ");
    for (name, f, b) in &layers {
        log::info!("{name:>10}\tforward: {} ms.", milliseconds(*f));
        log::info!("{name:>10}\tbackward: {} ms.", milliseconds(*b));
    }
    let timing = Timing {
        iterations,
        layers,
        forward: average(forward),
        backward: average(backward),
        forward_backward: average(total),
        total,
    };
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
