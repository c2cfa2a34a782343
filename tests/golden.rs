//! Parity with the official network, loss and samplers on a golden file (shared/golden). The file
//! is a parameter: IMM_GOLDEN=path/to/golden.safetensors (its manifest is the .json beside it).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use imm::evaluation::golden::{Row, check};
use imm::io::safetensors::Tensors;

fn golden_path() -> PathBuf {
    std::env::var_os("IMM_GOLDEN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/golden_songunet_small.safetensors")
    })
}

fn failures(rows: &[Row]) -> Vec<String> {
    rows.iter().filter(|r| !r.ok()).map(|r| format!("{} rel {:.2e} > {:.0e}", r.name, r.rel, r.tol)).collect()
}

#[test]
fn network_loss_gradients_and_samplers_match_the_official_code() {
    let rows = check(&golden_path(), &Device::flex()).unwrap();
    for row in &rows {
        println!("{:<48} {:.3e} {:.3e}", row.name, row.max_abs, row.rel);
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for key in ["out.G_t", "out.f_t_euler_fm", "out.loss_simple_edm", "out.mmd_simple_edm", "time.r_k15", "out.sample_restart_4_uniform"] {
        assert!(names.contains(&key), "{key} was not checked");
    }
    assert!(rows.iter().filter(|r| r.name.starts_with("grad.")).count() > 50, "every gradient is checked");
    assert_eq!(failures(&rows), Vec::<String>::new());
}

/// A copy of the golden file with one weight changed must fail where that weight matters.
#[test]
fn a_changed_weight_is_caught() {
    let path = golden_path();
    let mut tensors = Tensors::read(&path).unwrap();
    let bias = tensors.tensors.get_mut("param.dec.32x32_aux_conv.bias").expect("the output conv bias");
    bias.values[0] += 0.05;
    let dir = std::env::temp_dir().join(format!("imm-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("changed.safetensors");
    std::fs::write(&copy, tensors.to_bytes()).unwrap();
    std::fs::copy(path.with_extension("json"), copy.with_extension("json")).unwrap();
    let rows = check(&copy, &Device::flex()).unwrap();
    let failed = failures(&rows);
    for key in ["out.G_t", "out.f_t_simple_edm", "out.sample_pushforward_1"] {
        assert!(failed.iter().any(|f| f.starts_with(key)), "{key} should fail: {failed:?}");
    }
    assert!(!failed.iter().any(|f| f.starts_with("time.")), "time maths do not depend on weights");
    std::fs::remove_dir_all(&dir).ok();
    assert!(check(Path::new("/nonexistent/golden.safetensors"), &Device::flex()).unwrap_err().0.contains("manifest"));
}
