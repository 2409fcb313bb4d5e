//! The repository's YAML as kubectl reads it (YAML 1.1, where `0644` is octal; duplicate keys
//! are errors), for the tests that check the manifests and the admission policy.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The repository's root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.yaml`/`.yml` file under `dir` (relative to the root), into `out`.
pub(crate) fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = dir.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|ext| ext.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Every document of one file (relative to the root).
pub(crate) fn parse_yaml(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_multiple_with_options::<Value>(&text, options)
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", file.display()))
}

/// The one document of `file` (relative to the root) as a `T`.
pub(crate) fn read_yaml<T: DeserializeOwned>(file: &str) -> T {
    let mut documents = parse_yaml(Path::new(file));
    assert_eq!(documents.len(), 1, "{file} should hold one document");
    let value = documents.remove(0);
    serde_json::from_value(value).unwrap_or_else(|error| panic!("{file}: {error}"))
}
