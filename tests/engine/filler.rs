//! Fillers against their definitions: sample statistics within bounds derived from the sample
//! size (6 standard errors), exact values where the filler is deterministic.

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::blob::Blob;
use rcaffe::filler::{fan, fill, Filler, FillerError};
use rcaffe::proto::caffe::filler_parameter::VarianceNorm;
use rcaffe::proto::caffe::FillerParameter;

fn cpu() -> CpuBackend {
    CpuBackend::new(2).unwrap()
}

fn param(kind: &str) -> FillerParameter {
    FillerParameter {
        r#type: Some(kind.to_string()),
        ..Default::default()
    }
}

fn mean_var(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}

fn filled(p: &FillerParameter, shape: &[usize], seed: u64) -> Blob<CpuBackend> {
    let mut blob = Blob::new(&cpu(), shape).unwrap();
    fill(p, &mut blob, &mut rng_from_seed(seed)).unwrap();
    blob
}

#[test]
fn constant() {
    let mut p = param("constant");
    p.value = Some(0.25);
    let b = filled(&p, &[3, 4, 5], 1);
    assert!(b.cpu_data().iter().all(|&v| v == 0.25));
    // The default FillerParameter is constant 0.
    let mut b = Blob::new(&cpu(), &[2, 2]).unwrap();
    b.set_data(&[1.0; 4]).unwrap();
    fill(&FillerParameter::default(), &mut b, &mut rng_from_seed(0)).unwrap();
    assert_eq!(b.cpu_data(), &[0.0; 4]);
}

#[test]
fn uniform_statistics() {
    let mut p = param("uniform");
    p.min = Some(-1.0);
    p.max = Some(3.0);
    let b = filled(&p, &[100, 1000], 2);
    let v = b.cpu_data();
    assert!(v.iter().all(|&x| (-1.0..=3.0).contains(&x)));
    let n = v.len() as f64;
    let (mean, var) = mean_var(v);
    let width = 4.0f64;
    // Var(U) = w^2/12; Var of the sample variance of a uniform: (w^4/80 - w^4/144) / n.
    assert!(
        (mean - 1.0).abs() < 6.0 * (width * width / 12.0 / n).sqrt(),
        "mean {mean}"
    );
    let var_se = ((width.powi(4) / 80.0 - width.powi(4) / 144.0) / n).sqrt();
    assert!(
        (var - width * width / 12.0).abs() < 6.0 * var_se,
        "variance {var}"
    );
    // Defaults: [0, 1].
    let b = filled(&param("uniform"), &[1000], 3);
    assert!(b.cpu_data().iter().all(|&x| (0.0..=1.0).contains(&x)));
}

#[test]
fn gaussian_statistics() {
    let mut p = param("gaussian");
    p.mean = Some(-0.5);
    p.std = Some(2.0);
    let b = filled(&p, &[50, 2000], 4);
    let v = b.cpu_data();
    let n = v.len() as f64;
    let (mean, var) = mean_var(v);
    assert!((mean + 0.5).abs() < 6.0 * 2.0 / n.sqrt(), "mean {mean}");
    assert!(
        (var - 4.0).abs() < 6.0 * (2.0 * 16.0 / n).sqrt(),
        "variance {var}"
    );
}

#[test]
fn gaussian_sparse_keeps_sparse_over_shape0() {
    // Upstream keeps each weight with probability sparse / shape(0).
    let (outputs, inputs, sparse) = (200usize, 500usize, 20);
    let mut p = param("gaussian");
    p.sparse = Some(sparse);
    let b = filled(&p, &[outputs, inputs], 5);
    let v = b.cpu_data();
    let n = v.len() as f64;
    let prob = f64::from(sparse) / outputs as f64;
    let nonzero = v.iter().filter(|&&x| x != 0.0).count() as f64;
    assert!(
        (nonzero / n - prob).abs() < 6.0 * (prob * (1.0 - prob) / n).sqrt(),
        "non-zero fraction {}",
        nonzero / n
    );
    // Per input (column), the mean number of non-zero output weights is `sparse`.
    let per_input = nonzero / inputs as f64;
    assert!((per_input - f64::from(sparse)).abs() < 0.5, "{per_input}");
    // The kept values are the Gaussian draws: their variance is std^2 = 1.
    let kept: Vec<f32> = v.iter().copied().filter(|&x| x != 0.0).collect();
    let (_, var) = mean_var(&kept);
    assert!(
        (var - 1.0).abs() < 6.0 * (2.0 / kept.len() as f64).sqrt(),
        "{var}"
    );
    // sparse 0 zeroes everything; sparse beyond shape(0) is an error.
    p.sparse = Some(0);
    assert!(filled(&p, &[10, 10], 6)
        .cpu_data()
        .iter()
        .all(|&x| x == 0.0));
    p.sparse = Some(11);
    let mut b = Blob::new(&cpu(), &[10, 10]).unwrap();
    assert!(fill(&p, &mut b, &mut rng_from_seed(0)).is_err());
}

#[test]
fn positive_unitball_rows_sum_to_one() {
    let b = filled(&param("positive_unitball"), &[7, 3, 4, 5], 7);
    let v = b.cpu_data();
    assert!(v.iter().all(|&x| (0.0..=1.0).contains(&x)));
    for row in v.chunks(60) {
        let s: f64 = row.iter().map(|&x| f64::from(x)).sum();
        assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
    }
    // Not all equal: the values are random before normalising.
    assert!(v[..60].iter().any(|&x| x != v[0]));
}

#[test]
fn fan_in_and_out_as_upstream() {
    let b = Blob::new(&cpu(), &[64, 32, 3, 3]).unwrap();
    assert_eq!(fan(&b, VarianceNorm::FanIn).unwrap(), 288.0);
    assert_eq!(fan(&b, VarianceNorm::FanOut).unwrap(), 576.0);
    assert_eq!(fan(&b, VarianceNorm::Average).unwrap(), 432.0);
    // InnerProduct weights (num_output x inputs).
    let ip = Blob::new(&cpu(), &[10, 500]).unwrap();
    assert_eq!(fan(&ip, VarianceNorm::FanIn).unwrap(), 500.0);
    assert_eq!(fan(&ip, VarianceNorm::FanOut).unwrap(), 10.0);
    // One axis: fan_out is the count.
    let v = Blob::new(&cpu(), &[10]).unwrap();
    assert_eq!(fan(&v, VarianceNorm::FanIn).unwrap(), 1.0);
    assert_eq!(fan(&v, VarianceNorm::FanOut).unwrap(), 10.0);
    assert_eq!(fan(&v, VarianceNorm::Average).unwrap(), 5.5);
}

#[test]
fn xavier_scale_from_fans() {
    let shape = [64, 32, 3, 3];
    for (norm, n) in [
        (VarianceNorm::FanIn, 288.0f64),
        (VarianceNorm::FanOut, 576.0),
        (VarianceNorm::Average, 432.0),
    ] {
        let mut p = param("xavier");
        p.variance_norm = Some(norm as i32);
        let b = filled(&p, &shape, 8);
        let v = b.cpu_data();
        let scale = (3.0 / n).sqrt();
        let max = v.iter().map(|&x| f64::from(x).abs()).fold(0.0, f64::max);
        assert!(
            max <= scale * (1.0 + 1e-6),
            "{norm:?}: |x| up to {max} > {scale}"
        );
        assert!(
            max > 0.999 * scale,
            "{norm:?}: max |x| {max} well below {scale}"
        );
        let (mean, var) = mean_var(v);
        let count = v.len() as f64;
        assert!(
            mean.abs() < 6.0 * (scale * scale / 3.0 / count).sqrt(),
            "{norm:?} mean {mean}"
        );
        // Var(x^2) for U(-a, a) is 4 a^4 / 45.
        let se = (4.0 * scale.powi(4) / 45.0 / count).sqrt();
        assert!(
            (var - 1.0 / n).abs() < 6.0 * se,
            "{norm:?}: variance {var}, want {}",
            1.0 / n
        );
    }
}

#[test]
fn msra_scale_from_fans() {
    let shape = [64, 32, 3, 3];
    for (norm, n) in [
        (VarianceNorm::FanIn, 288.0f64),
        (VarianceNorm::FanOut, 576.0),
        (VarianceNorm::Average, 432.0),
    ] {
        let mut p = param("msra");
        p.variance_norm = Some(norm as i32);
        let b = filled(&p, &shape, 9);
        let (mean, var) = mean_var(b.cpu_data());
        let count = b.count() as f64;
        let want = 2.0 / n;
        assert!(
            mean.abs() < 6.0 * (want / count).sqrt(),
            "{norm:?} mean {mean}"
        );
        assert!(
            (var - want).abs() < 6.0 * (2.0 * want * want / count).sqrt(),
            "{norm:?}: variance {var}, want {want}"
        );
    }
}

#[test]
fn bilinear_4x4_factor_2() {
    // Kernel 4 = 2 * factor - factor % 2 for factor 2: f = 2, c = 3/4, so each axis weighs
    // 1 - |x/2 - 3/4| = 1/4, 3/4, 3/4, 1/4 and the kernel is their outer product.
    let b = filled(&param("bilinear"), &[3, 1, 4, 4], 10);
    let axis = [0.25f32, 0.75, 0.75, 0.25];
    for (k, kernel) in b.cpu_data().chunks(16).enumerate() {
        for y in 0..4 {
            for x in 0..4 {
                assert!(
                    (kernel[y * 4 + x] - axis[y] * axis[x]).abs() < 1e-7,
                    "kernel {k} at ({y}, {x}): {}",
                    kernel[y * 4 + x]
                );
            }
        }
    }
    // Odd kernel (factor 3 -> K = 5): f = 3, c = 2/3; the centre weight is 1.
    let b = filled(&param("bilinear"), &[1, 1, 5, 5], 10);
    assert!((b.cpu_data()[12] - 1.0).abs() < 1e-6);
    let mut b = Blob::new(&cpu(), &[1, 1, 4, 3]).unwrap();
    assert!(fill(&param("bilinear"), &mut b, &mut rng_from_seed(0)).is_err());
    let mut b = Blob::new(&cpu(), &[4, 4]).unwrap();
    assert!(fill(&param("bilinear"), &mut b, &mut rng_from_seed(0)).is_err());
}

#[test]
fn reproducible_from_the_seed() {
    for kind in ["uniform", "gaussian", "xavier", "msra", "positive_unitball"] {
        let a = filled(&param(kind), &[16, 8, 3, 3], 11);
        let b = filled(&param(kind), &[16, 8, 3, 3], 11);
        let c = filled(&param(kind), &[16, 8, 3, 3], 12);
        assert_eq!(a.cpu_data(), b.cpu_data(), "{kind}");
        assert_ne!(a.cpu_data(), c.cpu_data(), "{kind}");
    }
}

#[test]
fn parameter_errors() {
    let err = Filler::from_param(&param("he_normal")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown filler type \"he_normal\"; valid types are: constant, gaussian, \
         positive_unitball, uniform, xavier, msra, bilinear"
    );
    let mut p = param("xavier");
    p.sparse = Some(5);
    assert!(matches!(
        Filler::from_param(&p),
        Err(FillerError::Invalid {
            filler: "xavier",
            ..
        })
    ));
    let mut p = param("msra");
    p.variance_norm = Some(7);
    assert!(matches!(
        Filler::from_param(&p),
        Err(FillerError::Invalid { filler: "msra", .. })
    ));
    let mut p = param("gaussian");
    p.sparse = Some(-2);
    assert!(Filler::from_param(&p).is_err());
    let mut p = param("uniform");
    p.min = Some(2.0);
    p.max = Some(1.0);
    let mut b = Blob::new(&cpu(), &[3]).unwrap();
    assert!(fill(&p, &mut b, &mut rng_from_seed(0)).is_err());
    let mut empty = Blob::new(&cpu(), &[0, 3]).unwrap();
    let err = fill(&param("constant"), &mut empty, &mut rng_from_seed(0)).unwrap_err();
    assert!(err.to_string().contains("0 3 (0)"), "{err}");
    assert_eq!(
        Filler::from_param(&param("msra")).unwrap(),
        Filler::Msra {
            norm: VarianceNorm::FanIn
        }
    );
}
