//! Direct SIMD kernels for a "same" convolution (stride 1, k = 2p + 1, output the input's size),
//! which every 3x3 convolution of SongUNet is. The planes are padded by p on every side and laid
//! row after row, so that for output pixel q = oh Wp + ow (Wp = W + 2p) and kernel offset (i, j)
//! the input is at q + i Wp + j: a convolution becomes shifted vector loads and FMAs into
//! registers, with no im2col matrix and no gemm packing (together half of a step before). The two
//! columns per row past W are computed and dropped. Vectors come from macerator (AVX-512, AVX2,
//! NEON or wasm SIMD, chosen at run time), which burn's CPU backend also uses.

use macerator::{Arch, Scalar, Simd, Vector, vload_unaligned, vstore_unaligned};

/// Output channels and vectors of pixels per register block: 12 accumulators, which with the
/// loaded pixels and one weight fit in 16 vector registers (AVX2, wasm on x86) as in 32.
const OB: usize = 4;
const NV: usize = 3;
/// Kernel offsets per block of the weight gradient: 4 x 3 accumulators, 3 loaded pixel vectors.
const TB: usize = 3;

/// The padded layout of one image's planes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Padded {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub p: usize,
}

impl Padded {
    /// Padded row length Wp.
    pub fn wp(&self) -> usize {
        self.w + 2 * self.p
    }

    /// Values per padded plane: the padded image, and zeros enough that the output gradient's
    /// blocks, which start p Wp + p into a plane ([`weight_grad`]), end inside it.
    pub fn plane(&self) -> usize {
        ((self.h + 2 * self.p) * self.wp()).max(self.p * (self.wp() + 1) + self.n_blocks())
    }

    /// Output positions q per plane: H rows of Wp (the last 2p of each row are dropped).
    pub fn n(&self) -> usize {
        self.h * self.wp()
    }

    /// `n` rounded up to whole vectors, the length of a plane of [`conv`]'s output.
    pub fn n_blocks(&self) -> usize {
        self.n().next_multiple_of(MAX_LANES)
    }

    /// Length of [`conv`]'s output for `outs` output channels.
    pub fn flat_len(&self, outs: usize) -> usize {
        outs.next_multiple_of(OB) * self.n_blocks()
    }

    /// Kernel offsets (i, j), row by row, as offsets in the padded layout.
    pub fn taps(&self) -> Vec<usize> {
        let k = 2 * self.p + 1;
        (0..k * k).map(|ij| ij / k * self.wp() + ij % k).collect()
    }

    /// Length of a padded buffer of `c` planes: the last vectors read up to the largest offset
    /// past the last plane's outputs.
    pub fn len(&self) -> usize {
        (self.c * self.plane()).max((self.c - 1) * self.plane() + self.n_blocks() + 2 * self.p * (self.wp() + 1))
    }

    /// Copies x [C, H, W] into `out` (`len` values), zero around and after the planes.
    pub fn pad(&self, x: &[f32], out: &mut [f32]) {
        let (wp, p) = (self.wp(), self.p);
        out.fill(0.0);
        for (src, dst) in x.chunks_exact(self.h * self.w).zip(out.chunks_mut(self.plane())) {
            for (row, line) in src.chunks_exact(self.w).enumerate() {
                dst[(row + p) * wp + p..][..self.w].copy_from_slice(line);
            }
        }
    }

    /// out [O, H, W] = bias + the valid columns of `flat` [O, n_blocks].
    pub fn crop(&self, flat: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (n, wp) = (self.h * self.w, self.wp());
        for (o, (dst, src)) in out.chunks_exact_mut(n).zip(flat.chunks(self.n_blocks())).enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            for (line, row) in dst.chunks_exact_mut(self.w).zip(src.chunks(wp)) {
                line.iter_mut().zip(row).for_each(|(d, s)| *d = s + b);
            }
        }
    }
}

/// The widest vector macerator uses (AVX-512), so that the layout does not depend on the machine.
const MAX_LANES: usize = 16;

/// Packs w [O, C, k k] for [`conv`]: blocks of [`OB`] output channels, each [C, k k, OB], the
/// channels past O zero. `flip` packs the transposed, flipped kernel of the input gradient instead:
/// w^T [C, O, k k] with the offsets reversed, whose "output channels" are C.
pub(super) fn pack(w: &[f32], o: usize, c: usize, kk: usize, flip: bool) -> Vec<f32> {
    let (outs, ins) = if flip { (c, o) } else { (o, c) };
    let blocks = outs.div_ceil(OB);
    let mut packed = vec![0f32; blocks * OB * ins * kk];
    for (out, inp, t) in (0..outs).flat_map(|a| (0..ins).flat_map(move |b| (0..kk).map(move |t| (a, b, t)))) {
        let v = if flip { w[(inp * c + out) * kk + kk - 1 - t] } else { w[(out * c + inp) * kk + t] };
        packed[((out / OB * ins + inp) * kk + t) * OB + out % OB] = v;
    }
    packed
}

/// flat [O', n_blocks] = the convolution of the padded planes `xp` (layout `g`) with `w`, packed by
/// [`pack`] (O' is O rounded up to [`OB`]).
pub(super) fn conv(g: &Padded, xp: &[f32], w: &[f32], flat: &mut [f32]) {
    // SAFETY: the processor has the detected vectors.
    unsafe { conv_on(Arch::detect(), g, xp, w, flat) }
}

/// [`conv`] with the vectors of `arch` (the tests run each one the processor has).
///
/// # Safety
/// The processor must have `arch`'s features.
unsafe fn conv_on(arch: Arch, g: &Padded, xp: &[f32], w: &[f32], flat: &mut [f32]) {
    let taps = g.taps();
    let per_block = g.c * taps.len() * OB;
    assert!(xp.len() >= g.len() && w.len() % per_block == 0, "conv: operands out of bounds");
    assert!(flat.len() >= g.flat_len(w.len() / per_block * OB), "conv: output out of bounds");
    // SAFETY: the caller's.
    unsafe { conv_simd(arch, g, xp, &taps, w, flat) }
}

#[macerator::with_simd(simd(arch = _arch))]
fn conv_simd<S: Simd>(_arch: Arch, g: &Padded, xp: &[f32], taps: &[usize], w: &[f32], flat: &mut [f32]) {
    let (lanes, n_blocks) = (f32::lanes::<S>(), g.n_blocks());
    for (block, w) in w.chunks_exact(g.c * taps.len() * OB).enumerate() {
        let out = &mut flat[block * OB * n_blocks..][..OB * n_blocks];
        let whole = n_blocks - n_blocks % (NV * lanes);
        for q in (0..whole).step_by(NV * lanes) {
            conv_block::<S, NV>(g, xp, taps, w, q, out);
        }
        for q in (whole..n_blocks).step_by(lanes) {
            conv_block::<S, 1>(g, xp, taps, w, q, out);
        }
    }
}

/// out[o, q + v lanes ..] for the `OB` output channels of `w` and `V` vectors from q.
#[inline(always)]
fn conv_block<S: Simd, const V: usize>(g: &Padded, xp: &[f32], taps: &[usize], w: &[f32], q: usize, out: &mut [f32]) {
    let (lanes, n_blocks) = (f32::lanes::<S>(), g.n_blocks());
    let mut acc = [[0f32.splat::<S>(); V]; OB];
    for (ci, w) in w.chunks_exact(taps.len() * OB).enumerate() {
        let x = &xp[ci * g.plane() + q..];
        for (&tap, w) in taps.iter().zip(w.chunks_exact(OB)) {
            // SAFETY: `conv` checked that the last vector plus the largest tap stays inside xp.
            let x: [Vector<S, f32>; V] = std::array::from_fn(|v| unsafe { vload_unaligned(x.as_ptr().add(tap + v * lanes)) });
            for (acc, &w) in acc.iter_mut().zip(w) {
                let w = w.splat::<S>();
                for (a, &x) in acc.iter_mut().zip(&x) {
                    *a = w.mul_add(x, *a);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            let line = &mut out[o * n_blocks + q + v * lanes..][..lanes];
            // SAFETY: `line` holds one vector.
            unsafe { vstore_unaligned(line.as_mut_ptr(), a) };
        }
    }
}

/// grad_w [O, C, k k] += the weight gradient of `images` images: dW[o, c, t] = the sum over
/// images and q of dy[o, q] xp[c, q + tap t]. `xp` holds the images' padded inputs one after the
/// other, [`Padded::len`] apart; `dy` their output gradients, laid out as `conv`'s input with O
/// planes, whose padding is the zero of the dropped columns. Summing several small images in
/// registers before reducing the vectors keeps the reductions few at 7 px.
pub(super) fn weight_grad(g: &Padded, xp: &[f32], dy: &[f32], o: usize, images: usize, grad_w: &mut [f32]) {
    // SAFETY: the processor has the detected vectors.
    unsafe { weight_grad_on(Arch::detect(), g, xp, dy, o, images, grad_w) }
}

/// [`weight_grad`] with the vectors of `arch`.
///
/// # Safety
/// The processor must have `arch`'s features.
unsafe fn weight_grad_on(arch: Arch, g: &Padded, xp: &[f32], dy: &[f32], o: usize, images: usize, grad_w: &mut [f32]) {
    let taps = g.taps();
    let dy_g = Padded { c: o, ..*g };
    assert!(xp.len() >= images * g.len() && dy.len() >= images * dy_g.len(), "weight_grad: operands out of bounds");
    assert!(grad_w.len() == o * g.c * taps.len(), "weight_grad: gradient of the wrong size");
    // The outputs' gradient at q sits at q + p Wp + p in its padded planes.
    let shift = g.p * g.wp() + g.p;
    // SAFETY: the caller's.
    unsafe { weight_grad_simd(arch, g, xp, &dy[shift..], o, images, &taps, grad_w) }
}

#[macerator::with_simd(simd(arch = _arch))]
#[allow(clippy::too_many_arguments)]
fn weight_grad_simd<S: Simd>(_arch: Arch, g: &Padded, xp: &[f32], dy: &[f32], o: usize, images: usize, taps: &[usize], grad_w: &mut [f32]) {
    let (lanes, n, plane, kk) = (f32::lanes::<S>(), g.n_blocks(), g.plane(), taps.len());
    let (x_image, dy_image) = (g.len(), Padded { c: o, ..*g }.len());
    for o0 in (0..o).step_by(OB) {
        let ob = OB.min(o - o0);
        for ci in 0..g.c {
            for t0 in (0..kk).step_by(TB) {
                let tb = TB.min(kk - t0);
                // Offsets past the last are read as the first's and dropped.
                let tap: [usize; TB] = std::array::from_fn(|t| taps[t0 + if t < tb { t } else { 0 }]);
                let mut acc = [[0f32.splat::<S>(); TB]; OB];
                for image in 0..images {
                    let x = &xp[image * x_image + ci * plane..];
                    let row: [&[f32]; OB] = std::array::from_fn(|r| &dy[image * dy_image + (o0 + r.min(ob - 1)) * plane..][..n]);
                    for q in (0..n).step_by(lanes) {
                        // SAFETY: the asserts of `weight_grad` and `plane` keep q + the largest tap +
                        // lanes inside xp, and q + lanes inside a row of dy.
                        let xs: [Vector<S, f32>; TB] = std::array::from_fn(|t| unsafe { vload_unaligned(x.as_ptr().add(q + tap[t])) });
                        for (acc, row) in acc.iter_mut().zip(&row) {
                            let d = unsafe { vload_unaligned::<S, f32>(row.as_ptr().add(q)) };
                            for (a, &x) in acc.iter_mut().zip(&xs) {
                                *a = d.mul_add(x, *a);
                            }
                        }
                    }
                }
                for r in 0..ob {
                    for t in 0..tb {
                        grad_w[((o0 + r) * g.c + ci) * kk + t0 + t] += acc[r][t].reduce_add();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls f(o, c, t, out, in) for every product of the definition out[o, y, x] += w[o, c, i, j]
    /// x[c, y + i - p, x + j - p] inside the image, with t = i k + j and flat indices.
    fn products(g: &Padded, o: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let k = 2 * g.p + 1;
        for (oc, c, i, j) in (0..o).flat_map(|a| (0..g.c).flat_map(move |b| (0..k * k).map(move |t| (a, b, t / k, t % k)))) {
            for (y, x) in (0..g.h).flat_map(|y| (0..g.w).map(move |x| (y, x))) {
                let (iy, ix) = ((y + i).wrapping_sub(g.p), (x + j).wrapping_sub(g.p));
                if iy < g.h && ix < g.w {
                    f(oc, c, i * k + j, (oc * g.h + y) * g.w + x, (c * g.h + iy) * g.w + ix);
                }
            }
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    /// Scalar code, the detected vectors, and AVX2 where the processor has it (the common x86 case
    /// that a machine with AVX-512 would otherwise never run).
    fn arches() -> Vec<Arch> {
        let mut arches = vec![Arch::Scalar, Arch::detect()];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = [has!("sse4.2"), has!("popcnt"), has!("avx2"), has!("bmi1"), has!("bmi2"), has!("fma"), has!("lzcnt"), has!("f16c")];
            if v3.iter().all(|&f| f) {
                arches.push(Arch::V3);
            }
        }
        arches
    }

    #[test]
    fn forward_and_both_gradients_match_the_definition_in_every_vector_width() {
        for arch in arches() {
            check_shapes(arch);
        }
    }

    fn check_shapes(arch: Arch) {
        // SAFETY (the calls below): `arches` lists what the processor has.
        let conv = |g: &Padded, xp: &[f32], w: &[f32], flat: &mut [f32]| unsafe { conv_on(arch, g, xp, w, flat) };
        let weight_grad = |g: &Padded, xp: &[f32], dy: &[f32], o, images, dw: &mut [f32]| unsafe { weight_grad_on(arch, g, xp, dy, o, images, dw) };
        for (c, o, h, w, p) in [(3, 5, 7, 9, 1), (1, 16, 28, 28, 1), (17, 1, 5, 4, 2), (2, 3, 1, 1, 1), (5, 7, 11, 3, 0)] {
            let g = Padded { c, h, w, p };
            let kk = (2 * p + 1) * (2 * p + 1);
            let (x, wt, dy) = (values(c * h * w, 1), values(o * c * kk, 2), values(o * h * w, 3));
            let (mut y_ref, mut dx_ref, mut dw_ref) = (vec![0f32; o * h * w], vec![0f32; c * h * w], vec![0.5f32; o * c * kk]);
            products(&g, o, |oc, ci, t, out, inp| {
                let wi = (oc * c + ci) * kk + t;
                y_ref[out] += wt[wi] * x[inp];
                dx_ref[inp] += wt[wi] * dy[out];
                dw_ref[wi] += dy[out] * x[inp];
            });
            let close = |a: &[f32], b: &[f32], what: &str| {
                let worst = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(a.len() == b.len() && worst < 1e-4, "{what} ({arch:?}), c {c} o {o} {h}x{w} p {p}: off by {worst}");
            };
            // The padded input and the convolution's cropped output of `outs` channels; NaN where
            // the kernels must write before they read.
            let convolve = |input_g: Padded, input: &[f32], flip: bool, outs: usize| {
                let mut padded = vec![f32::NAN; input_g.len()];
                input_g.pad(input, &mut padded);
                let mut flat = vec![f32::NAN; g.flat_len(outs)];
                conv(&input_g, &padded, &pack(&wt, o, c, kk, flip), &mut flat);
                let mut out = vec![0f32; outs * h * w];
                g.crop(&flat, None, &mut out);
                (padded, out)
            };
            let (xp, y) = convolve(g, &x, false, o);
            close(&y, &y_ref, "forward");
            let (dyp, dx) = convolve(Padded { c: o, ..g }, &dy, true, c);
            close(&dx, &dx_ref, "input gradient");

            // Two images: the second the first negated, with dy the same, so dW is its start value.
            let mut dw = vec![0.5f32; o * c * kk];
            weight_grad(&g, &xp, &dyp, o, 1, &mut dw);
            close(&dw, &dw_ref, "weight gradient");
            let mut pair = xp.clone();
            pair.extend(xp.iter().map(|v| -v));
            let dy_pair = [dyp.clone(), dyp].concat();
            weight_grad(&g, &pair, &dy_pair, o, 2, &mut dw);
            close(&dw, &dw_ref, "weight gradient of two images");
        }
    }
}
