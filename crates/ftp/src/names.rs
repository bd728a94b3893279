//! The archive's reserved names, defined once: the temporary name of an upload, the scratch
//! folder of a home, and the names of a file's later generations.

/// The folder in a home that holds the account's own bookkeeping (the agent's status document):
/// an account that may write may also rewrite there.
pub const SCRATCH_DIR: &str = ".logarchive";

/// Temporary upload names: `.<final name>.logarchive-tmp`. They are hidden from the web UI and
/// the catalog, and are the only names an account without `delete` may rename away.
pub const TEMP_SUFFIX: &str = ".logarchive-tmp";

/// Whether `name` (a last path part) is a temporary upload name.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX) && name.len() > TEMP_SUFFIX.len() + 1
}

/// The temporary name for uploading `final_name`.
pub fn temp_name_for(final_name: &str) -> String {
    format!(".{final_name}{TEMP_SUFFIX}")
}

/// The name of generation `g` ≥ 2 of a file: `app.log` → `app.log.~2~`.
pub fn versioned(name: &str, g: i64) -> String {
    if g <= 1 {
        name.to_string()
    } else {
        format!("{name}.~{g}~")
    }
}

/// Checks an account name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_and_generations() {
        assert_eq!(temp_name_for("a.txt"), ".a.txt.logarchive-tmp");
        assert!(is_temp_name(".a.txt.logarchive-tmp"));
        assert!(!is_temp_name("a.txt.logarchive-tmp"));
        assert!(!is_temp_name(".logarchive-tmp"));
        assert_eq!(versioned("/a/app.log", 1), "/a/app.log");
        assert_eq!(versioned("/a/app.log", 3), "/a/app.log.~3~");
    }
}
