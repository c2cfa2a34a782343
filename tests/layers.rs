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
    ("bench", &["io", "kernels", "networks", "data", "method", "training", "evaluation"]),
    ("cli", &["io", "kernels", "networks", "data", "method", "training", "evaluation", "bench"]),
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
            // lib.rs, main.rs, rng.rs, ...: the root, below every layer; main.rs calls the command line.
            if relative != Path::new("main.rs") {
                let text = std::fs::read_to_string(file).unwrap();
                violations.extend(used(&text).into_iter().filter(|name| allowed.contains_key(name.as_str())).map(|name| format!("{} uses crate::{name}", relative.display())));
            }
            continue;
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

/// The functions of a source text that run over `limit` lines: (name, lines). A function starts
/// at a line `fn NAME` with a body and ends at the first `}` at its indentation.
fn long_functions(text: &str, limit: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let signature = ["pub fn ", "pub(crate) fn ", "pub(super) fn ", "fn ", "pub async fn ", "async fn "].iter().find_map(|p| trimmed.strip_prefix(p));
        let Some(rest) = signature else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let close = " ".repeat(indent) + "}";
        let end = lines[i + 1..].iter().position(|l| l.trim_end() == close).map_or(lines.len(), |j| i + 1 + j);
        if end - i + 1 > limit {
            long.push((name, end - i + 1));
        }
    }
    long
}

/// The command line only parses, calls one function per command and prints: at most 1,500 lines;
/// and no function of `src/` runs over 100 lines but the presets' table.
#[test]
fn the_command_line_is_thin_and_functions_are_short() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let cli_lines: usize =
        files.iter().filter(|f| f.strip_prefix(&src).unwrap().starts_with("cli")).map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
    assert!(cli_lines <= 1500, "src/cli/ holds {cli_lines} lines: move what is not parsing and printing below it");
    let mut long = Vec::new();
    for file in &files {
        for (name, lines) in long_functions(&std::fs::read_to_string(file).unwrap(), 100) {
            if name != "image_preset" {
                long.push(format!("{} {name}: {lines} lines", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(long.is_empty(), "functions over 100 lines:\n{}", long.join("\n"));
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(120);
    let text = format!("fn short() {{\n}}\n\npub fn long(a: u32) -> u32 {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 100), [("long".to_string(), 122)]);
}
