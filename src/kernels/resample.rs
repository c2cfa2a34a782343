//! SongUNet's resampling with the [1, 1] filter: 2x2 average pooling down and nearest-neighbour
//! doubling up, on the CPU as one pass each. burn's Flex computes them as a reshape to six
//! dimensions with a mean or an expand, iterated element by element through strides (5% of a
//! `mnist-tiny` step with their gradients). [`resample`] runs this on Flex devices in f32 and
//! [`resample_reference`] (the reshapes) elsewhere; the tests compare the two.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::{DType, Tensor};

use super::cpu::{contiguous, for_chunks, images_per_task, on_flex, tensor, values};

/// Halves (2x2 means) or doubles (each pixel four times) the resolution, with the CPU kernel on
/// Flex devices (f32) and burn's ops elsewhere.
///
/// # Shapes
/// - x: [B, C, H, W], H and W even to go down
/// - output: [B, C, 2H, 2W] (up) or [B, C, H/2, W/2]
pub fn resample(x: Tensor<4>, up: bool) -> Tensor<4> {
    if on_flex(&x.device()) && x.dtype() == DType::F32 {
        Tensor::from_dispatch(<Dispatch as CpuResample>::resample_cpu(x.into_dispatch(), up, 1.0))
    } else {
        resample_reference(x, up)
    }
}

/// The same with burn's reshapes.
///
/// # Shapes
/// - as [`resample`]
pub fn resample_reference(x: Tensor<4>, up: bool) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if up {
        x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
    } else {
        x.reshape([b, c, h / 2, 2, w / 2, 2]).mean_dims(&[3, 5]).reshape([b, c, h / 2, w / 2])
    }
}

/// The kernel as a backend operation: `scale` times the resampled x. Each direction's gradient is
/// the other direction, scaled (the sum of four copies is 4 means; a mean spreads 1/4).
#[backend_extension(Flex, Autodiff)]
pub trait CpuResample: Backend {
    fn resample_cpu(x: FloatTensor<Self>, up: bool, scale: f32) -> FloatTensor<Self>;
}

impl CpuResample for Flex {
    fn resample_cpu(x: FlexTensor, up: bool, scale: f32) -> FlexTensor {
        let shape = x.shape();
        assert_eq!(shape.num_dims(), 4, "resample takes [B, C, H, W]");
        let [batch, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        assert!(up || (h % 2 == 0 && w % 2 == 0), "resample: {h}x{w} cannot be halved");
        let (ho, wo) = if up { (2 * h, 2 * w) } else { (h / 2, w / 2) };
        let x = contiguous(&x);
        let x = values(&x);
        let mut out = vec![0f32; batch * c * ho * wo];
        let planes = images_per_task(batch) * c;
        for_chunks(&mut out, planes * ho * wo, |task, out| {
            for (i, out) in out.chunks_mut(ho * wo).enumerate() {
                let plane = &x[(task * planes + i) * h * w..][..h * w];
                if up {
                    for (row, line) in plane.chunks(w).enumerate() {
                        let (top, bottom) = out[2 * row * wo..][..2 * wo].split_at_mut(wo);
                        for (pair, &v) in top.chunks_mut(2).zip(line) {
                            pair.fill(v * scale);
                        }
                        bottom.copy_from_slice(top);
                    }
                } else {
                    let scale = scale * 0.25;
                    for (rows, line) in plane.chunks(2 * w).zip(out.chunks_mut(wo)) {
                        let (top, bottom) = rows.split_at(w);
                        for (j, v) in line.iter_mut().enumerate() {
                            *v = (top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1]) * scale;
                        }
                    }
                }
            }
        });
        tensor(out, [batch, c, ho, wo])
    }
}

/// The autodiff node: its state is the direction and the scale.
#[derive(Debug)]
struct ResampleBackward;

impl<B: Backend + CpuResample> Backward<B, 1> for ResampleBackward {
    type State = (bool, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (up, scale) = ops.state;
        let [node] = ops.parents;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::resample_cpu(grad, !up, if up { 4.0 * scale } else { 0.25 * scale }));
        }
    }
}

impl<B: Backend + CpuResample, C: CheckpointStrategy> CpuResample for Autodiff<B, C> {
    fn resample_cpu(x: FloatTensor<Self>, up: bool, scale: f32) -> FloatTensor<Self> {
        let out = B::resample_cpu(x.primitive().clone(), up, scale);
        match ResampleBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((up, scale), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}
