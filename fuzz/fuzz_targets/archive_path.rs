//! Archive paths from URLs (already percent-decoded): an accepted path has no `.`/`..` parts
//! and round-trips through its display form.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(p) = logarchive_server::web::archive::ArchivePath::parse(s) {
        let shown = p.display();
        assert!(!shown.split('/').any(|c| c == "." || c == ".."), "{shown}");
        assert_eq!(logarchive_server::web::archive::ArchivePath::parse(&shown).ok(), Some(p));
    }
});
