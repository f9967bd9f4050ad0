//! Prefetching: a background thread fills the next host batches while the net computes
//! (upstream's `BasePrefetchingDataLayer`, src/caffe/layers/base_data_layer.cpp).
//!
//! `count` batches (upstream's `data_param.prefetch`, default 4) circulate between two bounded
//! channels: the thread takes an empty batch from the *free* channel, fills it through a
//! [`BatchSource`] and sends it down the *full* channel; the layer takes a full batch, uploads
//! it, and hands it back with [`Prefetcher::recycle`].
//!
//! * An error while filling (a bad record, a failed read) is sent down the full channel in
//!   place of the batch, so the layer's next forward pass returns it; the thread then stops.
//!   A panic in the thread is reported the same way, with its message; nothing hangs.
//! * Dropping the [`Prefetcher`] closes both channels, which ends the thread at its next
//!   channel operation (it finishes the batch it is filling first), then joins it.
//! * Every batch travels with the time the thread spent filling it (and, where the source
//!   measures it, the read/transform split); [`Prefetcher::stats`] sums these over the batches
//!   taken, with the time [`Prefetcher::next_batch`] waited for them: whether data loading
//!   keeps up with the net (`rcaffe time` reports it).

use std::sync::mpsc::{self, Receiver, RecvError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DataError, Result};
use crate::backend::resize_host_buffer;

/// One host batch: the data with its shape, and one label per item (empty when the layer
/// has no label top).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub labels: Vec<f32>,
}

impl Batch {
    /// Shapes the batch: `shape` (records first) for the data and, `with_labels`, a label per
    /// record. Memory that cannot be had is an error naming the bytes, as is a shape over a
    /// blob's element limit (the batch is copied into the layer's top blob).
    pub fn reshape(&mut self, shape: [usize; 4], with_labels: bool) -> Result<()> {
        const OP: &str = "data batch";
        let count = crate::blob::checked_count(&shape)
            .map_err(|e| DataError::invalid(format!("{OP}: {e}")))?;
        let labels = if with_labels { shape[0] } else { 0 };
        let unavailable = |e: crate::backend::BackendError| DataError::invalid(e.to_string());
        resize_host_buffer(OP, &mut self.data, count, 0.0).map_err(unavailable)?;
        resize_host_buffer(OP, &mut self.labels, labels, 0.0).map_err(unavailable)?;
        self.shape = shape.to_vec();
        Ok(())
    }
}

/// What fills batches on the prefetch thread.
pub trait BatchSource: Send + 'static {
    /// Fills `batch` (reshaping it as needed) with the next records.
    fn fill(&mut self, batch: &mut Batch) -> Result<()>;

    /// How the last [`fill`](Self::fill) split its time: (reading records, transforming
    /// them). `None` (the default) when the source does not measure it.
    fn last_fill_split(&mut self) -> Option<(Duration, Duration)> {
        None
    }
}

/// Data-loading times summed over the batches a layer took (upstream's Data layer logs the
/// same quantities per batch at debug level: `Prefetch batch`, `Read time`, `Transform time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Batches taken by forward passes.
    pub batches: u64,
    /// Time the prefetch thread spent filling those batches (read + transform).
    pub prefetch: Duration,
    /// Of `prefetch`, reading records (fetching and parsing them); zero when not measured.
    pub read: Duration,
    /// Of `prefetch`, transforming them (decoding, cropping, mirroring, mean, scale); zero
    /// when not measured.
    pub transform: Duration,
    /// Time forward passes waited for the thread to have a batch ready.
    pub wait: Duration,
}

impl LoadStats {
    /// The stats accumulated since `earlier` (a copy taken from the same layer before).
    pub fn since(&self, earlier: &LoadStats) -> LoadStats {
        LoadStats {
            batches: self.batches.saturating_sub(earlier.batches),
            prefetch: self.prefetch.saturating_sub(earlier.prefetch),
            read: self.read.saturating_sub(earlier.read),
            transform: self.transform.saturating_sub(earlier.transform),
            wait: self.wait.saturating_sub(earlier.wait),
        }
    }

    /// Adds `other` to these stats (several data layers in one net).
    pub fn add(&mut self, other: &LoadStats) {
        self.batches += other.batches;
        self.prefetch += other.prefetch;
        self.read += other.read;
        self.transform += other.transform;
        self.wait += other.wait;
    }
}

/// What the thread sends with each filled batch: total fill time and the optional split.
#[derive(Debug, Clone, Copy)]
struct FillTimes {
    total: Duration,
    split: Option<(Duration, Duration)>,
}

/// A running prefetch thread and its channels. See the [module documentation](self).
pub struct Prefetcher {
    name: String,
    full: Option<Receiver<Result<(Batch, FillTimes)>>>,
    free: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<()>>,
    failed: Option<String>,
    stats: LoadStats,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prefetcher({})", self.name)
    }
}

impl Prefetcher {
    /// Starts the thread (named `prefetch <name>`) with `count` empty batches.
    pub fn start<S: BatchSource>(name: &str, count: usize, mut source: S) -> Result<Self> {
        if count == 0 {
            return Err(DataError::invalid(
                "data_param.prefetch must be at least 1 (batches prepared ahead)",
            ));
        }
        let (free_tx, free_rx) = mpsc::sync_channel::<Batch>(count);
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<(Batch, FillTimes)>>(count);
        for _ in 0..count {
            free_tx
                .send(Batch::default())
                .expect("the receiver is alive and the channel has room for every batch");
        }
        let thread = std::thread::Builder::new()
            .name(format!("prefetch {name}"))
            .spawn(move || {
                // Ends when either channel is closed (the Prefetcher was dropped) or after
                // sending an error.
                while let Ok(mut batch) = free_rx.recv() {
                    let start = Instant::now();
                    match source.fill(&mut batch) {
                        Ok(()) => {
                            let times = FillTimes {
                                total: start.elapsed(),
                                split: source.last_fill_split(),
                            };
                            if full_tx.send(Ok((batch, times))).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| {
                DataError::invalid(format!("cannot start the prefetch thread for {name}: {e}"))
            })?;
        Ok(Prefetcher {
            name: name.to_string(),
            full: Some(full_rx),
            free: Some(free_tx),
            thread: Some(thread),
            failed: None,
            stats: LoadStats::default(),
        })
    }

    /// The next full batch, waiting for the thread if it is not ready. Returns the thread's
    /// error (once; later calls say the thread has stopped and why).
    pub fn next_batch(&mut self) -> Result<Batch> {
        if let Some(message) = &self.failed {
            return Err(DataError::invalid(format!(
                "the prefetch thread of {} stopped after an error: {message}",
                self.name
            )));
        }
        let full = self.full.as_ref().expect("the channels live until drop");
        let start = Instant::now();
        let received = full.recv();
        self.stats.wait += start.elapsed();
        match received {
            Ok(Ok((batch, times))) => {
                self.stats.batches += 1;
                self.stats.prefetch += times.total;
                if let Some((read, transform)) = times.split {
                    self.stats.read += read;
                    self.stats.transform += transform;
                }
                Ok(batch)
            }
            Ok(Err(e)) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
            Err(RecvError) => {
                let message = self.join_message();
                self.failed = Some(message.clone());
                Err(DataError::invalid(format!(
                    "the prefetch thread of {} stopped: {message}",
                    self.name
                )))
            }
        }
    }

    /// Loading times summed over the batches taken so far (see [`LoadStats`]).
    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// Hands a batch back to the thread for refilling.
    pub fn recycle(&mut self, batch: Batch) {
        if let Some(free) = &self.free {
            // Fails only when the thread has ended; the batch is then simply dropped.
            let _ = free.try_send(batch);
        }
    }

    /// Why the thread ended without sending an error: its panic message.
    fn join_message(&mut self) -> String {
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(payload)) => {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                format!("it panicked: {text}")
            }
            _ => "it ended unexpectedly".to_string(),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing both channels makes the thread's next send or receive fail.
        drop(self.free.take());
        drop(self.full.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
