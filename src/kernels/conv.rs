//! 2D convolution with stride 1 (every convolution of SongUNet) on the CPU, the images spread over
//! the cores: k x k convolutions that keep the image's size through the direct SIMD kernels of
//! `conv_direct.rs`, the others (1x1 and any other padding) as im2col and one sgemm per image,
//! forward and both gradients. burn's Flex
//! backend computes the input gradient as a scalar transposed convolution and the weight
//! gradient through layout copies, on one core at these sizes (docs/cpu-speed.md has the
//! profile). [`conv2d`] runs this on Flex devices in f32 and burn's `conv2d` elsewhere, which is
//! also the reference the tests compare it with.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use super::conv_direct::{self, Padded};
use super::cpu::{contiguous, for_chunks, images_per_task, on_flex, sum_of, sum_parts, tensor, values, with_scratch};

/// A convolution with stride 1, no dilation and one group, through the CPU kernels on Flex
/// devices (f32) and burn's `conv2d` on every other device and dtype, a bias being trained added
/// after it.
///
/// # Shapes
/// - x: [B, C, H, W]; weight: [O, C, k, k]; bias: [O]
/// - output: [B, O, H + 2 padding - k + 1, W + 2 padding - k + 1]
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, padding: usize) -> Tensor<4> {
    if on_flex(&x.device()) && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &x.device()));
        return conv2d_cpu(x, weight, bias, padding);
    }
    match bias {
        // burn's bias gradient copies the whole output gradient to [O, B H W] before summing it; a
        // broadcast add's sums it where it lies, and the add fuses with the elementwise op after it.
        Some(bias) if bias.is_require_grad() => {
            let o = bias.dims()[0];
            conv2d_reference(x, weight, None, padding) + bias.reshape([1, o, 1, 1])
        }
        bias => conv2d_reference(x, weight, bias, padding),
    }
}

/// burn's own convolution with the same arguments.
///
/// # Shapes
/// - as [`conv2d`]
pub fn conv2d_reference(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, padding: usize) -> Tensor<4> {
    burn::tensor::module::conv2d(x, weight, bias, ConvOptions::new([1, 1], [padding, padding], [1, 1], 1))
}

/// The CPU kernels; the tensors must be on a Flex device, in f32.
///
/// # Shapes
/// - as [`conv2d`]
pub fn conv2d_cpu(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuConv>::conv2d_cpu(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
    ))
}

/// The kernels as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait CpuConv: Backend {
    fn conv2d_cpu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// The gradients of x, the weight and the bias from the output's.
    fn conv2d_cpu_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Sizes of one convolution: input [C, H, W] per image, weight [O, C, k, k], output [O, Ho, Wo].
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &FlexTensor, weight: &FlexTensor, padding: usize) -> Self {
        let (xs, ws) = (x.shape(), weight.shape());
        assert!(xs.num_dims() == 4 && ws.num_dims() == 4, "conv2d takes [B, C, H, W] and [O, C, k, k]");
        let [batch, c, h, w] = [xs[0], xs[1], xs[2], xs[3]];
        let [o, c_w, k, k2] = [ws[0], ws[1], ws[2], ws[3]];
        assert!(c == c_w && k == k2, "conv2d: input {xs:?} and weight {ws:?} do not match");
        assert!(h + 2 * padding >= k && w + 2 * padding >= k, "conv2d: kernel larger than the padded input");
        let (ho, wo) = (h + 2 * padding - k + 1, w + 2 * padding - k + 1);
        Geometry { batch, c, h, w, o, k, p: padding, ho, wo }
    }

    /// Rows of the im2col matrix: C k k.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output pixels per image: Ho Wo.
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    fn image(&self) -> usize {
        self.c * self.h * self.w
    }

    /// A 1x1 convolution without padding reads the image as it is: no im2col.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.p == 0
    }

    /// A k x k convolution whose output has the input's size runs the direct kernels.
    fn direct(&self) -> Option<Padded> {
        (self.k > 1 && self.ho == self.h && self.wo == self.w).then_some(Padded { c: self.c, h: self.h, w: self.w, p: self.p })
    }

    /// For kernel offset j, the output columns ow whose input column ow + j - p is inside the
    /// image (the same for rows).
    fn inside(&self, j: usize, out: usize, size: usize) -> std::ops::Range<usize> {
        let lo = self.p.saturating_sub(j).min(out);
        let hi = (size + self.p).saturating_sub(j).min(out).max(lo);
        lo..hi
    }

    /// col[(c k + i) k + j, oh Wo + ow] = x[c, oh + i - p, ow + j - p], zero outside the image.
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (k, n) = (self.k, self.pixels());
        if self.ho == self.h && self.wo == self.w {
            return self.im2col_same(x, col);
        }
        for c in 0..self.c {
            for i in 0..k {
                let rows = self.inside(i, self.ho, self.h);
                for j in 0..k {
                    let cols = self.inside(j, self.wo, self.w);
                    let dst = &mut col[((c * k + i) * k + j) * n..][..n];
                    for oh in 0..self.ho {
                        let line = &mut dst[oh * self.wo..][..self.wo];
                        if !rows.contains(&oh) {
                            line.fill(0.0);
                            continue;
                        }
                        line[..cols.start].fill(0.0);
                        line[cols.end..].fill(0.0);
                        let src = (c * self.h + oh + i - self.p) * self.w + cols.start + j - self.p;
                        line[cols.clone()].copy_from_slice(&x[src..src + cols.len()]);
                    }
                }
            }
        }
    }

    /// `im2col` when the output has the input's size: each row of col is the whole channel
    /// shifted by (i - p) W + (j - p), one copy, with the pixels that crossed an edge zeroed
    /// after (a copy per image row costs a call per 28 values at these sizes).
    fn im2col_same(&self, x: &[f32], col: &mut [f32]) {
        let (k, n, w) = (self.k, self.pixels(), self.w);
        for c in 0..self.c {
            let plane = &x[c * n..][..n];
            for i in 0..k {
                for j in 0..k {
                    let dst = &mut col[((c * k + i) * k + j) * n..][..n];
                    let shift = (i * w + j) as isize - (self.p * w + self.p) as isize;
                    if shift.unsigned_abs() >= n {
                        dst.fill(0.0);
                        continue;
                    }
                    let (from, len) = (shift.max(0) as usize, n - shift.unsigned_abs());
                    let at = (-shift).max(0) as usize;
                    dst[..at].fill(0.0);
                    dst[at..at + len].copy_from_slice(&plane[from..from + len]);
                    dst[at + len..].fill(0.0);
                    // Column by column with a stride: a fill per line would be a memset call per
                    // one or two values.
                    let cols = self.inside(j, self.wo, w);
                    for x in (0..cols.start).chain(cols.end..w) {
                        dst.iter_mut().skip(x).step_by(w).for_each(|v| *v = 0.0);
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: x[c, ih, iw] = the sum of the columns that read it.
    fn col2im(&self, col: &[f32], x: &mut [f32]) {
        let (k, n) = (self.k, self.pixels());
        x.fill(0.0);
        for c in 0..self.c {
            for i in 0..k {
                let rows = self.inside(i, self.ho, self.h);
                for j in 0..k {
                    let cols = self.inside(j, self.wo, self.w);
                    let src = &col[((c * k + i) * k + j) * n..][..n];
                    for oh in rows.clone() {
                        let dst = (c * self.h + oh + i - self.p) * self.w + cols.start + j - self.p;
                        let line = &src[oh * self.wo..][cols.clone()];
                        for (d, s) in x[dst..dst + line.len()].iter_mut().zip(line) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// c[m, n] = a b + beta c for a [m, k] and b [k, n] read through (row, column) strides, so that
/// a transpose costs nothing; c is row-major. beta is 0 or 1.
fn gemm(m: usize, k: usize, n: usize, a: (&[f32], usize, usize), b: (&[f32], usize, usize), beta: f32, c: &mut [f32]) {
    let last = |rows: usize, cols: usize, (s, rs, cs): (&[f32], usize, usize)| {
        assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < s.len(), "gemm operand out of bounds");
    };
    last(m, k, a);
    last(k, n, b);
    assert!(c.len() >= m * n, "gemm output out of bounds");
    // SAFETY: the asserts above keep every element gemm reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.0.as_ptr(),
            a.2 as isize,
            a.1 as isize,
            b.0.as_ptr(),
            b.2 as isize,
            b.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The [cols, rows] transpose of a row-major [rows, cols] matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| m[r * cols + c])).collect()
}

/// The backward pass of a 3x3 "same" convolution in the direct kernels: dx is the convolution of
/// dY with the flipped, transposed weight, with the same padding.
fn direct_backward(g: &Geometry, pg: Padded, (x, weight, grad): (&[f32], &[f32], &[f32])) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (kk, og) = (g.k * g.k, Padded { c: g.o, ..pg });
    let packed = conv_direct::pack(weight, g.o, g.c, kk, true);
    let (rows, n, per) = (g.rows(), g.pixels(), images_per_task(g.batch));
    let mut grad_x = vec![0f32; g.batch * g.image()];
    // The weight gradient sums groups of images up to 512 outputs (single images from 16 px).
    let group = (512 / pg.n_blocks()).clamp(1, per);
    let partial = for_chunks(&mut grad_x, per * g.image(), |task, grad_x| {
        let (mut grad_w, mut grad_b) = (vec![0f32; g.o * rows], vec![0f32; g.o]);
        with_scratch(group * (pg.len() + og.len()) + pg.flat_len(g.c), |scratch| {
            let (xp, rest) = scratch.split_at_mut(group * pg.len());
            let (dyp, flat) = rest.split_at_mut(group * og.len());
            for (first, grad_x) in grad_x.chunks_mut(group * g.image()).enumerate() {
                let first = task * per + first * group;
                let images = grad_x.len() / g.image();
                for (b, grad_x) in grad_x.chunks_mut(g.image()).enumerate() {
                    let (xp, dyp) = (&mut xp[b * pg.len()..][..pg.len()], &mut dyp[b * og.len()..][..og.len()]);
                    let grad_out = &grad[(first + b) * g.o * n..][..g.o * n];
                    pg.pad(&x[(first + b) * g.image()..][..g.image()], xp);
                    og.pad(grad_out, dyp);
                    conv_direct::conv(&og, dyp, &packed, flat);
                    pg.crop(flat, None, grad_x);
                    for (sum, line) in grad_b.iter_mut().zip(grad_out.chunks(n)) {
                        *sum += sum_of(line, line, |v, _| v);
                    }
                }
                conv_direct::weight_grad(&pg, xp, dyp, g.o, images, &mut grad_w);
            }
        });
        (grad_w, grad_b)
    });
    let (grad_w, grad_b): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
    (
        tensor(grad_x, [g.batch, g.c, g.h, g.w]),
        tensor(sum_parts(grad_w, g.o * rows), [g.o, g.c, g.k, g.k]),
        tensor(sum_parts(grad_b, g.o), [g.o]),
    )
}

impl CpuConv for Flex {
    fn conv2d_cpu(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, padding: usize) -> FlexTensor {
        let g = Geometry::new(&x, &weight, padding);
        let (x, weight, bias) = (contiguous(&x), contiguous(&weight), contiguous(&bias));
        let (x, weight, bias) = (values(&x), values(&weight), values(&bias));
        assert_eq!(bias.len(), g.o, "conv2d: one bias per output channel");
        let (rows, n, per) = (g.rows(), g.pixels(), images_per_task(g.batch));
        let mut out = vec![0f32; g.batch * g.o * n];
        if let Some(pg) = g.direct() {
            let packed = conv_direct::pack(weight, g.o, g.c, g.k * g.k, false);
            for_chunks(&mut out, per * g.o * n, |task, out| {
                with_scratch(pg.len() + pg.flat_len(g.o), |scratch| {
                    let (xp, flat) = scratch.split_at_mut(pg.len());
                    for (b, out) in out.chunks_mut(g.o * n).enumerate() {
                        pg.pad(&x[(task * per + b) * g.image()..][..g.image()], xp);
                        conv_direct::conv(&pg, xp, &packed, flat);
                        pg.crop(flat, Some(bias), out);
                    }
                })
            });
            return tensor(out, [g.batch, g.o, g.ho, g.wo]);
        }
        let scratch = if g.pointwise() { 0 } else { rows * n };
        for_chunks(&mut out, per * g.o * n, |task, out| {
            with_scratch(scratch, |col| {
                for (b, out) in out.chunks_mut(g.o * n).enumerate() {
                    let image = &x[(task * per + b) * g.image()..][..g.image()];
                    let col = if g.pointwise() {
                        image
                    } else {
                        g.im2col(image, col);
                        &*col
                    };
                    for (line, &bias) in out.chunks_mut(n).zip(bias) {
                        line.fill(bias);
                    }
                    gemm(g.o, rows, n, (weight, rows, 1), (col, n, 1), 1.0, out);
                }
            })
        });
        tensor(out, [g.batch, g.o, g.ho, g.wo])
    }

    fn conv2d_cpu_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        padding: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let g = Geometry::new(&x, &weight, padding);
        let (x, weight, grad) = (contiguous(&x), contiguous(&weight), contiguous(&grad));
        let (x, weight, grad) = (values(&x), values(&weight), values(&grad));
        assert_eq!(grad.len(), g.batch * g.o * g.pixels(), "conv2d backward: the output gradient's shape");
        let (rows, n, per) = (g.rows(), g.pixels(), images_per_task(g.batch));
        let mut grad_x = vec![0f32; g.batch * g.image()];
        if let Some(pg) = g.direct() {
            return direct_backward(&g, pg, (x, weight, grad));
        }
        // dx is the convolution of dY with the flipped, transposed weight and padding k - 1 - p
        // (one im2col and one gemm of depth O k k), when that padding is not negative.
        let transposed = (!g.pointwise() && g.p < g.k).then(|| {
            let t = Geometry { c: g.o, h: g.ho, w: g.wo, o: g.c, p: g.k - 1 - g.p, ho: g.h, wo: g.w, ..g };
            let kk = g.k * g.k;
            let mut w_t = vec![0f32; g.c * g.o * kk];
            for (o, c, ij) in (0..g.o).flat_map(|o| (0..g.c).flat_map(move |c| (0..kk).map(move |ij| (o, c, ij)))) {
                w_t[(c * g.o + o) * kk + kk - 1 - ij] = weight[(o * g.c + c) * kk + ij];
            }
            (t, w_t)
        });
        // Each task sums its images' weight and bias gradients; the tasks' sums are added after.
        // Scratch: im2col of x; then im2col of dY (transposed) or dcol (col2im).
        let col_len = if g.pointwise() { 0 } else { rows * n };
        let second_len = match &transposed {
            Some((t, _)) => t.rows() * t.pixels(),
            None => col_len,
        };
        let partial = for_chunks(&mut grad_x, per * g.image(), |task, grad_x| {
            let (mut grad_w, mut grad_b) = (vec![0f32; g.o * rows], vec![0f32; g.o]);
            with_scratch(col_len + second_len, |scratch| {
                let (col, second) = scratch.split_at_mut(col_len);
                for (b, grad_x) in grad_x.chunks_mut(g.image()).enumerate() {
                    let index = task * per + b;
                    let image = &x[index * g.image()..][..g.image()];
                    let grad_out = &grad[index * g.o * n..][..g.o * n];
                    let col = if g.pointwise() {
                        image
                    } else {
                        g.im2col(image, col);
                        &*col
                    };
                    // dW^T += col dY^T (col read row by row, as stored); db += the row sums of dY.
                    gemm(rows, n, g.o, (col, n, 1), (grad_out, 1, n), 1.0, &mut grad_w);
                    match &transposed {
                        Some((t, w_t)) => {
                            t.im2col(grad_out, second);
                            gemm(g.c, t.rows(), t.pixels(), (w_t, t.rows(), 1), (second, t.pixels(), 1), 0.0, grad_x);
                        }
                        // dcol = W^T dY, summed back into the image.
                        None if g.pointwise() => gemm(rows, g.o, n, (weight, 1, rows), (grad_out, n, 1), 0.0, grad_x),
                        None => {
                            gemm(rows, g.o, n, (weight, 1, rows), (grad_out, n, 1), 0.0, second);
                            g.col2im(second, grad_x);
                        }
                    }
                    for (sum, line) in grad_b.iter_mut().zip(grad_out.chunks(n)) {
                        *sum += sum_of(line, line, |v, _| v);
                    }
                }
            });
            (grad_w, grad_b)
        });
        let (grad_w, grad_b): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
        (
            tensor(grad_x, [g.batch, g.c, g.h, g.w]),
            tensor(transpose(&sum_parts(grad_w, g.o * rows), rows, g.o), [g.o, g.c, g.k, g.k]),
            tensor(sum_parts(grad_b, g.o), [g.o]),
        )
    }
}

/// The autodiff node: its state is the input and the weight, what the backward pass reads.
#[derive(Debug)]
struct ConvBackward;

impl<B: Backend + CpuConv> Backward<B, 3> for ConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, padding) = ops.state;
        let (grad_x, grad_w, grad_b) = B::conv2d_cpu_backward(x, weight, grad, padding);
        let [node_x, node_w, node_b] = ops.parents;
        for (node, grad) in [(node_x, grad_x), (node_w, grad_w), (node_b, grad_b)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + CpuConv, C: CheckpointStrategy> CpuConv for Autodiff<B, C> {
    fn conv2d_cpu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self> {
        let out = B::conv2d_cpu(x.primitive().clone(), weight.primitive().clone(), bias.primitive().clone(), padding);
        match ConvBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x.into_primitive(), weight.into_primitive(), padding), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn conv2d_cpu_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (grad_x, grad_w, grad_b) =
            B::conv2d_cpu_backward(Self::inner(x), Self::inner(weight), Self::inner(grad), padding);
        (Self::from_inner(grad_x), Self::from_inner(grad_w), Self::from_inner(grad_b))
    }
}
