//! The fused GroupNorm (+ SiLU) on cubecl devices: `shaders/group_norm_*.wgsl` on wgpu and the
//! same three kernels in CubeCL for the runtimes where WGSL cannot run (CUDA, ROCm). Same layout,
//! same maths; the comments of the WGSL files apply. Activations stored channels last (as burn's
//! convolutions leave them) are read and written in place, so that a norm between two convolutions
//! costs no layout copies.

use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::backend::TensorMetadata;
use burn::cubecl;
use burn::cubecl::prelude::*;
use burn::cubecl::server::KernelArguments;
use burn::tensor::Shape;

use super::Kernels;
use super::gpu::{WORKGROUP, empty_like, grid, input_access};
use super::group_norm::{FusedGroupNorm, Norm};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Backward,
    /// dgamma and dbeta from the backward pass's per-image sums.
    Sum,
}

/// One of the shaders, specialised to the sizes.
#[derive(Debug)]
struct NormKernel {
    pass: Pass,
    batch: usize,
    c: usize,
    s: usize,
    groups: usize,
    silu: bool,
    epsilon: f32,
    /// x (and y, dy, dx) stored as [B, H, W, C] rather than [B, C, H, W].
    channels_last: bool,
}

impl KernelSource for NormKernel {
    fn source(&self) -> SourceTemplate {
        let text = match self.pass {
            Pass::Forward => include_str!("../../shaders/group_norm_forward.wgsl"),
            Pass::Backward => include_str!("../../shaders/group_norm_backward.wgsl"),
            Pass::Sum => include_str!("../../shaders/group_norm_sum.wgsl"),
        };
        SourceTemplate::new(text)
            .register("c", self.c.to_string())
            .register("s", self.s.to_string())
            .register("groups", self.groups.to_string())
            .register("n", (self.batch * self.groups).to_string())
            .register("batch", self.batch.to_string())
            .register("silu", self.silu.to_string())
            .register("eps", format!("{:e}", self.epsilon))
            .register("channels_last", self.channels_last.to_string())
            .register("layout", include_str!("../../shaders/group_norm_layout.wgsl"))
            .register("access", input_access())
            .register("workgroup_sum", include_str!("../../shaders/workgroup_sum.wgsl"))
    }

    fn id(&self) -> KernelId {
        let sizes = (self.batch, self.c, self.s, self.groups);
        KernelId::new::<Self>().info((self.pass, sizes, self.silu, self.epsilon.to_bits(), self.channels_last))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Launches one pass on dense tensors in the kernel's layout (inputs, then outputs).
fn launch(kernels: Kernels, kernel: NormKernel, tensors: &[&CubeTensor]) {
    let client = tensors[0].client.clone();
    let cube_dim = CubeDim::new_1d(WORKGROUP);
    let count = match kernel.pass {
        Pass::Forward | Pass::Backward => grid(kernel.batch * kernel.groups),
        Pass::Sum => grid(kernel.c.div_ceil(WORKGROUP as usize)),
    };
    match kernels {
        Kernels::Wgsl => {
            let bindings = tensors.iter().map(|t| t.handle.clone().binding()).collect();
            client.launch(Box::new(SourceKernel::new(kernel, cube_dim)), count, KernelArguments::new().with_buffers(bindings));
        }
        Kernels::CubeCl => {
            // SAFETY: each length is the tensor's element count, and the tensors are dense.
            let arg = |i: usize| unsafe { BufferArg::from_raw_parts(tensors[i].handle.clone(), tensors[i].shape().num_elements()) };
            let NormKernel { batch, c, s, groups, silu, epsilon, channels_last, .. } = kernel;
            let layout = Layout { c, s, per: c / groups, last: channels_last };
            match kernel.pass {
                Pass::Forward => forward::launch(
                    &client,
                    count,
                    cube_dim,
                    arg(0),
                    arg(1),
                    arg(2),
                    arg(3),
                    arg(4),
                    groups,
                    batch * groups,
                    silu,
                    epsilon.to_bits(),
                    layout,
                ),
                Pass::Backward => backward::launch(
                    &client,
                    count,
                    cube_dim,
                    arg(0),
                    arg(1),
                    arg(2),
                    arg(3),
                    arg(4),
                    arg(5),
                    arg(6),
                    groups,
                    batch * groups,
                    silu,
                    layout,
                ),
                Pass::Sum => sum::launch(&client, count, cube_dim, arg(0), arg(1), arg(2), c, batch),
            }
        }
        Kernels::Cpu => unreachable!("the CPU GroupNorm runs on Flex, not on a cubecl device"),
    }
}

fn sizes(x: &CubeTensor, gamma: &CubeTensor, norm: Norm) -> (usize, usize, usize) {
    let shape = x.shape();
    assert_eq!(shape.num_dims(), 4, "GroupNorm takes [B, C, H, W]");
    let (batch, c, s) = (shape[0], shape[1], shape[2] * shape[3]);
    assert!(norm.groups > 0 && c % norm.groups == 0, "GroupNorm: {c} channels in {} groups", norm.groups);
    assert_eq!(gamma.shape().num_elements(), c, "GroupNorm: one gamma per channel");
    (batch, c, s)
}

/// [B, C, H, W] to [B, H, W, C] and back.
const TO_LAST: [usize; 4] = [0, 2, 3, 1];
const FROM_LAST: [usize; 4] = [0, 3, 1, 2];

/// Whether x is stored channels last (and not also contiguous, as when H W = 1).
fn is_channels_last(x: &CubeTensor) -> bool {
    let mut last = x.clone();
    last.meta.permute(&TO_LAST).expect("a rank-4 tensor");
    !x.meta.is_tiled() && !x.is_contiguous() && last.is_contiguous()
}

/// x stored in the given layout, copied only if it is not.
fn in_layout(x: CubeTensor, channels_last: bool) -> CubeTensor {
    match channels_last {
        false => into_contiguous(x),
        true if is_channels_last(&x) => x,
        true => {
            let mut x = x;
            x.meta.permute(&TO_LAST).expect("a rank-4 tensor");
            let mut x = into_contiguous(x);
            x.meta.permute(&FROM_LAST).expect("a rank-4 tensor");
            x
        }
    }
}

/// A new [B, C, H, W] tensor in the given layout.
fn empty_in_layout(like: &CubeTensor, channels_last: bool) -> CubeTensor {
    if !channels_last {
        return empty_like(like, like.shape());
    }
    let mut y = empty_like(like, like.shape().permuted(&TO_LAST).expect("a rank-4 shape"));
    y.meta.permute(&FROM_LAST).expect("a rank-4 tensor");
    y
}

impl FusedGroupNorm for CubeBackend {
    fn fused_group_norm(x: CubeTensor, gamma: CubeTensor, beta: CubeTensor, norm: Norm) -> (CubeTensor, CubeTensor) {
        let (batch, c, s) = sizes(&x, &gamma, norm);
        let channels_last = is_channels_last(&x);
        let (x, gamma, beta) = (in_layout(x, channels_last), into_contiguous(gamma), into_contiguous(beta));
        let y = empty_in_layout(&x, channels_last);
        let stats = empty_like(&x, Shape::new([batch, norm.groups, 2]));
        let (groups, silu, epsilon) = (norm.groups, norm.silu, norm.epsilon);
        let kernel = NormKernel { pass: Pass::Forward, batch, c, s, groups, silu, epsilon, channels_last };
        launch(norm.kernels, kernel, &[&x, &gamma, &beta, &y, &stats]);
        (y, stats)
    }

    fn fused_group_norm_backward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        stats: CubeTensor,
        grad: CubeTensor,
        norm: Norm,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (batch, c, s) = sizes(&x, &gamma, norm);
        let channels_last = is_channels_last(&x);
        let [x, grad] = [x, grad].map(|t| in_layout(t, channels_last));
        let [gamma, beta, stats] = [gamma, beta, stats].map(into_contiguous);
        let grad_x = empty_in_layout(&x, channels_last);
        let partial = empty_like(&x, Shape::new([batch, c, 2]));
        let (groups, silu, epsilon) = (norm.groups, norm.silu, norm.epsilon);
        let kernel = |pass| NormKernel { pass, batch, c, s, groups, silu, epsilon, channels_last };
        launch(norm.kernels, kernel(Pass::Backward), &[&x, &gamma, &beta, &stats, &grad, &grad_x, &partial]);
        let (grad_gamma, grad_beta) = (empty_like(&x, Shape::new([c])), empty_like(&x, Shape::new([c])));
        launch(norm.kernels, kernel(Pass::Sum), &[&partial, &grad_gamma, &grad_beta]);
        (grad_x, grad_gamma, grad_beta)
    }
}

/// The sum of every unit's v, returned to every unit (`partial` holds 256 values).
#[cube]
fn cube_sum(partial: &mut Shared<[f32]>, lid: usize, v: f32) -> f32 {
    partial[lid] = v;
    sync_cube();
    let mut stride = 128usize;
    while stride > 0 {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = partial[0];
    sync_cube();
    total
}

/// dL/dz at one element (dL/dy without SiLU).
#[cube]
fn dz_of(xhat: f32, gamma: f32, beta: f32, g: f32, #[comptime] silu: bool) -> f32 {
    let mut dz = g;
    if comptime!(silu) {
        let z = xhat * gamma + beta;
        let sig = 1.0f32 / (1.0f32 + (-z).exp());
        dz = g * sig * (1.0f32 + z * (1.0f32 - sig));
    }
    dz
}

/// Where the values lie, as `group_norm_layout.wgsl`: C channels of S pixels, `per` channels a
/// group, NCHW or channels last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Layout {
    c: usize,
    s: usize,
    per: usize,
    last: bool,
}

/// The i-th value, in memory order, of the group of image b that starts at channel c0.
#[cube]
fn group_index(b: usize, c0: usize, i: usize, #[comptime] l: Layout) -> usize {
    let (c, s, per) = (comptime!(l.c), comptime!(l.s), comptime!(l.per));
    let mut k = (b * c + c0) * s + i;
    if comptime!(l.last) {
        k = (b * s + i / per) * c + c0 + i % per;
    }
    k
}

/// The channel of that value.
#[cube]
fn group_channel(c0: usize, i: usize, #[comptime] l: Layout) -> usize {
    let (s, per) = (comptime!(l.s), comptime!(l.per));
    let mut ch = c0 + i / s;
    if comptime!(l.last) {
        ch = c0 + i % per;
    }
    ch
}

/// Pixel p of channel ch of image b.
#[cube]
fn pixel_index(b: usize, ch: usize, p: usize, #[comptime] l: Layout) -> usize {
    let (c, s) = (comptime!(l.c), comptime!(l.s));
    let mut k = (b * c + ch) * s + p;
    if comptime!(l.last) {
        k = (b * s + p) * c + ch;
    }
    k
}

/// Forward: one cube of 256 units per (image, group).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    stats: &mut [f32],
    #[comptime] groups: usize,
    #[comptime] n: usize,
    #[comptime] silu: bool,
    #[comptime] epsilon_bits: u32,
    #[comptime] l: Layout,
) {
    let epsilon = comptime!(f32::from_bits(epsilon_bits));
    let w = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    if w >= n {
        terminate!();
    }
    let per = comptime!(l.per);
    let len = comptime!(l.per * l.s);
    let lid = UNIT_POS as usize;
    let b = w / groups;
    let c0 = (w % groups) * per;
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let mut sum = 0.0f32;
    let mut i = lid;
    while i < len {
        sum += x[group_index(b, c0, i, l)];
        i += 256;
    }
    let mean = cube_sum(&mut partial, lid, sum) / f32::cast_from(len);
    let mut sq = 0.0f32;
    let mut i = lid;
    while i < len {
        let d = x[group_index(b, c0, i, l)] - mean;
        sq += d * d;
        i += 256;
    }
    let rstd = 1.0f32 / (cube_sum(&mut partial, lid, sq) / f32::cast_from(len) + epsilon).sqrt();
    if lid == 0 {
        stats[2 * w] = mean;
        stats[2 * w + 1] = rstd;
    }
    let mut i = lid;
    while i < len {
        let k = group_index(b, c0, i, l);
        let ch = group_channel(c0, i, l);
        let z = (x[k] - mean) * rstd * gamma[ch] + beta[ch];
        let mut out = z;
        if comptime!(silu) {
            out = z / (1.0f32 + (-z).exp());
        }
        y[k] = out;
        i += 256;
    }
}

/// Backward: one cube of 256 units per (image, group); dx and the per-image sums.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn backward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    partial_sums: &mut [f32],
    #[comptime] groups: usize,
    #[comptime] n: usize,
    #[comptime] silu: bool,
    #[comptime] l: Layout,
) {
    let w = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    if w >= n {
        terminate!();
    }
    let (c, s, per) = (comptime!(l.c), comptime!(l.s), comptime!(l.per));
    let len = comptime!(l.per * l.s);
    let lid = UNIT_POS as usize;
    let c0 = (w % groups) * per;
    let b = w / groups;
    let mean = stats[2 * w];
    let rstd = stats[2 * w + 1];
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let mut sum_g = 0.0f32;
    let mut sum_gx = 0.0f32;
    // As the WGSL: the cube sums channels of many pixels in turn, a unit each channel of few.
    if comptime!(s >= 64) {
        for k in 0..per {
            let ch = c0 + k;
            let mut a = 0.0f32;
            let mut d = 0.0f32;
            let mut p = lid;
            while p < s {
                let i = pixel_index(b, ch, p, l);
                let xhat = (x[i] - mean) * rstd;
                let dz = dz_of(xhat, gamma[ch], beta[ch], dy[i], silu);
                a += dz * xhat;
                d += dz;
                p += 256;
            }
            let sum_dz_xhat = cube_sum(&mut partial, lid, a);
            let sum_dz = cube_sum(&mut partial, lid, d);
            if lid == 0 {
                partial_sums[2 * (b * c + ch)] = sum_dz_xhat;
                partial_sums[2 * (b * c + ch) + 1] = sum_dz;
            }
            sum_g += gamma[ch] * sum_dz;
            sum_gx += gamma[ch] * sum_dz_xhat;
        }
    } else {
        let mut g = 0.0f32;
        let mut gx = 0.0f32;
        let mut k = lid;
        while k < per {
            let ch = c0 + k;
            let mut a = 0.0f32;
            let mut d = 0.0f32;
            for p in 0..s {
                let i = pixel_index(b, ch, p, l);
                let xhat = (x[i] - mean) * rstd;
                let dz = dz_of(xhat, gamma[ch], beta[ch], dy[i], silu);
                a += dz * xhat;
                d += dz;
            }
            partial_sums[2 * (b * c + ch)] = a;
            partial_sums[2 * (b * c + ch) + 1] = d;
            g += gamma[ch] * d;
            gx += gamma[ch] * a;
            k += 256;
        }
        sum_g = cube_sum(&mut partial, lid, g);
        sum_gx = cube_sum(&mut partial, lid, gx);
    }
    let mean_g = sum_g / f32::cast_from(len);
    let mean_gx = sum_gx / f32::cast_from(len);
    let mut i = lid;
    while i < len {
        let k = group_index(b, c0, i, l);
        let ch = group_channel(c0, i, l);
        let xhat = (x[k] - mean) * rstd;
        let dz = dz_of(xhat, gamma[ch], beta[ch], dy[k], silu);
        dx[k] = rstd * (gamma[ch] * dz - mean_g - xhat * mean_gx);
        i += 256;
    }
}

/// dgamma and dbeta: one unit per channel.
#[cube(launch)]
fn sum(partial_sums: &[f32], dgamma: &mut [f32], dbeta: &mut [f32], #[comptime] c: usize, #[comptime] batch: usize) {
    let ch = ((CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * 256 + UNIT_POS) as usize;
    if ch >= c {
        terminate!();
    }
    let mut g = 0.0f32;
    let mut b = 0.0f32;
    for i in 0..batch {
        g += partial_sums[2 * (i * c + ch)];
        b += partial_sums[2 * (i * c + ch) + 1];
    }
    dgamma[ch] = g;
    dbeta[ch] = b;
}
