//! GroupNorm, optionally followed by SiLU (as in every DDPM++ block), as one fused operation with
//! its own backward pass: one pass forward and two backward on the CPU (Flex), one kernel forward
//! and two backward on GPUs (`shaders/group_norm_*.wgsl` on wgpu, the same in CubeCL in
//! `group_norm_gpu.rs` on the other cubecl runtimes). burn has GroupNorm only as a
//! decomposition: a mean, a variance and four broadcast ops forward, about twice as many backward,
//! each a full pass over the activations and, on a GPU, a kernel launch. [`group_norm`] runs the
//! fused operation in f32 where it exists and the decomposition elsewhere, which is also the
//! reference the tests compare it with.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
#[cfg(feature = "gpu")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Tensor, TensorData};

use macerator::Simd;

use super::cpu::{contiguous, exp, for_chunks, images_per_task, sum_of, sum_parts, tensor, values};
use super::mmd::relative_error;
use super::{Kernels, kernels_for};

/// GroupNorm of x over `groups` groups of channels with a per-channel scale gamma and shift beta,
/// then SiLU if `then_silu`; fused where the device has the kernels (f32), plain ops elsewhere.
///
/// # Shapes
/// - x: [B, C, H, W] with C a multiple of `groups`; gamma, beta: [C]
/// - output: [B, C, H, W]
pub fn group_norm(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, groups: usize, epsilon: f64, then_silu: bool) -> Tensor<4> {
    match kernels_for(&x.device(), x.dtype()) {
        Some(kernels) if gamma.dtype() == DType::F32 => group_norm_with(x, gamma, beta, groups, epsilon, then_silu, kernels),
        _ => group_norm_reference(x, gamma, beta, groups, epsilon, then_silu),
    }
}

/// The same in plain burn ops, as burn-nn's GroupNorm computes it (biased variance).
///
/// # Shapes
/// - as [`group_norm`]
pub fn group_norm_reference(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    epsilon: f64,
    then_silu: bool,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let x = x.reshape([b, groups, c / groups * h * w]);
    let centred = x.clone() - x.mean_dim(2);
    let var = centred.clone().square().mean_dim(2);
    let normalized = (centred / var.add_scalar(epsilon).sqrt()).reshape([b, c, h, w]);
    let y = normalized * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1]);
    if then_silu { silu(y) } else { y }
}

/// The fused operation through `kernels`, which must be the device's ([`kernels_for`]; on wgpu the
/// CubeCL ones run too); f32 tensors.
///
/// # Shapes
/// - as [`group_norm`]
pub fn group_norm_with(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    epsilon: f64,
    then_silu: bool,
    kernels: Kernels,
) -> Tensor<4> {
    let norm = Norm { groups, epsilon: epsilon as f32, silu: then_silu, kernels };
    let (out, _) =
        <Dispatch as FusedGroupNorm>::fused_group_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), norm);
    Tensor::from_dispatch(out)
}

/// Relative errors of the output, dx, dgamma and dbeta of the fused operation through `kernels`
/// against the reference, on random inputs of shape [B, C, H, W] in `groups` groups on `device`,
/// with an offset and a scale per image, as activations have, so that the centring matters. With
/// `channels_last`, x is stored as [B, H, W, C], as convolutions leave it on cubecl devices.
pub fn errors_against_reference(
    device: &Device,
    [batch, c, h, w, groups]: [usize; 5],
    silu: bool,
    channels_last: bool,
    seed: u64,
    kernels: Kernels,
) -> [f32; 4] {
    let device = device.clone().autodiff();
    let mut rng = crate::Rng::new(seed);
    let n = batch * c * h * w;
    let x: Vec<f32> = rng.normal_vec(n, 3.0).into_iter().map(|v| v + 2.0).collect();
    let gamma: Vec<f32> = rng.normal_vec(c, 0.5).into_iter().map(|v| v + 1.0).collect();
    let beta = rng.normal_vec(c, 0.5);
    let v = rng.normal_vec(n, 1.0);
    let run = |f: &dyn Fn(Tensor<4>, Tensor<1>, Tensor<1>) -> Tensor<4>| {
        let x = match channels_last {
            false => Tensor::<4>::from_data(TensorData::new(x.clone(), [batch, c, h, w]), &device),
            true => {
                let (s, image) = (h * w, c * h * w);
                let nhwc = (0..n).map(|i| x[i / image * image + i % c * s + i % image / c]).collect();
                Tensor::<4>::from_data(TensorData::new(nhwc, [batch, h, w, c]), &device).permute([0, 3, 1, 2])
            }
        }
        .require_grad();
        let gamma = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [c]), &device).require_grad();
        let beta = Tensor::<1>::from_data(TensorData::new(beta.clone(), [c]), &device).require_grad();
        let v = Tensor::<4>::from_data(TensorData::new(v.clone(), [batch, c, h, w]), &device);
        let y = f(x.clone(), gamma.clone(), beta.clone());
        let grads = (y.clone() * v).sum().backward();
        let read = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().expect("f32 values");
        let read1 = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().expect("f32 values");
        let grad = |t: &Tensor<1>| read1(t.grad(&grads).expect("a gradient"));
        [read(y.inner()), read(x.grad(&grads).expect("a gradient")), grad(&gamma), grad(&beta)]
    };
    let ours = run(&|x, g, b| group_norm_with(x, g, b, groups, 1e-6, silu, kernels));
    let reference = run(&|x, g, b| group_norm_reference(x, g, b, groups, 1e-6, silu));
    std::array::from_fn(|i| relative_error(&ours[i], &reference[i]))
}

/// `count` random shapes [B, C, H, W, groups] for tests after fixed edge cases: one value per
/// channel, odd sizes, groups of more than 256 values and of one channel, 32 groups, and the
/// LayerNorm of the 2D MLP (128 features, one group). Groups of
/// one or two values are left out: they normalise to constants (0, or -1 and 1), and their dx is
/// rounding noise on both sides.
pub fn test_shapes(seed: u64, count: usize) -> Vec<[usize; 5]> {
    let mut rng = crate::Rng::new(seed);
    let mut pick = |n: u64| (rng.next_u64() % n) as usize;
    let fixed = [[1, 3, 1, 1, 1], [2, 4, 3, 5, 1], [3, 64, 7, 7, 32], [2, 12, 1, 9, 3], [1, 8, 17, 19, 2], [64, 128, 1, 1, 1]];
    let random: Vec<[usize; 5]> = (0..count)
        .map(|_| {
            let groups = 1 + pick(8);
            [1 + pick(4), groups * (1 + pick(5)), 1 + pick(10), 1 + pick(10), groups]
        })
        .collect();
    fixed.into_iter().chain(random).filter(|&[_, c, h, w, groups]| c / groups * h * w > 2).collect()
}

/// The settings of one GroupNorm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    pub groups: usize,
    pub epsilon: f32,
    /// SiLU after the affine map.
    pub silu: bool,
    /// Which implementation runs on a GPU (WGSL or CubeCL); Flex runs its own.
    pub kernels: Kernels,
}

/// The fused GroupNorm as a backend operation.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Fusion: cfg(feature = "gpu"), Autodiff)]
pub trait FusedGroupNorm: Backend {
    /// The output and each group's mean and 1 / sqrt(var + eps), [B, G, 2].
    #[fusion(meta = forward_outputs)]
    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        norm: Norm,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of x, gamma and beta from the output's.
    #[fusion(meta = backward_outputs)]
    fn fused_group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        norm: Norm,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// What [`FusedGroupNorm::fused_group_norm`] returns, for burn's fusion backend to register.
#[cfg(feature = "gpu")]
fn forward_outputs(x: &TensorSpec, _: &TensorSpec, _: &TensorSpec, norm: &Norm) -> (TensorSpec, TensorSpec) {
    let stats = burn::tensor::Shape::new([x.shape[0], norm.groups, 2]);
    (TensorSpec::new(x.shape.clone(), x.dtype), TensorSpec::new(stats, x.dtype))
}

/// What [`FusedGroupNorm::fused_group_norm_backward`] returns, for burn's fusion backend.
#[cfg(feature = "gpu")]
fn backward_outputs(
    x: &TensorSpec,
    gamma: &TensorSpec,
    beta: &TensorSpec,
    _: &TensorSpec,
    _: &TensorSpec,
    _: &Norm,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), gamma.clone(), beta.clone())
}

/// Sizes: B images of C channels of S = H W pixels.
#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    c: usize,
    s: usize,
    shape: [usize; 4],
}

impl Sizes {
    fn new(x: &FlexTensor, gamma: &FlexTensor, norm: Norm) -> Self {
        let shape = x.shape();
        assert_eq!(shape.num_dims(), 4, "GroupNorm takes [B, C, H, W]");
        let (batch, c, s) = (shape[0], shape[1], shape[2] * shape[3]);
        assert!(norm.groups > 0 && c % norm.groups == 0, "GroupNorm: {c} channels in {} groups", norm.groups);
        assert_eq!(gamma.shape().num_elements(), c, "GroupNorm: one gamma per channel");
        Sizes { batch, c, s, shape: [batch, c, shape[2], shape[3]] }
    }
}

/// Mean and 1 / sqrt(var + eps) of each group of one image, two passes (no cancellation).
#[inline(always)]
fn statistics(image: &[f32], groups: usize, epsilon: f32, stats: &mut [f32]) {
    let len = image.len() / groups;
    for (group, stats) in image.chunks(len).zip(stats.chunks_mut(2)) {
        let mean = sum_of(group, group, |v, _| v) / len as f32;
        let var = sum_of(group, group, |v, _| (v - mean) * (v - mean)) / len as f32;
        stats.copy_from_slice(&[mean, 1.0 / (var + epsilon).sqrt()]);
    }
}

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

impl FusedGroupNorm for Flex {
    fn fused_group_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, norm: Norm) -> (FlexTensor, FlexTensor) {
        let n = Sizes::new(&x, &gamma, norm);
        let (x, gamma, beta) = (contiguous(&x), contiguous(&gamma), contiguous(&beta));
        let (x, gamma, beta) = (values(&x), values(&gamma), values(&beta));
        let (image, per) = (n.c * n.s, images_per_task(n.batch));
        let mut out = vec![0f32; n.batch * image];
        let stats = for_chunks(&mut out, per * image, |task, out| {
            let mut stats = vec![0f32; out.len() / image * norm.groups * 2];
            forward_images(&x[task * per * image..][..out.len()], gamma, beta, norm, n.s, out, &mut stats);
            stats
        });
        (tensor(out, n.shape), tensor(stats.concat(), [n.batch, norm.groups, 2]))
    }

    fn fused_group_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        grad: FlexTensor,
        norm: Norm,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let n = Sizes::new(&x, &gamma, norm);
        let [x, gamma, beta, stats, grad] = [x, gamma, beta, stats, grad].map(|t| contiguous(&t));
        let [x, gamma, beta, stats, grad] = [&x, &gamma, &beta, &stats, &grad].map(values);
        let (image, per) = (n.c * n.s, images_per_task(n.batch));
        let mut grad_x = vec![0f32; n.batch * image];
        let partial = for_chunks(&mut grad_x, per * image, |task, grad_x| {
            let (mut grad_gamma, mut grad_beta) = (vec![0f32; n.c], vec![0f32; n.c]);
            let images = task * per * image..task * per * image + grad_x.len();
            let stats = &stats[task * per * norm.groups * 2..][..grad_x.len() / image * norm.groups * 2];
            let [x, grad] = [x, grad].map(|t| &t[images.clone()]);
            backward_images(x, grad, stats, gamma, beta, norm, n.s, grad_x, &mut grad_gamma, &mut grad_beta);
            (grad_gamma, grad_beta)
        });
        let (grad_gamma, grad_beta): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
        (tensor(grad_x, n.shape), tensor(sum_parts(grad_gamma, n.c), [n.c]), tensor(sum_parts(grad_beta, n.c), [n.c]))
    }
}

/// GroupNorm (+ SiLU) of consecutive images of C channels of `s` pixels: out, and each group's
/// statistics. `with_simd` compiles the loops for the widest vectors the processor has (chosen at
/// run time), which they vectorise to; the crate itself is built for any x86-64.
#[macerator::with_simd]
fn forward_images<S: Simd>(x: &[f32], gamma: &[f32], beta: &[f32], norm: Norm, s: usize, out: &mut [f32], stats: &mut [f32]) {
    let (image, per_group) = (gamma.len() * s, gamma.len() / norm.groups);
    for (b, (out, stats)) in out.chunks_mut(image).zip(stats.chunks_mut(norm.groups * 2)).enumerate() {
        let input = &x[b * image..][..image];
        statistics(input, norm.groups, norm.epsilon, stats);
        for (ch, (input, out)) in input.chunks(s).zip(out.chunks_mut(s)).enumerate() {
            let [mean, rstd] = [0, 1].map(|i| stats[ch / per_group * 2 + i]);
            let (scale, shift) = (rstd * gamma[ch], beta[ch] - mean * rstd * gamma[ch]);
            let pairs = out.iter_mut().zip(input);
            if norm.silu {
                pairs.for_each(|(y, &v)| *y = (v * scale + shift) * sigmoid(v * scale + shift));
            } else {
                pairs.for_each(|(y, &v)| *y = v * scale + shift);
            }
        }
    }
}

/// The backward pass of [`forward_images`]: grad_x, and each channel's gradients of gamma and beta
/// added to `grad_gamma` and `grad_beta`.
#[macerator::with_simd]
#[allow(clippy::too_many_arguments)]
fn backward_images<S: Simd>(
    x: &[f32],
    grad: &[f32],
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    norm: Norm,
    s: usize,
    grad_x: &mut [f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
) {
    let (c, per_group) = (gamma.len(), gamma.len() / norm.groups);
    let image = c * s;
    let (mut sum_dz, mut sum_dz_xhat) = (vec![0f32; c], vec![0f32; c]);
    for (b, grad_x) in grad_x.chunks_mut(image).enumerate() {
        let (input, grad_out) = (&x[b * image..][..image], &grad[b * image..][..image]);
        let stats = &stats[b * norm.groups * 2..][..norm.groups * 2];
        // dz = dL/d(gamma xhat + beta), kept in grad_x until the second pass.
        for ch in 0..c {
            let range = ch * s..(ch + 1) * s;
            let [mean, rstd] = [0, 1].map(|i| stats[ch / per_group * 2 + i]);
            let dz = &mut grad_x[range.clone()];
            if norm.silu {
                let (scale, shift) = (rstd * gamma[ch], beta[ch] - mean * rstd * gamma[ch]);
                for ((dz, &v), &dy) in dz.iter_mut().zip(&input[range.clone()]).zip(&grad_out[range.clone()]) {
                    let z = v * scale + shift;
                    let sig = sigmoid(z);
                    *dz = dy * sig * (1.0 + z * (1.0 - sig));
                }
            } else {
                dz.copy_from_slice(&grad_out[range.clone()]);
            }
            let dz = &grad_x[range.clone()];
            sum_dz[ch] = sum_of(dz, dz, |dz, _| dz);
            sum_dz_xhat[ch] = sum_of(dz, &input[range], |dz, v| dz * (v - mean) * rstd);
            grad_beta[ch] += sum_dz[ch];
            grad_gamma[ch] += sum_dz_xhat[ch];
        }
        // dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) per group, dxhat = gamma dz.
        for group in 0..norm.groups {
            let channels = group * per_group..(group + 1) * per_group;
            let len = (per_group * s) as f32;
            let mean_d: f32 = channels.clone().map(|ch| gamma[ch] * sum_dz[ch]).sum::<f32>() / len;
            let mean_d_xhat: f32 = channels.clone().map(|ch| gamma[ch] * sum_dz_xhat[ch]).sum::<f32>() / len;
            let [mean, rstd] = [stats[group * 2], stats[group * 2 + 1]];
            for ch in channels {
                let range = ch * s..(ch + 1) * s;
                // The same as a dz + b v + c, which vectorises.
                let (a, b) = (rstd * gamma[ch], -rstd * rstd * mean_d_xhat);
                let c = -rstd * mean_d - b * mean;
                for (dx, &v) in grad_x[range.clone()].iter_mut().zip(&input[range]) {
                    *dx = a * *dx + b * v + c;
                }
            }
        }
    }
}

/// The autodiff node: its state is the inputs and the statistics the backward pass reads.
#[derive(Debug)]
struct GroupNormBackward;

impl<B: Backend + FusedGroupNorm> Backward<B, 3> for GroupNormBackward {
    type State = ([FloatTensor<B>; 4], Norm);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let ([x, gamma, beta, stats], norm) = ops.state;
        let (grad_x, grad_gamma, grad_beta) = B::fused_group_norm_backward(x, gamma, beta, stats, grad, norm);
        let [node_x, node_gamma, node_beta] = ops.parents;
        for (node, grad) in [(node_x, grad_x), (node_gamma, grad_gamma), (node_beta, grad_beta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + FusedGroupNorm, C: CheckpointStrategy> FusedGroupNorm for Autodiff<B, C> {
    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        norm: Norm,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, stats) = B::fused_group_norm(x.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone(), norm);
        let out = match GroupNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let inputs = [x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), stats.clone()];
                prep.finish((inputs, norm), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, Self::from_inner(stats))
    }

    fn fused_group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        norm: Norm,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [x, gamma, beta, stats, grad] = [x, gamma, beta, stats, grad].map(Self::inner);
        let (grad_x, grad_gamma, grad_beta) = B::fused_group_norm_backward(x, gamma, beta, stats, grad, norm);
        (Self::from_inner(grad_x), Self::from_inner(grad_gamma), Self::from_inner(grad_beta))
    }
}
