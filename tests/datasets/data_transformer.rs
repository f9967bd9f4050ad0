//! DataTransformer against hand-computed values, in both phases: scale, mean value and mean
//! file (cropped with the image, subtracted before scaling), crop positions, mirror, decoding
//! of encoded Datums with force_color / force_gray, and the errors.

use std::collections::HashSet;
use std::path::Path;

use rand::Rng as _;
use rcaffe::backend::{rng_from_seed, Rng};
use rcaffe::data::datum::Datum;
use rcaffe::data::imgcodec::{encode_image, Image};
use rcaffe::data::DataTransformer;
use rcaffe::proto::caffe::{BlobProto, Phase, TransformationParameter};

const C: usize = 2;
const H: usize = 3;
const W: usize = 4;

/// v(c, h, w) = 100 c + 10 h + w.
fn v(c: usize, h: usize, w: usize) -> f32 {
    (100 * c + 10 * h + w) as f32
}

fn datum() -> Datum {
    let mut data = Vec::new();
    for c in 0..C {
        for h in 0..H {
            for w in 0..W {
                data.push(v(c, h, w) as u8);
            }
        }
    }
    Datum {
        channels: Some(C as i32),
        height: Some(H as i32),
        width: Some(W as i32),
        data: Some(data),
        label: Some(4),
        ..Default::default()
    }
}

fn transform(
    param: &TransformationParameter,
    phase: Phase,
    datum: &Datum,
    rng: &mut Rng,
) -> Vec<f32> {
    let t = DataTransformer::new(param, phase).unwrap();
    let [_, c, h, w] = t.infer_shape(datum).unwrap();
    let mut out = vec![f32::NAN; c * h * w];
    t.transform(datum, &mut out, rng).unwrap();
    out
}

/// The crop of v at (h_off, w_off), size ch x cw, mirrored or not, mapped through f.
fn expected(
    (ch, cw): (usize, usize),
    (h_off, w_off): (usize, usize),
    mirror: bool,
    f: impl Fn(usize, usize, usize, f32) -> f32,
) -> Vec<f32> {
    let mut out = Vec::new();
    for c in 0..C {
        for h in 0..ch {
            for w in 0..cw {
                let sw = if mirror { cw - 1 - w } else { w };
                let (sh, sw) = (h_off + h, w_off + sw);
                out.push(f(c, sh, sw, v(c, sh, sw)));
            }
        }
    }
    out
}

#[test]
fn identity_scale_and_float_data() {
    let mut rng = rng_from_seed(1);
    let none = TransformationParameter::default();
    for phase in [Phase::Train, Phase::Test] {
        let out = transform(&none, phase, &datum(), &mut rng);
        assert_eq!(out, expected((H, W), (0, 0), false, |_, _, _, x| x));
    }
    let scaled = TransformationParameter {
        scale: Some(0.5),
        ..Default::default()
    };
    let out = transform(&scaled, Phase::Train, &datum(), &mut rng);
    assert_eq!(out, expected((H, W), (0, 0), false, |_, _, _, x| x * 0.5));

    // float_data is used when data is empty.
    let mut floats = datum();
    floats.data = None;
    floats.float_data = (0..C * H * W).map(|i| i as f32 * 0.25 - 1.0).collect();
    let out = transform(&scaled, Phase::Test, &floats, &mut rng);
    let want: Vec<f32> = (0..C * H * W)
        .map(|i| (i as f32 * 0.25 - 1.0) * 0.5)
        .collect();
    assert_eq!(out, want);
}

#[test]
fn mean_values_are_subtracted_before_scaling() {
    let mut rng = rng_from_seed(2);
    let one = TransformationParameter {
        scale: Some(2.0),
        mean_value: vec![100.0],
        ..Default::default()
    };
    let out = transform(&one, Phase::Test, &datum(), &mut rng);
    // (x - 100) * 2, not x * 2 - 100.
    assert_eq!(
        out,
        expected((H, W), (0, 0), false, |_, _, _, x| (x - 100.0) * 2.0)
    );
    assert_eq!(out[0], -200.0);

    let per_channel = TransformationParameter {
        scale: Some(0.5),
        mean_value: vec![1.0, 101.5],
        ..Default::default()
    };
    let out = transform(&per_channel, Phase::Train, &datum(), &mut rng);
    assert_eq!(
        out,
        expected((H, W), (0, 0), false, |c, _, _, x| (x - [1.0, 101.5][c])
            * 0.5)
    );

    let wrong = TransformationParameter {
        mean_value: vec![1.0, 2.0, 3.0],
        ..Default::default()
    };
    let t = DataTransformer::new(&wrong, Phase::Test).unwrap();
    let mut out = vec![0.0; C * H * W];
    let e = t
        .transform(&datum(), &mut out, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mean_value") && e.contains("channels (2)"),
        "{e}"
    );
}

fn write_mean(path: &Path, shape: [i32; 4], value: impl Fn(usize) -> f32) {
    let count = shape.iter().product::<i32>() as usize;
    let blob = BlobProto {
        num: Some(shape[0]),
        channels: Some(shape[1]),
        height: Some(shape[2]),
        width: Some(shape[3]),
        data: (0..count).map(value).collect(),
        ..Default::default()
    };
    rcaffe::proto::write_binary(path, &blob).unwrap();
}

#[test]
fn the_mean_file_is_cropped_with_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let mean = dir.path().join("mean.binaryproto");
    // m(c, h, w) = 0.25 * flat index.
    write_mean(&mean, [1, C as i32, H as i32, W as i32], |i| {
        i as f32 * 0.25
    });
    let m = |c: usize, h: usize, w: usize| ((c * H + h) * W + w) as f32 * 0.25;
    let param = TransformationParameter {
        scale: Some(3.0),
        mean_file: Some(mean.to_string_lossy().into_owned()),
        crop_size: Some(2),
        ..Default::default()
    };
    // TEST: centre crop at ((3 - 2) / 2, (4 - 2) / 2) = (0, 1).
    let mut rng = rng_from_seed(3);
    let out = transform(&param, Phase::Test, &datum(), &mut rng);
    let want = expected((2, 2), (0, 1), false, |c, h, w, x| (x - m(c, h, w)) * 3.0);
    assert_eq!(out, want);
    // By hand, channel 0 row 0: v = 1, 2 at w = 1, 2; m = 0.25, 0.5.
    assert_eq!(&out[..2], &[(1.0 - 0.25) * 3.0, (2.0 - 0.5) * 3.0]);

    // TRAIN: the corner drawn h then w; the mean follows the same window.
    for seed in 0..20 {
        let mut rng = rng_from_seed(seed);
        let mut twin = rng.clone();
        let h_off = (twin.next_u32() % 2) as usize;
        let w_off = (twin.next_u32() % 3) as usize;
        let out = transform(&param, Phase::Train, &datum(), &mut rng);
        let want = expected((2, 2), (h_off, w_off), false, |c, h, w, x| {
            (x - m(c, h, w)) * 3.0
        });
        assert_eq!(out, want, "seed {seed}");
        assert_eq!(rng.next_u32(), twin.next_u32(), "two draws taken");
    }

    // A mean of another shape: an error naming the file.
    let small = dir.path().join("small_mean.binaryproto");
    write_mean(&small, [1, 1, 3, 4], |_| 0.0);
    let param = TransformationParameter {
        mean_file: Some(small.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let t = DataTransformer::new(&param, Phase::Test).unwrap();
    let mut out = vec![0.0; C * H * W];
    let e = t
        .transform(&datum(), &mut out, &mut rng_from_seed(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("small_mean.binaryproto") && e.contains("1x3x4"),
        "{e}"
    );

    // A missing mean file.
    let param = TransformationParameter {
        mean_file: Some(
            dir.path()
                .join("nope.binaryproto")
                .to_string_lossy()
                .into_owned(),
        ),
        ..Default::default()
    };
    let e = DataTransformer::new(&param, Phase::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.binaryproto"), "{e}");

    // Both a mean file and mean values.
    let param = TransformationParameter {
        mean_file: Some(mean.to_string_lossy().into_owned()),
        mean_value: vec![1.0],
        ..Default::default()
    };
    let e = DataTransformer::new(&param, Phase::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mean_file") && e.contains("mean_value"), "{e}");
}

#[test]
fn crops_random_in_train_centred_in_test() {
    let param = TransformationParameter {
        crop_size: Some(2),
        ..Default::default()
    };
    let t = DataTransformer::new(&param, Phase::Train).unwrap();
    assert_eq!(t.infer_shape(&datum()).unwrap(), [1, C, 2, 2]);
    let mut corners = HashSet::new();
    for seed in 0..200 {
        let mut rng = rng_from_seed(seed);
        let mut twin = rng.clone();
        let corner = (
            (twin.next_u32() % 2) as usize,
            (twin.next_u32() % 3) as usize,
        );
        let out = transform(&param, Phase::Train, &datum(), &mut rng);
        assert_eq!(out, expected((2, 2), corner, false, |_, _, _, x| x));
        corners.insert(corner);
    }
    assert_eq!(
        corners.len(),
        6,
        "every corner of a 3x4 image occurs: {corners:?}"
    );

    // TEST: always the centre, and no random draw.
    let mut rng = rng_from_seed(9);
    let before = rng.clone().next_u64();
    let out = transform(&param, Phase::Test, &datum(), &mut rng);
    assert_eq!(out, expected((2, 2), (0, 1), false, |_, _, _, x| x));
    assert_eq!(rng.next_u64(), before, "the generator is untouched");

    // A crop of 3 on a 3x4 image: the centre is (0, 0).
    let param3 = TransformationParameter {
        crop_size: Some(3),
        ..Default::default()
    };
    let out = transform(&param3, Phase::Test, &datum(), &mut rng);
    assert_eq!(out, expected((3, 3), (0, 0), false, |_, _, _, x| x));

    // Larger than the image.
    let big = TransformationParameter {
        crop_size: Some(4),
        ..Default::default()
    };
    let t = DataTransformer::new(&big, Phase::Train).unwrap();
    let e = t.infer_shape(&datum()).unwrap_err().to_string();
    assert!(e.contains("crop_size 4") && e.contains("3x4"), "{e}");
    let mut out = vec![0.0; 32];
    let e = t
        .transform(&datum(), &mut out, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("crop_size"), "{e}");
}

#[test]
fn mirror_in_both_phases_drawn_before_the_crop() {
    let mirror = TransformationParameter {
        mirror: Some(true),
        ..Default::default()
    };
    for phase in [Phase::Train, Phase::Test] {
        let mut flips = HashSet::new();
        for seed in 0..50 {
            let mut rng = rng_from_seed(seed);
            let flip = rng.clone().next_u32() % 2 == 1;
            let out = transform(&mirror, phase, &datum(), &mut rng);
            assert_eq!(
                out,
                expected((H, W), (0, 0), flip, |_, _, _, x| x),
                "{phase:?}"
            );
            flips.insert(flip);
        }
        assert_eq!(flips.len(), 2, "{phase:?}: both outcomes occur");
    }
    // By hand: row 0 of channel 0 mirrored is 3, 2, 1, 0.
    let mut seed = 0;
    while rng_from_seed(seed).next_u32().is_multiple_of(2) {
        seed += 1;
    }
    let out = transform(&mirror, Phase::Test, &datum(), &mut rng_from_seed(seed));
    assert_eq!(&out[..4], &[3.0, 2.0, 1.0, 0.0]);

    // With a TRAIN crop: the mirror coin first, then the corner; mean and scale as usual.
    let both = TransformationParameter {
        mirror: Some(true),
        crop_size: Some(2),
        mean_value: vec![5.0],
        scale: Some(0.5),
        ..Default::default()
    };
    for seed in 0..50 {
        let mut rng = rng_from_seed(seed);
        let mut twin = rng.clone();
        let flip = twin.next_u32() % 2 == 1;
        let corner = (
            (twin.next_u32() % 2) as usize,
            (twin.next_u32() % 3) as usize,
        );
        let out = transform(&both, Phase::Train, &datum(), &mut rng);
        assert_eq!(
            out,
            expected((2, 2), corner, flip, |_, _, _, x| (x - 5.0) * 0.5)
        );
    }
    // TEST: centre crop, still mirrored at random.
    for seed in 0..10 {
        let mut rng = rng_from_seed(seed);
        let flip = rng.clone().next_u32() % 2 == 1;
        let out = transform(&both, Phase::Test, &datum(), &mut rng);
        assert_eq!(
            out,
            expected((2, 2), (0, 1), flip, |_, _, _, x| (x - 5.0) * 0.5)
        );
    }
}

fn encoded(image: &Image) -> Datum {
    Datum {
        data: Some(encode_image(image, "png").unwrap()),
        label: Some(2),
        encoded: Some(true),
        ..Default::default()
    }
}

#[test]
fn encoded_datums_decode_as_stored_or_forced() {
    // 1x2 colour image, BGR pixels (10, 20, 30) and (200, 100, 0).
    let colour = Image {
        height: 1,
        width: 2,
        channels: 3,
        data: vec![10, 20, 30, 200, 100, 0],
    };
    let d = encoded(&colour);
    let mut rng = rng_from_seed(0);
    let native = transform(
        &TransformationParameter::default(),
        Phase::Test,
        &d,
        &mut rng,
    );
    assert_eq!(
        native,
        [10.0, 200.0, 20.0, 100.0, 30.0, 0.0],
        "BGR, channel-major"
    );

    let gray = TransformationParameter {
        force_gray: Some(true),
        ..Default::default()
    };
    let out = transform(&gray, Phase::Test, &d, &mut rng);
    // OpenCV's weights on (R, G, B): (4899 R + 9617 G + 1868 B + 8192) >> 14.
    let g = |r: u32, gr: u32, b: u32| ((4899 * r + 9617 * gr + 1868 * b + 8192) >> 14) as f32;
    assert_eq!(out, [g(30, 20, 10), g(0, 100, 200)]);

    let grey_image = Image {
        height: 1,
        width: 2,
        channels: 1,
        data: vec![7, 250],
    };
    let color = TransformationParameter {
        force_color: Some(true),
        scale: Some(2.0),
        ..Default::default()
    };
    let out = transform(&color, Phase::Test, &encoded(&grey_image), &mut rng);
    assert_eq!(out, [14.0, 500.0, 14.0, 500.0, 14.0, 500.0]);

    let both = TransformationParameter {
        force_color: Some(true),
        force_gray: Some(true),
        ..Default::default()
    };
    let e = DataTransformer::new(&both, Phase::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("force_color") && e.contains("force_gray"), "{e}");

    // An image transformed directly equals its Datum's transform.
    let t = DataTransformer::new(&TransformationParameter::default(), Phase::Test).unwrap();
    let mut out = vec![0.0; 6];
    t.transform_image(&colour, &mut out, &mut rng).unwrap();
    assert_eq!(out, native);

    // A Datum that cannot be decoded.
    let broken = Datum {
        data: Some(b"not a png".to_vec()),
        encoded: Some(true),
        ..Default::default()
    };
    let e = t.infer_shape(&broken).unwrap_err().to_string();
    assert!(e.contains("decode"), "{e}");
}

#[test]
fn malformed_datums_are_errors() {
    let t = DataTransformer::new(&TransformationParameter::default(), Phase::Test).unwrap();
    let mut short = datum();
    short.data.as_mut().unwrap().pop();
    let e = t.infer_shape(&short).unwrap_err().to_string();
    assert!(e.contains("23 values") && e.contains("2x3x4"), "{e}");

    let mut out = vec![0.0; 5];
    let e = t
        .transform(&datum(), &mut out, &mut rng_from_seed(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch holds 5"), "{e}");
}
