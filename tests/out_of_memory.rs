//! A blob too large for memory: an error naming the layer, the blob and the bytes asked for,
//! not an abort. Alone in its test binary, as it lowers the address-space limit of the whole
//! process while it runs.

use rcaffe::backend::{rng_from_seed, CpuBackend};
use rcaffe::net::Net;
use rcaffe::proto::caffe::NetParameter;
use rcaffe::proto::parse_text;
use std::path::Path;

/// The process's mapped address space now, in bytes (VmSize).
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|number| number.trim().parse().unwrap())
        .unwrap();
    kib << 10
}

/// Runs `f` with at most `room` bytes of address space beyond what the process has mapped.
fn with_address_space_limited<R>(room: u64, f: impl FnOnce() -> R) -> R {
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the structs passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut saved), 0);
        let limited = libc::rlimit {
            rlim_cur: address_space_in_use() + room,
            rlim_max: saved.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limited), 0);
    }
    let result = f();
    // SAFETY: as above; the soft limit goes back to what it was, below the unchanged hard one.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &saved), 0);
    }
    result
}

#[test]
fn a_net_whose_blob_cannot_be_allocated_is_an_error_naming_layer_blob_and_bytes() {
    // 2e9 values: within a blob's limit of 2^31 - 1, and 8 GB a buffer, well beyond the 2 GiB
    // of room the net gets.
    let param: NetParameter = parse_text(
        "name: 'huge'\nlayer { name: 'source' type: 'DummyData' top: 'data' \
         dummy_data_param { shape { dim: 2 dim: 1000 dim: 1000 dim: 1000 } } }",
        Path::new("huge.prototxt"),
    )
    .unwrap();
    let backend = CpuBackend::default();
    let error = with_address_space_limited(2 << 30, || {
        Net::new(&param, &backend, rng_from_seed(0)).err()
    })
    .expect("the net cannot be built")
    .to_string();
    assert_eq!(
        error,
        "layer 'source' (type DummyData): out of memory: the data of blob 'data' (2 1000 1000 \
         1000 (2000000000)) needs 8000000000 bytes"
    );
}
