//! What the CPU kernels share: Flex tensors as f32 slices, and work split over images on every
//! core rayon has (natively all of them; in the page one, or its workers in the threaded build).

use burn::backend::DispatchDevice;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Device, TensorData};
use rayon::prelude::*;

/// Whether tensors on `device` live in the Flex backend (with or without autodiff).
pub(super) fn on_flex(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// The images per parallel task: about two tasks per core, so that work stealing evens them out.
pub(super) fn images_per_task(batch: usize) -> usize {
    batch.div_ceil(2 * rayon::current_num_threads()).max(1)
}

/// Runs `f(task, chunk)` on consecutive chunks of `out` of `len` values and returns what each
/// call returned, in order.
pub(super) fn for_chunks<R: Send>(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) -> R + Sync + Send) -> Vec<R> {
    out.par_chunks_mut(len).enumerate().map(|(i, chunk)| f(i, chunk)).collect()
}

thread_local! {
    /// Each thread's scratch space, kept between calls so that it is neither allocated nor zeroed
    /// again (im2col buffers are megabytes, once per task of every convolution).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` values of this thread's scratch space; they hold whatever was left there, so
/// `f` must write each value before it reads it.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH.set(buffer);
    result
}

/// Adds each task's partial sums into one vector.
pub(super) fn sum_parts(parts: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in parts {
        total.iter_mut().zip(part).for_each(|(sum, v)| *sum += v);
    }
    total
}

/// Partial sums per lane: a single running sum is a chain of dependent adds that does not vectorise.
const LANES: usize = 16;

/// The sum of f(a_i, b_i). Inlined, so that it vectorises for its caller's target features.
#[inline(always)]
pub(super) fn sum_of(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(&a, &b)| f(a, b)).sum();
    let mut acc = [0f32; LANES];
    for (a, b) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += f(a[l], b[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub(super) fn contiguous(t: &FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "the CPU kernels run in f32");
    t.to_contiguous()
}

pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

pub(super) fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// e^x within about 2e-7 relative error in plain f32 arithmetic, which the compiler vectorises
/// (libm's expf is a call per value: a fifth of a GroupNorm + SiLU pass). NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // x = n ln 2 + r with |r| <= ln 2 / 2; adding and removing 1.5 * 2^23 rounds n to an integer.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_libm() {
        let worst = (-87_000..=88_000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| ((super::exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0f64, f64::max);
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(super::exp(f32::NAN).is_nan());
        assert!(super::exp(-1000.0) >= 0.0 && super::exp(-1000.0) < 1e-37);
    }
}
