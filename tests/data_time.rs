//! `rcaffe time` on a Data-fed net reports data loading beside the per-layer table: the
//! prefetch thread's time per batch (read + transform) and forward's wait for it (its own test
//! binary: it installs a logger that keeps every line).

use std::path::Path;
use std::sync::{Mutex, Once};
use std::time::Duration;

use rcaffe::backend::rng_from_seed;
use rcaffe::benchmark::time_net;
use rcaffe::data::prefetch::{Batch, BatchSource, LoadStats, Prefetcher};
use rcaffe::data::{convert_mnist, DataError};
use rcaffe::net::Net;
use rcaffe::proto::parse_text;
use rcaffe::testing::cpu;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Held by each test that times a net: their lines would interleave in [`LINES`] otherwise.
static TIMING: Mutex<()> = Mutex::new(());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn keep_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_boxed_logger(Box::new(Keep)).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The bundled Fashion-MNIST training images as an LMDB in `dir`.
fn mnist_lmdb(dir: &Path) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-mini");
    let lmdb = dir.join("fmnist_train_lmdb");
    let count = convert_mnist(
        &data.join("train-images-idx3-ubyte.gz"),
        &data.join("train-labels-idx1-ubyte.gz"),
        &lmdb,
    )
    .unwrap();
    assert_eq!(count, 6000);
    lmdb
}

fn net(text: &str) -> Net<rcaffe::backend::CpuBackend> {
    let param = parse_text(text, Path::new("<test net>")).expect("test net prototxt");
    Net::new(&param, &cpu(), rng_from_seed(5)).unwrap()
}

#[test]
fn time_reports_the_data_layers_loading() {
    let _alone = TIMING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    keep_log();
    let dir = tempfile::tempdir().unwrap();
    let lmdb = mnist_lmdb(dir.path());
    let mut net = net(&format!(
        r#"name: "timed" state {{ phase: TRAIN }}
        layer {{ name: "fmnist_data" type: "Data" top: "data" top: "label"
          transform_param {{ scale: 0.00390625 mirror: true crop_size: 24 }}
          data_param {{ source: "{}" batch_size: 32 backend: LMDB }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}"#,
        lmdb.display()
    ));
    let iterations = 6;
    let timing = time_net(&mut net, iterations).unwrap();

    // One data layer, its stats over the timed iterations: one batch each.
    assert_eq!(timing.data_load.len(), 1);
    let (name, stats) = &timing.data_load[0];
    assert_eq!(name, "fmnist_data");
    assert_eq!(stats.batches, u64::from(iterations));
    assert!(stats.prefetch > Duration::ZERO, "{stats:?}");
    assert!(stats.read > Duration::ZERO, "{stats:?}");
    assert!(stats.transform > Duration::ZERO, "{stats:?}");
    // Read and transform are parts of the thread's time per batch.
    assert!(stats.read + stats.transform <= stats.prefetch, "{stats:?}");
    // Forward waited inside the data layer's forward time (averages round down by at most a
    // nanosecond per iteration).
    let data_forward =
        timing.layers[0].1 * iterations + Duration::from_nanos(u64::from(iterations));
    assert!(stats.wait <= data_forward, "{stats:?} vs {data_forward:?}");
    assert_eq!(timing.data_load_total(), *stats);

    // The layer's own count includes the untimed warm-up pass.
    let all = net
        .layer(0)
        .load_stats()
        .expect("a Data layer reports its loading");
    assert_eq!(all.batches, u64::from(iterations) + 1);
    assert!(all.prefetch >= stats.prefetch && all.wait >= stats.wait);
    assert_eq!(all.since(&all), LoadStats::default());
    // Other layers report nothing.
    assert!(net.layer(1).load_stats().is_none());

    // The lines come after upstream's per-layer table, before its totals.
    let lines = LINES.lock().unwrap().clone();
    let position = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in {lines:#?}"))
    };
    let last_layer = position("      loss\tbackward: ");
    let heading = position("Average data loading per iteration (prefetch thread): ");
    let prefetch = position("fmnist_data\tPrefetch batch: ");
    let read = position("fmnist_data\t     Read time: ");
    let transform = position("fmnist_data\tTransform time: ");
    let wait = position("fmnist_data\tWait for batch: ");
    let verdict = position("Data loading: ");
    let totals = position("Average Forward pass: ");
    assert!(last_layer < heading && heading < prefetch && prefetch < read);
    assert!(read < transform && transform < wait && wait < verdict && verdict < totals);
    assert!(lines[prefetch].ends_with(&format!(" ms ({iterations} batches).")));
    assert!(
        lines[verdict].ends_with(": data loading keeps up.")
            || lines[verdict].ends_with(": data loading is the bottleneck."),
        "{}",
        lines[verdict]
    );
}

#[test]
fn a_net_without_a_data_layer_reports_no_loading() {
    let _alone = TIMING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut net = net(r#"name: "dummy" state { phase: TRAIN }
        layer { name: "x" type: "DummyData" top: "x" top: "y"
          dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
            data_filler { type: "gaussian" } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
          inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }"#);
    let timing = time_net(&mut net, 2).unwrap();
    assert!(timing.data_load.is_empty());
    assert_eq!(timing.data_load_total(), LoadStats::default());
}

/// Takes `delay` per batch, without a read/transform split.
struct Slow {
    delay: Duration,
}

impl BatchSource for Slow {
    fn fill(&mut self, batch: &mut Batch) -> Result<(), DataError> {
        std::thread::sleep(self.delay);
        batch.shape = vec![1];
        batch.data = vec![1.0];
        Ok(())
    }
}

#[test]
fn a_slow_source_shows_as_prefetch_time_and_waiting() {
    let delay = Duration::from_millis(15);
    let mut prefetcher = Prefetcher::start("slow", 1, Slow { delay }).unwrap();
    assert_eq!(prefetcher.stats(), LoadStats::default());
    for _ in 0..3 {
        let batch = prefetcher.next_batch().unwrap();
        prefetcher.recycle(batch);
    }
    let stats = prefetcher.stats();
    assert_eq!(stats.batches, 3);
    assert!(stats.prefetch >= 3 * delay, "{stats:?}");
    // One batch ahead: the second and third were refilled only once handed back.
    assert!(stats.wait >= 2 * delay, "{stats:?}");
    // Not measured by this source.
    assert_eq!(
        (stats.read, stats.transform),
        (Duration::ZERO, Duration::ZERO)
    );
}
