//! Data parallelism across processes (MPI ranks): what the trainer needs of them, and what it sums
//! and compares through them. Gradients travel through host memory in a few large f32 buckets, the
//! same path for every backend; every rank then applies the same update.

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::networks::Network;
use crate::Error;

/// The processes of one run. Every rank calls these in the same order, or they wait forever; one
/// thread at a time may call them.
pub trait Ranks: Send {
    /// This process's index; rank 0 alone prints and writes.
    fn rank(&self) -> usize;
    /// Processes in all.
    fn count(&self) -> usize;
    /// The element-wise sum over the ranks, in place.
    fn sum(&self, values: &mut [f32]);
    /// Every rank's value, in rank order.
    fn gather(&self, value: u64) -> Vec<u64>;
    /// Rank 0's bytes, on every rank.
    fn broadcast(&self, bytes: &[u8]) -> Vec<u8>;
}

/// How many processes a launcher started this one among: Open MPI's `mpirun`, MPICH's, or Slurm's
/// `srun`; None when none did.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"].iter().find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// This process's index among all those its launcher started.
pub fn launched_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"].iter().find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// This process's index among those its launcher started on the same machine.
pub fn launched_local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"].iter().find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// Floats per all-reduce call (64 MB): the network runs at full speed well below this, and host
/// memory holds the gradients once plus one bucket.
pub const BUCKET: usize = 1 << 24;

/// The element-wise sum over the ranks of `values`, bucket by bucket.
pub fn sum_in_buckets(ranks: &dyn Ranks, values: &mut [f32]) {
    for bucket in values.chunks_mut(BUCKET) {
        ranks.sum(bucket);
    }
}

/// Every gradient of `grads`, flattened in visiting order (the same on every rank; zeros where a
/// parameter has none), and a 1 or 0 per parameter saying which have one.
struct Flatten<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
    present: Vec<f32>,
    device: Device,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        let grad = self.grads.get::<D>(param.id);
        self.present.push(grad.is_some() as u8 as f32);
        self.parts.push(match grad {
            Some(grad) => grad.reshape([n]).to_device(&self.device),
            None => Tensor::zeros([n], &self.device),
        });
    }
}

/// Gradients back from the summed host vector, in visiting order, uploaded a bucket at a time
/// and sliced; those no rank had stay absent.
struct Unflatten {
    values: Vec<f32>,
    present: Vec<f32>,
    device: Device,
    /// The uploaded bucket and where it starts and ends in `values`.
    bucket: Option<(Tensor<1>, usize, usize)>,
    offset: usize,
    index: usize,
    grads: GradientsParams,
}

impl ModuleVisitor for Unflatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape();
        let n = shape.num_elements();
        if self.bucket.as_ref().is_none_or(|(_, _, end)| self.offset + n > *end) {
            let end = (self.offset + n.max(BUCKET)).min(self.values.len());
            let values = self.values[self.offset..end].to_vec();
            self.bucket = Some((Tensor::from_data(TensorData::new(values, [end - self.offset]), &self.device), self.offset, end));
        }
        if self.present[self.index] > 0.0 {
            let (bucket, start, _) = self.bucket.as_ref().expect("uploaded");
            let at = self.offset - start;
            let dims: [usize; D] = shape.dims();
            self.grads.register::<D>(param.id, bucket.clone().slice(at..at + n).reshape(dims));
        }
        (self.offset, self.index) = (self.offset + n, self.index + 1);
    }
}

fn to_host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("converted to f32")
}

/// `parts` in one host vector, concatenated on their device and read a bucket at a time (a wgpu
/// buffer may not hold them all).
fn read_in_buckets(parts: Vec<Tensor<1>>) -> Vec<f32> {
    let mut out = Vec::new();
    let mut group: Vec<Tensor<1>> = Vec::new();
    let mut size = 0;
    for part in parts {
        let n = part.dims()[0];
        if size + n > BUCKET && !group.is_empty() {
            out.extend(to_host(Tensor::cat(std::mem::take(&mut group), 0)));
            size = 0;
        }
        size += n;
        group.push(part);
    }
    if !group.is_empty() {
        out.extend(to_host(Tensor::cat(group, 0)));
    }
    out
}

/// The sum over this process's devices and over every rank of `sets` (gradients of `net`) and of
/// `loss`, on `home`: read from the devices, all-reduced and written back in [`BUCKET`]s. A
/// parameter keeps a gradient when some part anywhere gave it one.
pub fn sum_gradients<N: Network>(ranks: &dyn Ranks, net: &N, sets: &[GradientsParams], loss: Tensor<1>, home: &Device) -> (Tensor<1>, GradientsParams) {
    let mut host: Option<(Vec<f32>, Vec<f32>)> = None;
    for grads in sets {
        let mut flatten = Flatten { grads, parts: Vec::new(), present: Vec::new(), device: home.clone() };
        net.visit(&mut flatten);
        let values = read_in_buckets(flatten.parts);
        host = Some(match host {
            None => (values, flatten.present),
            Some((mut sum, mut present)) => {
                sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
                present.iter_mut().zip(&flatten.present).for_each(|(p, q)| *p = p.max(*q));
                (sum, present)
            }
        });
    }
    let (mut values, present) = host.expect("at least one set of gradients");
    let n = values.len();
    values.extend(&present);
    values.extend(to_host(loss));
    sum_in_buckets(ranks, &mut values);
    let loss = Tensor::from_data(TensorData::new(vec![values[values.len() - 1]], [1]), home);
    let present = values[n..values.len() - 1].to_vec();
    values.truncate(n);
    let mut unflatten = Unflatten { values, present, device: home.clone(), bucket: None, offset: 0, index: 0, grads: GradientsParams::new() };
    net.visit(&mut unflatten);
    (loss, unflatten.grads)
}

/// FNV-1a over the bits of every parameter of `net`, in visiting order.
pub fn weights_hash<N: Network>(net: &N) -> u64 {
    struct Parts(Vec<Tensor<1>>, Option<Device>);
    impl ModuleVisitor for Parts {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let device = self.1.get_or_insert_with(|| value.device()).clone();
            let n = value.shape().num_elements();
            self.0.push(value.reshape([n]).to_device(&device));
        }
    }
    let mut parts = Parts(Vec::new(), None);
    net.visit(&mut parts);
    let values = read_in_buckets(parts.0);
    crate::fnv1a(values.iter().flat_map(|v| v.to_bits().to_le_bytes()))
}

/// Fails on every rank unless all hold the same weights as rank 0.
pub fn check_same_weights<N: Network>(ranks: &dyn Ranks, net: &N, steps: u64, nimg: u64) -> Result<(), Error> {
    let hashes = ranks.gather(weights_hash(net));
    let differ: Vec<String> = hashes.iter().enumerate().filter(|(_, h)| **h != hashes[0]).map(|(r, _)| r.to_string()).collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::new(format!(
        "after step {steps} ({nimg} images) the weights of rank {} differ from rank 0's: the ranks no longer train \
         the same model (a different binary or device kind?); stopping",
        differ.join(", ")
    )))
}

/// Fails on every rank unless all were started with rank 0's configuration (a JSON object); a
/// rank that differs names the keys.
pub fn check_same_config(ranks: &dyn Ranks, config: &serde_json::Value) -> Result<(), Error> {
    let text = config.to_string();
    let first = ranks.broadcast(text.as_bytes());
    let same = first == text.as_bytes();
    let flags = ranks.gather(same as u64);
    let differ: Vec<String> = flags.iter().enumerate().filter(|(_, f)| **f == 0).map(|(r, _)| r.to_string()).collect();
    if differ.is_empty() {
        return Ok(());
    }
    let mut message = format!("rank {} started with options different from rank 0's; start every rank with the same command", differ.join(", "));
    if !same {
        let first: serde_json::Value = serde_json::from_slice(&first).unwrap_or_default();
        message += &format!(" (this rank, {}, differs in: {})", ranks.rank(), differing(&first, config, "").join(", "));
    }
    Err(Error::new(message))
}

/// The dotted paths of the leaves at which two JSON values differ.
fn differing(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Vec<String> {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            let null = serde_json::Value::Null;
            let nested = |k: &String| differing(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &format!("{path}{k}."));
            keys.into_iter().flat_map(nested).collect()
        }
        _ if a == b => Vec::new(),
        _ => vec![path.trim_end_matches('.').to_string()],
    }
}
