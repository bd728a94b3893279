//! The HTTP `Range` header against any file size: an accepted range lies inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    if let Ok(Some((start, len))) = logarchive_server::web::download::parse_range(header, size) {
        assert!(len > 0 && start < size && start + len <= size, "{header:?} {size}: {start}+{len}");
    }
});
