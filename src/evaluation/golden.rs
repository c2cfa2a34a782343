//! Parity with the official code (SongUNet with or without labels, DiT, the Stable Diffusion VAE): loads a golden file (layout in `shared/golden/README.md`: weights
//! under `param.<official name>`, inputs `in.*`, outputs `out.*`, gradients `grad.*`, time maths
//! `time.*`, and a manifest of the same stem with `.json`) and recomputes every output it holds.

use std::path::Path;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

use crate::data::latents::LatentNorm;
use crate::io::safetensors::{Stored, Tensors};
use crate::io::weights::{load_named, named_grads};
use crate::method::loss::{GroupTimes, imm_loss};
use crate::method::meanflow::{MeanFlow, mean_velocity, meanflow_loss, meanflow_target};
use crate::method::Method;
use crate::method::precond::{Condition, Parameterization, Precond, TimeInput};
use crate::method::sampler::{Grid, pushforward, restart};
use crate::method::schedule::{Schedule, Times};
use crate::networks::Network;
use crate::networks::dit::{DiT, DiTConfig};
use crate::networks::songunet::{SongUNet, SongUNetConfig};
use crate::networks::vae::Vae;
use crate::{Error, Labels, Rng};

/// Tolerances of the golden README (relative: max-abs error over max-abs reference value).
pub const TOL_OUTPUT: f64 = 1e-4;
pub const TOL_GRAD: f64 = 1e-3;

/// One compared tensor.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub max_abs: f64,
    pub rel: f64,
    pub tol: f64,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.rel <= self.tol
    }
}

fn compare(name: &str, ours: &[f64], golden: &[f32], tol: f64) -> Row {
    let scale = golden.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let max_abs = if ours.len() == golden.len() {
        ours.iter().zip(golden).fold(0f64, |m, (&a, &b)| m.max((a - b as f64).abs()).max(if a.is_nan() { f64::INFINITY } else { 0.0 }))
    } else {
        f64::INFINITY
    };
    let rel = if scale > 0.0 { max_abs / scale } else { max_abs };
    Row { name: name.to_string(), max_abs, rel, tol }
}

struct Golden {
    tensors: Tensors,
    manifest: Value,
    what: String,
}

impl Golden {
    fn get(&self, key: &str) -> Result<&Stored, Error> {
        self.tensors.get(key).ok_or_else(|| Error::new(format!("{} has no tensor {key}", self.what)))
    }

    fn number(&self, key: &str) -> Result<f64, Error> {
        self.manifest[key].as_f64().ok_or_else(|| Error::new(format!("the manifest of {} has no number '{key}'", self.what)))
    }

    fn f64s(&self, key: &str) -> Result<Vec<f64>, Error> {
        Ok(self.get(key)?.values.iter().map(|&v| v as f64).collect())
    }

    fn config(&self) -> Result<SongUNetConfig, Error> {
        let x = self.get("in.x")?;
        let [_, channels, h, w] = x.shape[..] else {
            return Err(Error::new(format!("in.x of {} is not [B, C, H, W]", self.what)));
        };
        if h != w {
            return Err(Error::new("golden images must be square"));
        }
        let c = &self.manifest["songunet_config"];
        let usize_of = |key: &str, default: usize| c[key].as_u64().map_or(default, |v| v as usize);
        let list = |key: &str| -> Result<Vec<usize>, Error> {
            c[key]
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
                .ok_or_else(|| Error::new(format!("songunet_config.{key} missing in the manifest of {}", self.what)))
        };
        Ok(SongUNetConfig::new()
            .with_img_resolution(h)
            .with_in_channels(channels)
            .with_out_channels(channels)
            .with_model_channels(usize_of("model_channels", 128))
            .with_channel_mult(list("channel_mult")?)
            .with_num_blocks(usize_of("num_blocks", 4))
            .with_attn_resolutions(list("attn_resolutions")?)
            .with_channel_mult_emb(usize_of("channel_mult_emb", 4))
            .with_channel_mult_noise(usize_of("channel_mult_noise", 1))
            .with_label_dim(Some(self.label_dim()).filter(|&l| l > 0))
            .with_dropout(0.0))
    }

    fn dit_config(&self) -> Result<DiTConfig, Error> {
        let c = &self.manifest["dit_config"];
        let missing = |key: &str| Error::new(format!("dit_config.{key} missing in the manifest of {}", self.what));
        let size = |key: &str| c[key].as_u64().map(|v| v as usize).ok_or_else(|| missing(key));
        Ok(DiTConfig::new()
            .with_img_resolution(size("img_resolution")?)
            .with_in_channels(size("in_channels")?)
            .with_patch_size(size("patch_size")?)
            .with_hidden_size(size("hidden_size")?)
            .with_depth(size("depth")?)
            .with_num_heads(size("num_heads")?)
            .with_mlp_ratio(c["mlp_ratio"].as_f64().ok_or_else(|| missing("mlp_ratio"))?)
            .with_num_classes(size("num_classes")?)
            .with_s_embed(c["s_embed"].as_bool().unwrap_or(true))
            .with_frequency_embedding_size(size("frequency_embedding_size").unwrap_or(256))
            .with_temb_mult(size("temb_mult").unwrap_or(1)))
    }

    /// Classes of the labels; 0 for an unconditional file.
    fn label_dim(&self) -> usize {
        self.manifest["label_dim"].as_u64().unwrap_or(0) as usize
    }

    /// The labels of `key` (class indices stored as floats), when the file is conditional.
    fn labels(&self, key: &str) -> Result<Option<Labels>, Error> {
        let classes = self.label_dim();
        if classes == 0 {
            return Ok(None);
        }
        let index = self.get(key)?.values.iter().map(|&v| v.round().max(0.0) as usize).collect();
        Labels::new(index, classes).map(Some).map_err(|e| Error::new(format!("{key} of {}: {e}", self.what)))
    }

    /// The second time input the manifest names: `1000 s` or `1000 (t - s)`.
    fn time_input(&self) -> Result<TimeInput, Error> {
        match self.manifest["temb_type"].as_str().unwrap_or("identity") {
            "identity" => Ok(TimeInput::S),
            "stride" => Ok(TimeInput::Stride),
            other => Err(Error::new(format!("the manifest of {} has an unknown temb_type '{other}'", self.what))),
        }
    }

    fn precond(&self, parameterization: Parameterization) -> Result<Precond, Error> {
        Ok(Precond {
            schedule: Schedule::OtFm,
            parameterization,
            sigma_data: self.number("sigma_data")?,
            time_input: self.time_input()?,
            time_scale: self.number("time_scale")?,
        })
    }

    fn times(&self, k: u32) -> Result<Times, Error> {
        Ok(Times { schedule: Schedule::OtFm, eps: self.number("eps")?, t_max: self.number("T")?, k, min_gap: 0.0 })
    }

    /// A [B, D] tensor of an image input; `index` picks one slice of a stacked input.
    fn batch(&self, key: &str, index: Option<usize>, device: &Device) -> Result<Tensor<2>, Error> {
        let stored = self.get(key)?;
        let (values, shape) = match index {
            Some(i) => {
                let n: usize = stored.shape[1..].iter().product();
                (stored.values[i * n..(i + 1) * n].to_vec(), &stored.shape[1..])
            }
            None => (stored.values.clone(), &stored.shape[..]),
        };
        let b = shape[0];
        let d = values.len() / b;
        Ok(Tensor::from_data(TensorData::new(values, [b, d]), device))
    }
}

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32").into_iter().map(f64::from).collect()
}

/// Recomputes every output of the golden file at `path` on `device` and compares it.
pub fn check(path: &Path, device: &Device) -> Result<Vec<Row>, Error> {
    let what = path.display().to_string();
    let manifest_path = path.with_extension("json");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| Error::new(format!("cannot read the manifest {} beside the golden file: {e}", manifest_path.display())))?;
    let golden = Golden {
        tensors: Tensors::read(path)?,
        manifest: serde_json::from_str(&manifest)
            .map_err(|e| Error::new(format!("{} is not JSON: {e}", manifest_path.display())))?,
        what,
    };
    if golden.manifest["model"].as_str().is_some_and(|m| m.contains("AutoencoderKL")) {
        return check_vae(&golden, device);
    }
    let schedule_name = golden.manifest["schedule"].as_str().unwrap_or_default();
    if !schedule_name.starts_with("OT-FM") {
        return Err(Error::new(format!("golden schedule '{schedule_name}' is not supported (OT-FM only)")));
    }
    match golden.manifest["network"].as_str().unwrap_or("SongUNet") {
        network if network.starts_with("SongUNet") => {
            let net = golden.config()?.init(&mut Rng::new(0), &device.clone().autodiff())?;
            let net: SongUNet = load_named(net, &golden.tensors, "param.", &golden.what, None)?;
            if golden.tensors.get("out.u_tgt").is_some() {
                return compare_meanflow(&golden, net, device);
            }
            compare_all(&golden, net, device)
        }
        "DiT" => {
            let net = golden.dit_config()?.init(&mut Rng::new(0), &device.clone().autodiff())?;
            let net: DiT = load_named(net, &golden.tensors, "param.", &golden.what, None)?;
            compare_all(&golden, net, device)
        }
        other => Err(Error::new(format!("{} holds a {other} network, which this build cannot check", golden.what))),
    }
}

/// The VAE's encoder (moments, posterior mean and std), decoder, and an encode-decode round trip.
fn check_vae(golden: &Golden, device: &Device) -> Result<Vec<Row>, Error> {
    let groups = golden.manifest["config"]["norm_num_groups"].as_u64().unwrap_or(32) as usize;
    let (vae, _) = Vae::load(&golden.tensors, "param.", groups, &golden.what, device)?;
    let image = |key: &str| -> Result<Tensor<4>, Error> {
        let stored = golden.get(key)?;
        let shape: [usize; 4] = stored.shape.clone().try_into().map_err(|_| Error::new(format!("{key} of {} is not 4-D", golden.what)))?;
        Ok(Tensor::from_data(TensorData::new(stored.values.clone(), shape), device))
    };
    let read = |t: Tensor<4>| t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32").into_iter().map(f64::from).collect::<Vec<_>>();
    let x = image("in.image")?;
    let posterior = vae.encode(x.clone());
    let mut rows = vec![compare("out.moments", &read(vae.moments(x)), &golden.get("out.moments")?.values, TOL_OUTPUT)];
    rows.push(compare("out.mean", &read(posterior.mean.clone()), &golden.get("out.mean")?.values, TOL_OUTPUT));
    rows.push(compare("out.std", &read(posterior.std), &golden.get("out.std")?.values, TOL_OUTPUT));
    rows.push(compare("out.decoded", &read(vae.decode(image("in.latent")?)), &golden.get("out.decoded")?.values, TOL_OUTPUT));
    rows.push(compare("out.roundtrip", &read(vae.decode(posterior.mean)), &golden.get("out.roundtrip")?.values, TOL_OUTPUT));
    Ok(rows)
}

/// The samplers from the same start z, with the manifest's parameterisation (Simple-EDM by
/// default); conditional files sample their own labels, with and without guidance `w`.
fn compare_samplers<N: Network>(golden: &Golden, eval: &N, (edm, fm): (&Precond, &Precond), guidance: Option<f64>, device: &Device) -> Result<Vec<Row>, Error> {
    let mut rows = Vec::new();
    let sampler_f = match golden.manifest["sampler_f_type"].as_str().unwrap_or("simple_edm") {
        "euler_fm" => fm,
        _ => edm,
    };
    let sample_labels = golden.labels("in.sample_labels")?;
    let mut conditions = vec![(String::new(), Condition::labels(sample_labels.clone()))];
    if let (Some(w), Some(_)) = (guidance, &sample_labels) {
        conditions.push((format!("_cfg{w}"), Condition::guided(sample_labels.clone(), w)?));
    }
    let (eps, t_max) = (golden.number("eps")?, golden.number("T")?);
    let z = golden.batch("in.z", None, device)?;
    let grids = [
        ("pushforward_1", Grid::Uniform, 1),
        ("pushforward_2_eta1.4", Grid::Eta(vec![1.4]), 2),
        ("pushforward_4_uniform", Grid::Uniform, 4),
        ("pushforward_1_uniform", Grid::Uniform, 1),
        ("pushforward_2_uniform", Grid::Uniform, 2),
        ("pushforward_8_uniform", Grid::Uniform, 8),
    ];
    let restart_noise = golden.get("in.restart_noise")?;
    let mut grids_checked = std::collections::BTreeSet::new();
    for (suffix, condition) in &conditions {
        let jump = |x: Tensor<2>, s: f64, t: f64| {
            let n = x.dims()[0];
            sampler_f.f(eval, x, &vec![s; n], &vec![t; n], condition)
        };
        for (key, grid, steps) in &grids {
            let name = format!("out.sample_{key}{suffix}");
            let Some(stored) = golden.tensors.get(&name) else { continue };
            let ts = grid.timesteps(Schedule::OtFm, eps, t_max, *steps)?;
            let listed: Vec<f64> = golden.manifest["ts"][key].as_array().map_or(Vec::new(), |a| a.iter().filter_map(Value::as_f64).collect());
            let as_f32: Vec<f32> = listed.iter().map(|&v| v as f32).collect();
            if grids_checked.insert(key) {
                rows.push(compare(&format!("ts.{key}"), &ts, &as_f32, TOL_OUTPUT));
            }
            let out = pushforward(z.clone(), &ts, jump);
            rows.push(compare(&name, &values(out), &stored.values, TOL_OUTPUT));
        }
        let ts = Grid::Uniform.timesteps(Schedule::OtFm, eps, t_max, 4)?;
        if restart_noise.shape.first() != Some(&(ts.len() - 2)) {
            return Err(Error::new(format!("in.restart_noise of {} needs one slice per intermediate time", golden.what)));
        }
        let name = format!("out.sample_restart_4_uniform{suffix}");
        let out = restart(z.clone(), &ts, Schedule::OtFm, jump, |i| {
            golden.batch("in.restart_noise", Some(i), device).expect("checked above")
        });
        rows.push(compare(&name, &values(out), &golden.get(&name)?.values, TOL_OUTPUT));
    }
    Ok(rows)
}

/// Every comparison of a golden file, for a network with its weights loaded on an autodiff device.
fn compare_all<N: Network>(golden: &Golden, net: N, device: &Device) -> Result<Vec<Row>, Error> {
    let mut rows = Vec::new();
    let ad = net.devices()[0].clone();
    let eval = net.valid();
    let labels = golden.labels("in.labels")?;
    let plain = Condition::labels(labels.clone());

    // Per-sample times, and the groups of M contiguous samples that share them.
    let m = golden.manifest["particles_M"].as_u64().unwrap_or(0) as usize;
    let (t, s, r) = (golden.f64s("in.t")?, golden.f64s("in.s")?, golden.f64s("in.r")?);
    if m == 0 || t.len() % m != 0 {
        return Err(Error::new(format!("particles_M in the manifest must divide the batch ({})", t.len())));
    }
    let groups: Vec<GroupTimes> = (0..t.len()).step_by(m).map(|i| GroupTimes { s: s[i], r: r[i], t: t[i] }).collect();
    let x = golden.batch("in.x", None, device)?;
    let noise = golden.batch("in.noise", None, device)?;
    let x_t = Schedule::OtFm.interpolate(x, noise, &t);

    let edm = golden.precond(Parameterization::SimpleEdm)?;
    let fm = golden.precond(Parameterization::EulerFm)?;
    let g = edm.g_raw(&eval, x_t.clone(), &s, &t, labels.as_ref());
    rows.push(compare("out.G_t", &values(g), &golden.get("out.G_t")?.values, TOL_OUTPUT));
    let guidance = golden.manifest["cfg_scale"].as_f64();
    if let Some(labels) = &labels {
        let null = Labels::null(labels.len(), labels.classes());
        let g = edm.g_raw(&eval, x_t.clone(), &s, &t, Some(&null));
        rows.push(compare("out.G_t_null", &values(g), &golden.get("out.G_t_null")?.values, TOL_OUTPUT));
    }
    for (p, name) in [(&edm, "simple_edm"), (&fm, "euler_fm")] {
        let key = format!("out.f_t_{name}");
        let f = p.f(&eval, x_t.clone(), &s, &t, &plain);
        rows.push(compare(&key, &values(f), &golden.get(&key)?.values, TOL_OUTPUT));
        if let (Some(w), Some(_)) = (guidance, &labels) {
            let key = format!("{key}_cfg{w}");
            let f = p.f(&eval, x_t.clone(), &s, &t, &Condition::guided(labels.clone(), w)?);
            rows.push(compare(&key, &values(f), &golden.get(&key)?.values, TOL_OUTPUT));
        }
    }

    // The losses, their parts, and d loss_simple_edm / d params through the autodiff network.
    let (a, b) = (golden.number("a")?, golden.number("b")?);
    let (x_ad, noise_ad) = (golden.batch("in.x", None, &ad)?, golden.batch("in.noise", None, &ad)?);
    for (p, name) in [(&fm, "euler_fm"), (&edm, "simple_edm")] {
        let terms = imm_loss(&net, p, x_ad.clone(), noise_ad.clone(), labels.as_ref(), &groups, (a, b));
        let loss = terms.loss.clone().inner().into_scalar::<f32>() as f64;
        rows.push(compare(&format!("out.loss_{name}"), &[loss], &golden.get(&format!("out.loss_{name}"))?.values, TOL_OUTPUT));
        let kernel = format!("out.kernel_w_{name}");
        rows.push(compare(&kernel, &terms.kernel_scale, &golden.get(&kernel)?.values, TOL_OUTPUT));
        let mmd_key = format!("out.mmd_{name}");
        if golden.tensors.get(&mmd_key).is_some() {
            let mmd = values(terms.mmd.clone().inner().reshape([1, groups.len()]));
            rows.push(compare(&mmd_key, &mmd, &golden.get(&mmd_key)?.values, TOL_OUTPUT));
        }
        if p == &edm {
            rows.push(compare("out.w", &terms.weight, &golden.get("out.w")?.values, TOL_OUTPUT));
            rows.extend(compare_grads(golden, &net, terms.loss, "grad.", "", TOL_GRAD));
        }
    }

    // Time maths.
    let (qt, qs) = (golden.f64s("time.t")?, golden.f64s("time.s")?);
    for k in [15, 12] {
        let times = golden.times(k)?;
        let ours: Vec<f64> = qs.iter().zip(&qt).map(|(&s, &t)| times.r(s, t)).collect();
        let key = format!("time.r_k{k}");
        rows.push(compare(&key, &ours, &golden.get(&key)?.values, TOL_OUTPUT));
    }
    let times = golden.times(golden.number("k_for_in.r")? as u32)?;
    let ours: Vec<f64> = s.iter().zip(&t).map(|(&s, &t)| times.r(s, t)).collect();
    rows.push(compare("in.r", &ours, &golden.get("in.r")?.values, TOL_OUTPUT));

    rows.extend(compare_samplers(golden, &eval, (&edm, &fm), guidance, device)?);
    if golden.tensors.get("in.vae_moments").is_some() {
        rows.extend(compare_latent_norm(golden)?);
    }
    Ok(rows)
}

/// d loss / d params against the stored `<prefix><name>` tensors; `note` tells rows apart.
fn compare_grads<N: Network>(golden: &Golden, net: &N, loss: Tensor<1>, prefix: &str, note: &str, tol: f64) -> Vec<Row> {
    let grads = GradientsParams::from_grads(loss.backward(), net);
    let ours = named_grads(net, &grads);
    let mut rows = Vec::new();
    for (key, stored) in golden.tensors.tensors.range(prefix.to_string()..) {
        let Some(param) = key.strip_prefix(prefix) else { break };
        let ours: Vec<f64> = ours.get(param).map_or(Vec::new(), |g| g.values.iter().map(|&v| v as f64).collect());
        rows.push(compare(&format!("{key}{note}"), &ours, &stored.values, tol));
    }
    rows
}

/// MeanFlow on the IMM network (golden README, "MeanFlow"): the interpolant, u and the Euler-FM
/// map, each time variant's loss (with the stored target and with our difference) and its
/// gradients, the adaptive weight with the ImageNet constants, and the samplers.
fn compare_meanflow<N: Network>(golden: &Golden, net: N, device: &Device) -> Result<Vec<Row>, Error> {
    let eval = net.valid();
    let (t, r) = (golden.f64s("in.t")?, golden.f64s("in.r")?);
    let (x, eps) = (golden.batch("in.x", None, device)?, golden.batch("in.eps", None, device)?);
    let z_t = Schedule::OtFm.interpolate(x.clone(), eps.clone(), &t);
    let v = eps - x;
    let mut rows = vec![
        compare("out.z_t", &values(z_t.clone()), &golden.get("out.z_t")?.values, TOL_OUTPUT),
        compare("out.v", &values(v.clone()), &golden.get("out.v")?.values, TOL_OUTPUT),
    ];
    let base = golden.precond(Parameterization::EulerFm)?;
    let f = base.f(&eval, z_t.clone(), &r, &t, &Condition::none());
    rows.push(compare("out.f_euler_fm", &values(f), &golden.get("out.f_euler_fm")?.values, TOL_OUTPUT));
    // The steps with which a float32 difference is closest to the exact du/dt, and the README's
    // tolerances for them (du/dt, the target, the gradients through it).
    let variants = [
        ("", base.clone(), 3e-5, [5e-3, 2e-3, 3e-2]),
        ("_stride", Precond { time_input: TimeInput::Stride, ..base.clone() }, 3e-5, [5e-3, 2e-3, 3e-2]),
        ("_ts1", Precond { time_scale: 1.0, ..base.clone() }, 3e-3, [5e-4, 1e-4, 1e-3]),
    ];
    for (suffix, precond, h, tols) in variants {
        if golden.tensors.get(&format!("out.u{suffix}")).is_some() {
            rows.extend(compare_meanflow_variant(golden, &net, &precond, suffix, h, tols)?);
        }
    }
    let method = MeanFlow { precond: base.clone(), ..MeanFlow::on(&base) };
    let z = golden.batch("in.z", None, device)?;
    for steps in [1, 2, 4] {
        let key = format!("out.sample_{steps}");
        let Some(stored) = golden.tensors.get(&key) else { continue };
        let sample = method.sample(&eval, z.clone(), &Condition::none(), steps, &mut Rng::new(0))?;
        rows.push(compare(&key, &values(sample), &stored.values, TOL_OUTPUT));
    }
    Ok(rows)
}

/// One time variant of MeanFlow's golden values (`suffix`: none, `_stride`, `_ts1`): u, du/dt and
/// the target by a central difference with step `h` (`tols`: du/dt over the r < t samples, the
/// target, the gradients through it), and the loss and gradients with the stored target.
fn compare_meanflow_variant<N: Network>(golden: &Golden, net: &N, precond: &Precond, suffix: &str, h: f64, tols: [f64; 3]) -> Result<Vec<Row>, Error> {
    let ad = net.devices()[0].clone();
    let eval = net.valid();
    let (t, r) = (golden.f64s("in.t")?, golden.f64s("in.r")?);
    let (x, eps) = (golden.batch("in.x", None, &ad)?, golden.batch("in.eps", None, &ad)?);
    let z_t = Schedule::OtFm.interpolate(x.clone(), eps.clone(), &t);
    let get = |key: &str| golden.get(&format!("out.{key}{suffix}"));
    let mut rows = Vec::new();
    let u = mean_velocity(&eval, precond, z_t.clone().inner(), &r, &t, None);
    rows.push(compare(&format!("out.u{suffix}"), &values(u), &get("u")?.values, TOL_OUTPUT));

    let (dudt, u_tgt) = meanflow_target(&eval, precond, z_t.clone().inner(), (eps - x).inner(), &r, &t, None, h);
    let d = z_t.dims()[1];
    let moving = |all: Vec<f64>| -> Vec<f64> { (0..t.len()).filter(|&i| r[i] < t[i]).flat_map(|i| all[i * d..(i + 1) * d].to_vec()).collect() };
    let stored_dudt: Vec<f64> = get("dudt")?.values.iter().map(|&v| v as f64).collect();
    let stored_dudt: Vec<f32> = moving(stored_dudt).into_iter().map(|v| v as f32).collect();
    rows.push(compare(&format!("out.dudt{suffix} (difference, r < t)"), &moving(values(dudt)), &stored_dudt, tols[0]));
    rows.push(compare(&format!("out.u_tgt{suffix} (difference)"), &values(u_tgt.clone()), &get("u_tgt")?.values, tols[1]));
    if let Ok(fd32) = get("u_tgt_fd32") {
        rows.push(compare(&format!("out.u_tgt_fd32{suffix}"), &values(u_tgt.clone()), &fd32.values, tols[1]));
    }
    let (p, c) = (golden.number("norm_p")?, golden.number("norm_eps")?);
    let grads_key = format!("grad{suffix}.");
    let with_difference = meanflow_loss(net, precond, z_t.clone(), &r, &t, None, u_tgt, (p, c)).loss;
    rows.push(compare(&format!("out.loss{suffix} (difference)"), &[scalar(&with_difference)], &get("loss")?.values, TOL_OUTPUT));
    rows.extend(compare_grads(golden, net, with_difference, &grads_key, " (difference)", tols[2]));

    let stored = golden.batch(&format!("out.u_tgt{suffix}"), None, &eval.devices()[0])?;
    let terms = meanflow_loss(net, precond, z_t.clone(), &r, &t, None, stored.clone(), (p, c));
    rows.push(compare(&format!("out.loss{suffix}"), &[scalar(&terms.loss)], &get("loss")?.values, TOL_OUTPUT));
    if let (Ok(per_sample), Ok(weight)) = (get("loss_per_sample"), get("weight")) {
        rows.push(compare(&format!("out.loss_per_sample{suffix}"), &vector(terms.per_sample.clone()), &per_sample.values, TOL_OUTPUT));
        rows.push(compare(&format!("out.weight{suffix}"), &vector(terms.weight.clone()), &weight.values, TOL_OUTPUT));
    }
    rows.extend(compare_grads(golden, net, terms.loss, &grads_key, "", TOL_GRAD));
    if suffix.is_empty() {
        let terms = meanflow_loss(net, precond, z_t, &r, &t, None, stored, (1.0, 0.01));
        rows.push(compare("out.weight_p1_c0.01", &vector(terms.weight), &golden.get("out.weight_p1_c0.01")?.values, TOL_OUTPUT));
        rows.push(compare("out.loss_p1_c0.01", &[scalar(&terms.loss)], &golden.get("out.loss_p1_c0.01")?.values, TOL_OUTPUT));
    }
    Ok(rows)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().inner().into_scalar::<f32>() as f64
}

fn vector(t: Tensor<1>) -> Vec<f64> {
    let n = t.dims()[0];
    values(t.inner().reshape([1, n]))
}

/// The official encoder wrapper's latents from stored posteriors and noise, and back.
fn compare_latent_norm(golden: &Golden) -> Result<Vec<Row>, Error> {
    let vae = &golden.manifest["vae"];
    let constants = |key: &str| -> Result<Vec<f64>, Error> {
        vae[key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).ok_or_else(|| Error::new(format!("the manifest of {} has no vae.{key}", golden.what)))
    };
    let norm = LatentNorm::new(&constants("raw_mean")?, &constants("raw_std")?);
    let (moments, eps) = (golden.get("in.vae_moments")?, golden.get("in.vae_eps")?);
    let per_sample = eps.values.len() / eps.shape[0];
    let latents: Vec<f32> = moments
        .values
        .chunks(2 * per_sample)
        .zip(eps.values.chunks(per_sample))
        .flat_map(|(m, e)| norm.sample(m, e))
        .collect();
    let raw = norm.raw(&golden.get("out.vae_latents")?.values, per_sample / norm.channels());
    let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    Ok(vec![
        compare("out.vae_latents", &wide(latents), &golden.get("out.vae_latents")?.values, TOL_OUTPUT),
        compare("out.vae_raw_from_latents", &wide(raw), &golden.get("out.vae_raw_from_latents")?.values, TOL_OUTPUT),
    ])
}
