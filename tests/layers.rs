//! The folders of `src/` are layers: a module may use the root (`Error`, `Rng`, helpers) and the
//! layers listed for its own, never a higher one (lib.rs says the order).

use std::collections::BTreeMap;
use std::path::Path;

/// Each layer and the layers it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("io", &[]),
    ("kernels", &[]),
    ("networks", &["io", "kernels"]),
    ("data", &["io"]),
    ("method", &["io", "kernels", "networks"]),
    ("training", &["io", "kernels", "networks", "data", "method"]),
    ("evaluation", &["io", "kernels", "networks", "data", "method", "training"]),
    ("cli", &["io", "kernels", "networks", "data", "method", "training", "evaluation"]),
    ("web", &["io", "kernels", "networks", "data", "method", "training", "evaluation"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::NAME` paths a source file uses.
fn used(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn no_layer_imports_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut layered = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(layer) = relative.parent().and_then(|p| p.iter().next()).and_then(|l| l.to_str()) else {
            continue; // lib.rs, main.rs, rng.rs: the root
        };
        let may = allowed.get(layer).unwrap_or_else(|| panic!("{} is in no known layer", relative.display()));
        layered += 1;
        for name in used(&std::fs::read_to_string(file).unwrap()) {
            if allowed.contains_key(name.as_str()) && name != layer && !may.contains(&name.as_str()) {
                violations.push(format!("{} uses crate::{name}", relative.display()));
            }
        }
    }
    assert!(layered > 20, "the layers hold the modules ({layered} files)");
    assert!(violations.is_empty(), "lower layers import higher ones:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(used("use crate::training::trainer::Trainer; crate::Rng::new(1)"), ["training", "Rng"]);
}
