//! SongUNet in half precision: the f32 weights train close to f32, and the target pass stays f32.

use std::collections::BTreeMap;

use burn::optim::GradientsParams;

use imm::io::safetensors::{Stored, Tensors};
use imm::io::weights::{load_named, named_grads, named_params};
use imm::method::loss::{GroupTimes, imm_loss};
use imm::networks::Network;
use imm::networks::songunet::{Precision, SongUNet, SongUNetConfig};
use imm::Rng;
use imm::training::presets::image_preset;
use burn::tensor::{Device, Tensor, TensorData};

/// A small SongUNet computing in `precision`, with weights at a scale where every layer matters
/// (the official init starts the last convolution of each branch near zero).
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
    let fresh = config.init(&mut rng, device).unwrap();
    let tensors = named_params(&fresh)
        .into_iter()
        .map(|(name, s)| (name, Stored { values: rng.normal_vec(s.values.len(), 0.3), shape: s.shape }))
        .collect();
    load_named(fresh, &Tensors { tensors, metadata: BTreeMap::new() }, "", "random weights", None).unwrap()
}

/// IMM's loss on two groups of four 8 x 8 images and its gradients, with the network in `precision`.
fn loss_and_grads(precision: Precision) -> (f32, Vec<f32>, usize) {
    let device = Device::flex().autodiff();
    let net = small(precision, &device);
    let imm = image_preset("mnist-tiny").unwrap().imm;
    let mut rng = Rng::new(3);
    let (g, m, d) = (2, 4, 64);
    let mut normal = |std| Tensor::<2>::from_data(TensorData::new(rng.normal_vec(g * m * d, std), [g * m, d]), &device);
    let (x, eps) = (normal(0.5), normal(0.5));
    let groups = [GroupTimes { s: 0.1, r: 0.55, t: 0.6 }, GroupTimes { s: 0.3, r: 0.85, t: 0.9 }];
    let loss = imm_loss(&net, &imm.precond, x, eps, None, &groups, (imm.a, imm.b)).loss;
    let grads = named_grads(&net, &GradientsParams::from_grads(loss.backward(), &net));
    let count = grads.len();
    (loss.into_scalar::<f32>(), grads.into_values().flat_map(|s| s.values).collect(), count)
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    norm(&mut a.iter().zip(b).map(|(x, y)| (x - y) as f64)) / norm(&mut a.iter().map(|&x| x as f64))
}

#[test]
fn half_precision_trains_the_f32_weights_close_to_f32() {
    let (loss, grads, count) = loss_and_grads(Precision::F32);
    let params = named_params(&small(Precision::F32, &Device::flex())).len();
    assert_eq!(count, params, "every parameter has a gradient");
    let mut errors = Vec::new();
    // Measured: f16 1.4e-4 (loss) and 1.6e-3 (gradients), bf16 1.2e-5 and 1.3e-2.
    for (precision, loss_tolerance, grad_tolerance) in [(Precision::F16, 2e-3, 8e-3), (Precision::Bf16, 2e-2, 6e-2)] {
        let (low_loss, low_grads, low_count) = loss_and_grads(precision);
        assert_eq!(low_count, params, "{precision:?}: every f32 parameter has a gradient");
        let loss_error = ((low_loss - loss) / loss).abs() as f64;
        let grad_error = relative_error(&grads, &low_grads);
        // Zero would mean the network never left f32.
        assert!(loss_error > 0.0 && grad_error > 0.0, "{precision:?} computed exactly as f32");
        assert!(loss_error < loss_tolerance && grad_error < grad_tolerance, "{precision:?}: loss {loss_error:e}, gradients {grad_error:e}");
        errors.push(grad_error);
    }
    assert!(errors[0] < errors[1], "f16 (11-bit mantissa) is closer to f32 than bf16 (8-bit): {errors:?}");
}

#[test]
fn the_target_pass_runs_in_f32() {
    let device = Device::flex();
    let x = Tensor::<2>::from_data(TensorData::new(Rng::new(1).normal_vec(3 * 64, 0.5), [3, 64]), &device);
    let c = || Tensor::<1>::from_data(TensorData::new(vec![100f32, 500.0, 900.0], [3]), &device);
    let run = |net: &SongUNet| net.forward(x.clone(), c(), c(), None).into_data().try_into_vec::<f32>().unwrap();
    let f32_out = run(&small(Precision::F32, &device));
    let bf16 = small(Precision::Bf16, &device);
    assert!(relative_error(&f32_out, &run(&bf16)) > 1e-4, "bf16 differs from f32");
    assert_eq!(run(&bf16.target()), f32_out);
}
