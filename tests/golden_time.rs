//! The time maths against the golden file of the official code (shared/golden). The file is a
//! parameter: IMM_GOLDEN=path/to/golden.safetensors (its manifest is the .json beside it).

use std::path::PathBuf;

use imm::precond::{Parameterization, Precond, TimeInput};
use imm::sampler::Grid;
use imm::schedule::{Schedule, Times, weight};

fn golden_path() -> PathBuf {
    std::env::var_os("IMM_GOLDEN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/golden_songunet_small.safetensors")
    })
}

struct Golden {
    bytes: Vec<u8>,
    manifest: serde_json::Value,
}

impl Golden {
    fn load() -> Self {
        let path = golden_path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read golden file {}: {e}", path.display()));
        let manifest = std::fs::read_to_string(path.with_extension("json")).expect("golden manifest beside the file");
        Self { bytes, manifest: serde_json::from_str(&manifest).expect("manifest is JSON") }
    }

    /// An F32 tensor of the safetensors file: an 8-byte little-endian header length, a JSON header
    /// naming each tensor's dtype and byte range, then the data.
    fn tensor(&self, name: &str) -> Vec<f64> {
        let header_len = u64::from_le_bytes(self.bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&self.bytes[8..8 + header_len]).expect("safetensors header");
        let entry = &header[name];
        assert_eq!(entry["dtype"], "F32", "golden tensor {name} missing or not F32");
        let range: Vec<usize> = entry["data_offsets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let data = &self.bytes[8 + header_len + range[0]..8 + header_len + range[1]];
        data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect()
    }

    fn number(&self, key: &str) -> f64 {
        self.manifest[key].as_f64().unwrap_or_else(|| panic!("manifest has no number {key}"))
    }

    fn times(&self, k: u32) -> Times {
        Times { schedule: Schedule::OtFm, eps: self.number("eps"), t_max: self.number("T"), k, min_gap: 0.0 }
    }

    fn precond(&self, parameterization: Parameterization) -> Precond {
        Precond {
            schedule: Schedule::OtFm,
            parameterization,
            sigma_data: self.number("sigma_data"),
            time_input: TimeInput::S,
            time_scale: self.number("time_scale"),
        }
    }

    /// (s, r, t) of each group: samples are contiguous groups of M.
    fn groups(&self) -> Vec<(f64, f64, f64)> {
        let m = self.manifest["particles_M"].as_u64().unwrap() as usize;
        let (s, r, t) = (self.tensor("in.s"), self.tensor("in.r"), self.tensor("in.t"));
        (0..s.len()).step_by(m).map(|i| (s[i], r[i], t[i])).collect()
    }
}

/// |a - b| <= tol * max(|b|) elementwise over the vector (the golden README's relative error);
/// stored values are f32, so tol is about f32 resolution.
fn assert_close(name: &str, ours: &[f64], golden: &[f64], tol: f64) {
    assert_eq!(ours.len(), golden.len(), "{name}: length");
    let scale = golden.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = ours.iter().zip(golden).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= tol * scale, "{name}: max abs error {err:e} over max {scale:e} (ours {ours:?}, golden {golden:?})");
}

#[test]
fn r_mapping_matches_the_official_times() {
    let g = Golden::load();
    let (t, s) = (g.tensor("time.t"), g.tensor("time.s"));
    for k in [15, 12] {
        let times = g.times(k);
        let ours: Vec<f64> = s.iter().zip(&t).map(|(&s, &t)| times.r(s, t)).collect();
        // r is close to t: compare t - r, the quantity that matters, as well as r itself.
        assert_close(&format!("time.r_k{k}"), &ours, &g.tensor(&format!("time.r_k{k}")), 1e-6);
    }
    let k = g.number("k_for_in.r") as u32;
    let times = g.times(k);
    for (s, r, t) in g.groups() {
        let ours = times.r(s, t);
        assert!((ours - r).abs() <= 1e-6 * r, "in.r: {ours} vs {r}");
        assert!(s < ours && ours < t);
    }
}

#[test]
fn weight_and_kernel_scales_match() {
    let g = Golden::load();
    let (a, b) = (g.number("a"), g.number("b"));
    let groups = g.groups();
    let w: Vec<f64> = groups.iter().map(|&(_, _, t)| weight(Schedule::OtFm, t, a, b)).collect();
    assert_close("out.w", &w, &g.tensor("out.w"), 1e-6);
    for (p, key) in [
        (Parameterization::SimpleEdm, "out.kernel_w_simple_edm"),
        (Parameterization::EulerFm, "out.kernel_w_euler_fm"),
    ] {
        let precond = g.precond(p);
        let ours: Vec<f64> = groups.iter().map(|&(s, _, t)| precond.kernel_scale(s, t)).collect();
        assert_close(key, &ours, &g.tensor(key), 1e-6);
    }
}

#[test]
fn sampler_grids_match_the_manifest() {
    let g = Golden::load();
    let (eps, t_max) = (g.number("eps"), g.number("T"));
    let grids = [("pushforward_1", Grid::Uniform, 1), ("pushforward_2_eta1.4", Grid::Eta(vec![1.4]), 2), ("pushforward_4_uniform", Grid::Uniform, 4)];
    for (key, grid, steps) in grids {
        let want: Vec<f64> = g.manifest["ts"][key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ours = grid.timesteps(Schedule::OtFm, eps, t_max, steps).unwrap();
        assert_close(key, &ours, &want, 1e-12);
    }
}
