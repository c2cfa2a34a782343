//! SongUNet and DiT in half precision: the f32 weights train close to f32, and the target pass
//! stays f32.

use std::collections::BTreeMap;

use burn::optim::GradientsParams;

use imm::io::safetensors::{Stored, Tensors};
use imm::io::weights::{load_named, named_grads, named_params};
use imm::method::loss::{GroupTimes, imm_loss};
use imm::io::weights::Named;
use imm::networks::dit::{DiT, DiTConfig};
use imm::networks::songunet::{SongUNet, SongUNetConfig};
use imm::networks::{Network, Precision};
use imm::Rng;
use imm::training::presets::image_preset;
use burn::tensor::{Device, Tensor, TensorData};

/// `fresh` with random weights of `std`, a scale where every layer matters (the official inits
/// start the last layer of each branch at or near zero).
fn randomised<N: Named>(fresh: N, rng: &mut Rng, std: f64) -> N {
    let tensors = named_params(&fresh)
        .into_iter()
        .map(|(name, s)| (name, Stored { values: rng.normal_vec(s.values.len(), std), shape: s.shape }))
        .collect();
    load_named(fresh, &Tensors { tensors, metadata: BTreeMap::new() }, "", "random weights", None).unwrap()
}

/// A small SongUNet computing in `precision`.
fn small(precision: Precision, device: &Device) -> SongUNet {
    let config = SongUNetConfig::new()
        .with_img_resolution(8)
        .with_in_channels(1)
        .with_out_channels(1)
        .with_model_channels(8)
        .with_channel_mult(vec![1, 2])
        .with_num_blocks(1)
        .with_attn_resolutions(vec![4])
        .with_precision(Some(precision));
    let mut rng = Rng::new(7);
    randomised(config.init(&mut rng, device).unwrap(), &mut rng, 0.3)
}

/// A small DiT computing in `precision`.
fn small_dit(precision: Precision, device: &Device) -> DiT {
    let config = DiTConfig::new().with_img_resolution(8).with_in_channels(1).with_hidden_size(16).with_depth(2).with_num_heads(2)
        .with_precision(Some(precision));
    let mut rng = Rng::new(7);
    randomised(config.init(&mut rng, device).unwrap(), &mut rng, 0.1)
}

/// IMM's loss on two groups of four 8 x 8 images and its gradients.
fn loss_and_grads<N: Network>(net: &N) -> (f32, Vec<f32>, usize) {
    let device = net.devices()[0].clone();
    let imm = image_preset("mnist-tiny").unwrap().imm;
    let mut rng = Rng::new(3);
    let (g, m, d) = (2, 4, 64);
    let mut normal = |std| Tensor::<2>::from_data(TensorData::new(rng.normal_vec(g * m * d, std), [g * m, d]), &device);
    let (x, eps) = (normal(0.5), normal(0.5));
    let groups = [GroupTimes { s: 0.1, r: 0.55, t: 0.6 }, GroupTimes { s: 0.3, r: 0.85, t: 0.9 }];
    let loss = imm_loss(net, &imm.precond, x, eps, None, &groups, (imm.a, imm.b)).loss;
    let grads = named_grads(net, &GradientsParams::from_grads(loss.backward(), net));
    let count = grads.len();
    (loss.into_scalar::<f32>(), grads.into_values().flat_map(|s| s.values).collect(), count)
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    norm(&mut a.iter().zip(b).map(|(x, y)| (x - y) as f64)) / norm(&mut a.iter().map(|&x| x as f64))
}

/// Loss and gradients in f16 and bf16 against f32: close, not equal, and f16 the closer; every
/// f32 parameter but the `fixed` ones gets its gradient.
fn check_half_precision<N: Network>(build: impl Fn(Precision) -> N, fixed: usize, tolerances: [(f64, f64); 2]) {
    let (loss, grads, count) = loss_and_grads(&build(Precision::F32));
    let params = named_params(&build(Precision::F32)).len() - fixed;
    assert_eq!(count, params, "every parameter has a gradient");
    let mut errors = Vec::new();
    for (precision, (loss_tolerance, grad_tolerance)) in [Precision::F16, Precision::Bf16].into_iter().zip(tolerances) {
        let (low_loss, low_grads, low_count) = loss_and_grads(&build(precision));
        assert_eq!(low_count, params, "{precision:?}: every f32 parameter has a gradient");
        let loss_error = ((low_loss - loss) / loss).abs() as f64;
        let grad_error = relative_error(&grads, &low_grads);
        println!("{precision:?}: loss {loss_error:.1e}, gradients {grad_error:.1e}");
        // Zero would mean the network never left f32.
        assert!(loss_error > 0.0 && grad_error > 0.0, "{precision:?} computed exactly as f32");
        assert!(loss_error < loss_tolerance && grad_error < grad_tolerance, "{precision:?}: loss {loss_error:e}, gradients {grad_error:e}");
        errors.push(grad_error);
    }
    assert!(errors[0] < errors[1], "f16 (11-bit mantissa) is closer to f32 than bf16 (8-bit): {errors:?}");
}

#[test]
fn half_precision_trains_the_f32_weights_close_to_f32() {
    let device = Device::flex().autodiff();
    // Measured: f16 4.6e-5 (loss) and 2.0e-3 (gradients), bf16 1.6e-3 and 2.3e-2.
    check_half_precision(|p| small(p, &device), 0, [(2e-3, 8e-3), (2e-2, 6e-2)]);
    // DiT's position table is fixed. Measured: f16 2.8e-4 and 1.6e-3, bf16 3.5e-4 and 1.1e-2.
    check_half_precision(|p| small_dit(p, &device), 1, [(2e-3, 8e-3), (2e-2, 6e-2)]);
}

#[test]
fn the_target_pass_runs_in_f32() {
    let device = Device::flex();
    let x = Tensor::<2>::from_data(TensorData::new(Rng::new(1).normal_vec(3 * 64, 0.5), [3, 64]), &device);
    let c = || Tensor::<1>::from_data(TensorData::new(vec![100f32, 500.0, 900.0], [3]), &device);
    let run = |net: &dyn Fn(Tensor<2>) -> Tensor<2>| net(x.clone()).into_data().try_into_vec::<f32>().unwrap();
    let (f32_net, bf16) = (small(Precision::F32, &device), small(Precision::Bf16, &device));
    let f32_out = run(&|x| f32_net.forward(x, c(), c(), None));
    assert!(relative_error(&f32_out, &run(&|x| bf16.forward(x, c(), c(), None))) > 1e-4, "bf16 differs from f32");
    assert_eq!(run(&|x| bf16.target().forward(x, c(), c(), None)), f32_out);
    let (f32_net, bf16) = (small_dit(Precision::F32, &device), small_dit(Precision::Bf16, &device));
    let f32_out = run(&|x| f32_net.forward(x, c(), c(), None));
    assert!(relative_error(&f32_out, &run(&|x| bf16.forward(x, c(), c(), None))) > 1e-4, "bf16 differs from f32");
    assert_eq!(run(&|x| bf16.target().forward(x, c(), c(), None)), f32_out);
}
