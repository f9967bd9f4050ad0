//! The dataset converters, as upstream's tools: `convert-mnist`, `convert-mnist-siamese`,
//! `convert-cifar`, `convert-imageset` and `compute-image-mean`, with their progress bar.

use anyhow::Result;
use rcaffe::data;
use std::path::PathBuf;

/// `rcaffe convert-mnist`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ConvertMnistArgs {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub output: PathBuf,
    /// The database to write: lmdb or leveldb.
    #[arg(long, default_value = "lmdb")]
    pub backend: data::DbBackend,
}

/// `rcaffe convert-mnist`: IDX images and labels into a database of Datums.
pub fn convert_mnist(args: ConvertMnistArgs) -> Result<()> {
    let ConvertMnistArgs {
        images,
        labels,
        output,
        backend,
    } = args;
    let mut bar = ProgressBar::new();
    let written =
        data::convert_mnist_with(&images, &labels, &output, backend, &mut |p| bar.show(p))?;
    bar.finish();
    println!("Wrote {written} records to {}", output.display());
    Ok(())
}

/// `rcaffe convert-mnist-siamese`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ConvertMnistSiameseArgs {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub output: PathBuf,
    /// The database to write: leveldb (upstream's) or lmdb.
    #[arg(long, default_value = "leveldb")]
    pub backend: data::DbBackend,
    /// Seed of the random pairing (upstream's pairs differ from run to run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `rcaffe convert-mnist-siamese`: IDX images and labels into a database of random pairs.
pub fn convert_mnist_siamese(args: ConvertMnistSiameseArgs) -> Result<()> {
    let ConvertMnistSiameseArgs {
        images,
        labels,
        output,
        backend,
        seed,
    } = args;
    let mut bar = ProgressBar::new();
    let written =
        data::convert_mnist_siamese(&images, &labels, &output, backend, seed, &mut |p| {
            bar.show(p)
        })?;
    bar.finish();
    println!("Wrote {written} pairs to {}", output.display());
    Ok(())
}

/// `rcaffe convert-cifar`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ConvertCifarArgs {
    pub dir: PathBuf,
    pub out_dir: PathBuf,
    /// The database to write (lmdb or leveldb), upstream's third argument.
    #[arg(default_value = "lmdb")]
    pub backend: data::DbBackend,
}

/// `rcaffe convert-cifar`: CIFAR-10's binary batches into a train and a test database.
pub fn convert_cifar(args: ConvertCifarArgs) -> Result<()> {
    let ConvertCifarArgs {
        dir,
        out_dir,
        backend,
    } = args;
    let mut bar = ProgressBar::new();
    let summary = data::convert_cifar_with(&dir, &out_dir, backend, &mut |p| bar.show(p))?;
    bar.finish();
    println!(
        "Wrote {} records to {} and {} to {}",
        summary.train,
        summary.train_db.display(),
        summary.test,
        summary.test_db.display()
    );
    Ok(())
}

/// `rcaffe mnist-to-cifar`'s arguments.
#[derive(clap::Args, Debug)]
pub struct MnistToCifarArgs {
    /// The folder holding MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (gzip-compressed or not).
    pub dir: PathBuf,
    /// Where to write the batches (created if need be; existing batches are not overwritten).
    pub out_dir: PathBuf,
}

/// `rcaffe mnist-to-cifar`: MNIST's IDX files as CIFAR-10's binary batches.
pub fn mnist_to_cifar(args: MnistToCifarArgs) -> Result<()> {
    let made = data::cifar_from_mnist::mnist_to_cifar(&args.dir, &args.out_dir)?;
    println!(
        "Wrote {} training records to {} batches and {} test records to {} in {}",
        made.train,
        made.train_batches.len(),
        made.test,
        made.test_batch.display(),
        args.out_dir.display()
    );
    Ok(())
}

/// `rcaffe convert-imageset`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ConvertImagesetArgs {
    pub root: PathBuf,
    pub list: PathBuf,
    pub output: PathBuf,
    /// Resize images to this height (with --resize-width).
    #[arg(long, default_value_t = 0)]
    pub resize_height: u32,
    /// Resize images to this width (with --resize-height).
    #[arg(long, default_value_t = 0)]
    pub resize_width: u32,
    /// Shuffle the list before writing.
    #[arg(long)]
    pub shuffle: bool,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Read the images as grey.
    #[arg(long)]
    pub gray: bool,
    /// Store encoded images (the files themselves) instead of raw pixels.
    #[arg(long)]
    pub encoded: bool,
    /// Re-encode as this type (png, jpg); implies --encoded.
    #[arg(long, default_value = "")]
    pub encode_type: String,
    /// Check that all records have the same size.
    #[arg(long)]
    pub check_size: bool,
    /// The database to write: lmdb or leveldb.
    #[arg(long, default_value = "lmdb")]
    pub backend: data::DbBackend,
}

/// `rcaffe convert-imageset`: the images of a "path label" list into a database of Datums.
pub fn convert_imageset(args: ConvertImagesetArgs) -> Result<()> {
    let ConvertImagesetArgs {
        root,
        list,
        output,
        resize_height,
        resize_width,
        shuffle,
        seed,
        gray,
        encoded,
        encode_type,
        check_size,
        backend,
    } = args;
    let options = data::ImagesetOptions {
        resize_height,
        resize_width,
        shuffle,
        seed,
        gray,
        encoded,
        encode_type,
        check_size,
        backend,
    };
    let mut bar = ProgressBar::new();
    let summary =
        data::convert_imageset_with(&root, &list, &output, &options, &mut |p| bar.show(p))?;
    bar.finish();
    println!(
        "Wrote {} of {} images to {} ({} skipped)",
        summary.written,
        summary.total,
        output.display(),
        summary.skipped.len()
    );
    Ok(())
}

/// `rcaffe compute-image-mean`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ComputeImageMeanArgs {
    pub db: PathBuf,
    /// Where to write the mean as a .binaryproto.
    pub output: Option<PathBuf>,
    /// The database to read: lmdb or leveldb.
    #[arg(long, default_value = "lmdb")]
    pub backend: data::DbBackend,
}

/// `rcaffe compute-image-mean`: a database's mean image, written if asked, and its channel
/// means.
pub fn compute_image_mean(args: ComputeImageMeanArgs) -> Result<()> {
    let ComputeImageMeanArgs {
        db,
        output,
        backend,
    } = args;
    let mut bar = ProgressBar::new();
    let mean =
        data::compute_image_mean_with(&db, backend, output.as_deref(), &mut |p| bar.show(p))?;
    bar.finish();
    let means: Vec<String> = mean.channel_means.iter().map(|m| m.to_string()).collect();
    println!(
        "Mean of {} images; per-channel means (for mean_value): {}",
        mean.count,
        means.join(", ")
    );
    Ok(())
}

/// A converter's progress bar: one redrawn line, only when stderr is a terminal.
struct ProgressBar {
    line: Option<rcaffe::progress::TerminalLine>,
    last: String,
}

impl ProgressBar {
    fn new() -> Self {
        Self {
            line: rcaffe::progress::TerminalLine::if_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, progress: data::Progress<'_>) {
        let Some(line) = &mut self.line else { return };
        if !(line.due() || progress.done == progress.total) {
            return;
        }
        let fraction = if progress.total == 0 {
            1.0
        } else {
            progress.done as f64 / progress.total as f64
        };
        let filled = ((fraction * 30.0).round() as usize).min(30);
        self.last = format!(
            "{:>8} [{}{}] {}/{} ({:.0}%)",
            progress.stage,
            "#".repeat(filled),
            " ".repeat(30 - filled),
            progress.done,
            progress.total,
            fraction * 100.0
        );
        line.draw(&self.last);
    }

    fn finish(&mut self) {
        if let (Some(line), false) = (&mut self.line, self.last.is_empty()) {
            line.finish(&self.last);
        }
    }
}
