//! CPU backend op benchmarks at the shapes of the zoo's layers.
//!
//! `cargo bench --bench ops` (or `-- conv` etc. for one group); throughput for GEMM and the
//! batch convolutions is reported in elements/s where one "element" is one floating-point
//! operation (2 m n k per product), i.e. FLOP/s. `RCAFFE_BENCH_THREADS` sets the backend's
//! thread count (default: all cores).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rcaffe::backend::{
    rng_from_seed, Axis, Backend, BatchNormOutput, BatchStatistics, Binary, Broadcast, ConvBatch,
    ConvGeom, ConvGrads, CpuBackend, CpuBuffer, Distribution, Gemm, LrnGeom, LrnSaved, LrnWithin,
    PoolGeom, Pooling, RoundMode, Src, Transpose, Views,
};
use std::hint::black_box;
use std::time::Duration;

fn backend() -> CpuBackend {
    let threads = std::env::var("RCAFFE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    CpuBackend::new(threads).expect("thread pool")
}

fn random(be: &CpuBackend, n: usize, seed: u64) -> CpuBuffer {
    let mut b = be.alloc(n).unwrap();
    let uniform = Distribution::Uniform { lo: -1.0, hi: 1.0 };
    be.random(uniform, &mut rng_from_seed(seed), b.whole_mut())
        .unwrap();
    b
}

fn bench_gemm(c: &mut Criterion) {
    let be = backend();
    let nt = Transpose::NoTrans;
    let tr = Transpose::Trans;
    // (name, transA, transB, M, N, K): forward conv is W (M x K) times col (K x N).
    let cases = [
        ("lenet_conv1", nt, nt, 20, 576, 25),
        ("lenet_conv2", nt, nt, 50, 64, 500),
        ("cifar_conv2", nt, nt, 32, 256, 800),
        ("alexnet_conv1", nt, nt, 96, 3025, 363),
        ("alexnet_conv2_group", nt, nt, 128, 729, 1200),
        ("alexnet_conv1_wgrad", nt, tr, 96, 363, 3025),
        ("alexnet_conv1_dgrad", tr, nt, 363, 3025, 96),
        ("lenet_ip1_batch64", nt, tr, 64, 500, 800),
        // The kernel's own ceiling on this machine: a large square product.
        ("square_1024", nt, nt, 1024, 1024, 1024),
    ];
    let mut group = c.benchmark_group(format!("gemm_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (name, ta, tb, m, n, k) in cases {
        let a = random(&be, m * k, 1);
        let b = random(&be, k * n, 2);
        let mut out = be.alloc(m * n).unwrap();
        let product = Gemm::packed(ta, tb, m, n, k);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(BenchmarkId::new(name, format!("{m}x{n}x{k}")), |bench| {
            bench.iter(|| {
                be.gemm(&product, a.whole(), b.whole(), out.whole_mut())
                    .unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn conv(channels: usize, size: usize, kernel: usize, pad: usize, stride: usize) -> ConvGeom {
    ConvGeom {
        channels,
        height: size,
        width: size,
        kernel_h: kernel,
        kernel_w: kernel,
        pad_h: pad,
        pad_w: pad,
        stride_h: stride,
        stride_w: stride,
        dilation_h: 1,
        dilation_w: 1,
    }
}

fn bench_im2col(c: &mut Criterion) {
    let be = backend();
    let cases = [
        ("alexnet_conv1", conv(3, 227, 11, 0, 4)),
        ("cifar_conv2", conv(32, 16, 5, 2, 1)),
        ("alexnet_conv3", conv(256, 13, 3, 1, 1)),
    ];
    let mut group = c.benchmark_group(format!("im2col_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (name, g) in cases {
        let im = random(&be, g.im_len(), 3);
        let mut col = be.alloc(g.col_len()).unwrap();
        group.throughput(Throughput::Bytes((4 * g.col_len()) as u64));
        group.bench_function(BenchmarkId::new("im2col", name), |bench| {
            bench.iter(|| {
                be.im2col(&g, im.whole(), col.whole_mut()).unwrap();
                black_box(&col);
            })
        });
        let mut im_out = be.alloc(g.im_len()).unwrap();
        group.bench_function(BenchmarkId::new("col2im", name), |bench| {
            bench.iter(|| {
                be.col2im(&g, col.whole(), im_out.whole_mut()).unwrap();
                black_box(&im_out);
            })
        });
    }
    group.finish();
}

fn bench_pooling(c: &mut Criterion) {
    let be = backend();
    // (name, planes, size, kernel, stride, pad): AlexNet pool1 at batch 16, cifar pool1 at
    // batch 100, LeNet's two; for average pooling cifar10_quick's pool2 and pool3 and the 3x3
    // stride-1 window of cifar10_full's WITHIN_CHANNEL LRN.
    let max_cases = [
        ("alexnet_pool1_b16", 16 * 96, 55, 3, 2, 0),
        ("cifar_pool1_b100", 100 * 32, 32, 3, 2, 0),
        ("lenet_pool1_b64", 64 * 20, 24, 2, 2, 0),
        ("lenet_pool2_b64", 64 * 50, 8, 2, 2, 0),
    ];
    let ave_cases = [
        ("cifar_pool2_b100", 100 * 32, 16, 3, 2, 0),
        ("cifar_pool3_b100", 100 * 64, 8, 3, 2, 0),
        ("cifar_lrn_within_b100", 100 * 32, 16, 3, 1, 1),
    ];
    let mut group = c.benchmark_group(format!("pool_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let geom = |planes, size, kernel, stride, pad| {
        PoolGeom::new(
            planes,
            (size, size),
            (kernel, kernel),
            (stride, stride),
            (pad, pad),
            RoundMode::Ceil,
        )
        .unwrap()
    };
    for (name, planes, size, kernel, stride, pad) in max_cases {
        let g = geom(planes, size, kernel, stride, pad);
        let x = random(&be, g.in_len(), 4);
        let mut y = be.alloc(g.out_len()).unwrap();
        let mut mask = be.alloc(g.out_len()).unwrap();
        group.throughput(Throughput::Bytes((4 * g.in_len()) as u64));
        group.bench_function(BenchmarkId::new("max_forward", name), |bench| {
            bench.iter(|| {
                let max = Pooling::Max {
                    mask: mask.whole_mut(),
                };
                be.pool_forward(&g, max, x.whole(), y.whole_mut()).unwrap();
                black_box(&y);
            })
        });
        let mut dx = be.alloc(g.in_len()).unwrap();
        group.bench_function(BenchmarkId::new("max_backward", name), |bench| {
            bench.iter(|| {
                let max = Pooling::Max { mask: mask.whole() };
                be.pool_backward(&g, max, y.whole(), dx.whole_mut())
                    .unwrap();
                black_box(&dx);
            })
        });
    }
    for (name, planes, size, kernel, stride, pad) in ave_cases {
        let g = geom(planes, size, kernel, stride, pad);
        let x = random(&be, g.in_len(), 4);
        let mut y = be.alloc(g.out_len()).unwrap();
        group.throughput(Throughput::Bytes((4 * g.in_len()) as u64));
        group.bench_function(BenchmarkId::new("ave_forward", name), |bench| {
            bench.iter(|| {
                be.pool_forward(&g, Pooling::Ave, x.whole(), y.whole_mut())
                    .unwrap();
                black_box(&y);
            })
        });
        let mut dx = be.alloc(g.in_len()).unwrap();
        group.bench_function(BenchmarkId::new("ave_backward", name), |bench| {
            bench.iter(|| {
                be.pool_backward(&g, Pooling::Ave, y.whole(), dx.whole_mut())
                    .unwrap();
                black_box(&dx);
            })
        });
    }
    group.finish();
}

/// `(name, num, channels, size, out_channels, groups, kernel, pad, stride)`.
type ConvCase = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// The zoo's convolutions at their training batch sizes (AlexNet's at deploy batch 10).
const CONVS: [ConvCase; 11] = [
    ("lenet_conv1_b64", 64, 1, 28, 20, 1, 5, 0, 1),
    ("lenet_conv2_b64", 64, 20, 12, 50, 1, 5, 0, 1),
    ("cifar_conv1_b100", 100, 3, 32, 32, 1, 5, 2, 1),
    ("cifar_conv2_b100", 100, 32, 16, 32, 1, 5, 2, 1),
    ("cifar_conv3_b100", 100, 32, 8, 64, 1, 5, 2, 1),
    ("alexnet_conv1_b10", 10, 3, 227, 96, 1, 11, 0, 4),
    ("alexnet_conv2_b10", 10, 96, 27, 256, 2, 5, 2, 1),
    ("alexnet_conv3_b10", 10, 256, 13, 384, 1, 3, 1, 1),
    // A CIFAR ResNet's three stages (batch 128).
    ("resnet_stage1_b128", 128, 16, 32, 16, 1, 3, 1, 1),
    ("resnet_stage2_b128", 128, 32, 16, 32, 1, 3, 1, 1),
    ("resnet_stage3_b128", 128, 64, 8, 64, 1, 3, 1, 1),
];

fn bench_conv(c: &mut Criterion) {
    let be = backend();
    let mut group = c.benchmark_group(format!("conv_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for (name, num, channels, size, out_channels, groups, kernel, pad, stride) in CONVS {
        let batch = ConvBatch {
            geom: conv(channels, size, kernel, pad, stride),
            num,
            groups,
            out_channels,
        };
        let x = random(&be, num * batch.in_len(), 5);
        let w = random(&be, batch.weight_len(), 6);
        let bias = random(&be, out_channels, 7);
        let dy = random(&be, num * batch.out_len(), 8);
        let mut y = be.alloc(num * batch.out_len()).unwrap();
        let mut ws = be.alloc(batch.workspace_len(be.capabilities())).unwrap();
        let flops = batch.forward_flops();
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("forward", name), |bench| {
            bench.iter(|| {
                let (x, w, bias) = (x.whole(), w.whole(), Some(bias.whole()));
                be.conv_forward(&batch, x, w, bias, y.whole_mut(), ws.whole_mut())
                    .unwrap();
                black_box(&y);
            })
        });
        let mut dw = be.alloc(batch.weight_len()).unwrap();
        let mut dx = be.alloc(num * batch.in_len()).unwrap();
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("backward", name), |bench| {
            bench.iter(|| {
                let grads = ConvGrads {
                    dw: Some(dw.whole_mut()),
                    dx: Some(dx.whole_mut()),
                };
                be.conv_backward(
                    &batch,
                    x.whole(),
                    w.whole(),
                    dy.whole(),
                    grads,
                    ws.whole_mut(),
                )
                .unwrap();
                black_box((&dw, &dx));
            })
        });
    }
    group.finish();
}

fn bench_lrn(c: &mut Criterion) {
    let be = backend();
    // ACROSS_CHANNELS: AlexNet's norm1 and norm2 at batch 10.
    let across = [
        ("alexnet_norm1_b10", 10, 96, 55 * 55),
        ("alexnet_norm2_b10", 10, 256, 27 * 27),
    ];
    // WITHIN_CHANNEL: cifar10_full's norm1 and norm2 at batch 100 (local_size 3).
    let within = [
        ("cifar_full_norm1_b100", 100 * 32, 16),
        ("cifar_full_norm2_b100", 100 * 32, 8),
    ];
    let mut group = c.benchmark_group(format!("lrn_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (name, num, channels, spatial) in across {
        let g = LrnGeom {
            num,
            channels,
            spatial,
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 1.0,
        };
        let x = random(&be, g.len(), 9);
        let dy = random(&be, g.len(), 10);
        let mut scale = be.alloc(g.len()).unwrap();
        let mut y = be.alloc(g.len()).unwrap();
        let mut dx = be.alloc(g.len()).unwrap();
        group.throughput(Throughput::Bytes((4 * g.len()) as u64));
        group.bench_function(BenchmarkId::new("across_forward", name), |bench| {
            bench.iter(|| {
                be.lrn_across_forward(&g, x.whole(), scale.whole_mut(), y.whole_mut())
                    .unwrap();
                black_box(&y);
            })
        });
        group.bench_function(BenchmarkId::new("across_backward", name), |bench| {
            bench.iter(|| {
                let saved = LrnSaved {
                    x: x.whole(),
                    y: y.whole(),
                    scale: scale.whole(),
                };
                be.lrn_across_backward(&g, saved, dy.whole(), dx.whole_mut())
                    .unwrap();
                black_box(&dx);
            })
        });
    }
    for (name, planes, size) in within {
        let window = PoolGeom::lrn_window(planes, size, size, 3);
        let l = LrnWithin {
            window,
            alpha: 5e-5,
            beta: 0.75,
        };
        let n = window.in_len();
        let x = random(&be, n, 11);
        let dy = random(&be, n, 12);
        let [mut mean, mut power, mut y, mut a, mut b, mut dx] =
            std::array::from_fn(|_| be.alloc(n).unwrap());
        group.throughput(Throughput::Bytes((4 * n) as u64));
        group.bench_function(BenchmarkId::new("within_forward", name), |bench| {
            bench.iter(|| {
                let saved = [mean.whole_mut(), power.whole_mut()];
                be.lrn_within_forward(&l, x.whole(), saved, y.whole_mut(), a.whole_mut())
                    .unwrap();
                black_box(&y);
            })
        });
        group.bench_function(BenchmarkId::new("within_backward", name), |bench| {
            bench.iter(|| {
                let saved = LrnSaved {
                    x: x.whole(),
                    y: mean.whole(),
                    scale: power.whole(),
                };
                let scratch = [a.whole_mut(), b.whole_mut()];
                be.lrn_within_backward(&l, saved, dy.whole(), dx.whole_mut(), scratch)
                    .unwrap();
                black_box(&dx);
            })
        });
    }
    group.finish();
}

/// BatchNorm's and Scale's passes, in place as nets run them, on a CIFAR ResNet's first-stage
/// map and a DenseNet-40 third-block input (throughput: bytes of the blob).
fn bench_normalization(c: &mut Criterion) {
    let be = backend();
    let mut group = c.benchmark_group(format!("normalization_{}t", be.threads()));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for (name, axis) in [
        ("resnet_128x16x32x32", Axis::new(128, 16, 1024)),
        ("densenet_64x448x8x8", Axis::new(64, 448, 64)),
    ] {
        let (count, channels) = (axis.outer * axis.dim * axis.inner, axis.dim);
        let x = random(&be, count, 9);
        let dy = random(&be, count, 10);
        let (mut y, mut x_norm) = (random(&be, count, 9), be.alloc(count).unwrap());
        let (mut mean, mut variance, mut std) = (
            be.alloc(channels).unwrap(),
            be.alloc(channels).unwrap(),
            be.alloc(channels).unwrap(),
        );
        let (scale, bias) = (random(&be, channels, 11), random(&be, channels, 12));
        let (mut scale_diff, mut bias_diff) =
            (be.alloc(channels).unwrap(), be.alloc(channels).unwrap());
        let mut dx = be.alloc(count).unwrap();
        group.throughput(Throughput::Bytes(4 * count as u64));
        group.bench_function(BenchmarkId::new("batch_norm_forward", name), |bench| {
            bench.iter(|| {
                let statistics = BatchStatistics::Batch {
                    inv_count: 1.0 / (axis.outer * axis.inner) as f32,
                    mean: mean.whole_mut(),
                    variance: variance.whole_mut(),
                };
                let out = BatchNormOutput {
                    y: y.whole_mut(),
                    x_norm: x_norm.whole_mut(),
                    std: std.whole_mut(),
                };
                be.batch_norm_forward(axis, 1e-5, statistics, x.whole().src(), out)
                    .unwrap();
                black_box(&y);
            })
        });
        group.bench_function(BenchmarkId::new("batch_norm_backward", name), |bench| {
            bench.iter(|| {
                let (y, std) = (x_norm.whole(), std.whole());
                be.batch_norm_backward(axis, 1e-4, y, std, dy.whole().src(), dx.whole_mut())
                    .unwrap();
                black_box(&dx);
            })
        });
        group.bench_function(BenchmarkId::new("scale_forward", name), |bench| {
            bench.iter(|| {
                let keep = Some(x_norm.whole_mut());
                let (s, b) = (scale.whole(), Some(bias.whole()));
                be.scale_forward(axis, s, b, Src::InPlace, y.whole_mut(), keep)
                    .unwrap();
                black_box(&y);
            })
        });
        group.bench_function(BenchmarkId::new("scale_backward", name), |bench| {
            bench.iter(|| {
                let grads = (
                    Some((scale_diff.whole_mut(), 1.0)),
                    Some(bias_diff.whole_mut()),
                );
                be.scale_gradients(axis, x.whole(), dy.whole(), grads.0, grads.1)
                    .unwrap();
                let (per_channel, s) = (Broadcast::PerChannel, scale.whole());
                be.broadcast(
                    Binary::Mul,
                    per_channel,
                    axis,
                    s,
                    dy.whole().src(),
                    dx.whole_mut(),
                )
                .unwrap();
                black_box(&dx);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_gemm, bench_conv, bench_im2col, bench_pooling, bench_lrn, bench_normalization
}
criterion_main!(benches);
