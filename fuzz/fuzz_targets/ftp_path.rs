//! FTP path arguments (joined to the working folder): whatever the
//! bytes, an accepted path stays beneath the home.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    if let Some(rel) = logarchive_ftp::fuzzing::virtual_path(data) {
        assert!(rel.is_relative(), "{rel:?}");
        for c in rel.components() {
            assert!(matches!(c, Component::Normal(_)), "{rel:?} has {c:?}");
        }
    }
});
