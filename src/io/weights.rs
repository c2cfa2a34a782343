//! Module parameters by name, in PyTorch's layouts: the bridge between burn modules and
//! safetensors files. Linear weights are the only matrices in our networks; burn stores them
//! [in, out] and PyTorch [out, in], so 2-D parameters are transposed on the way.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use crate::Error;
use crate::io::safetensors::{Stored, Tensors};

/// A module whose parameters have names outside burn (the official `state_dict` names).
pub trait Named: Module {
    /// The external name of the parameter at this module path (`a.b.weight`).
    fn param_name(&self, path: &str) -> String {
        path.to_string()
    }
}

fn to_external<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if D == 2 { t.transpose() } else { t }
}

struct Gather<'a, N: Named> {
    net: &'a N,
    /// Gather these gradients instead of the parameters.
    grads: Option<&'a GradientsParams>,
    path: Vec<String>,
    /// External name, external shape, flattened values still on the device.
    out: Vec<(String, Vec<usize>, Tensor<1>)>,
}

impl<N: Named> ModuleVisitor for Gather<'_, N> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = match self.grads {
            Some(grads) => match grads.get::<D>(param.id) {
                Some(grad) => grad,
                None => return,
            },
            None => param.val(),
        };
        let t = to_external(t);
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        self.out.push((self.net.param_name(&self.path.join(".")), shape, t.reshape([n])));
    }
}

fn gather<N: Named>(net: &N, grads: Option<&GradientsParams>) -> Vec<(String, Vec<usize>, Tensor<1>)> {
    let mut gather = Gather { net, grads, path: Vec::new(), out: Vec::new() };
    net.visit(&mut gather);
    gather.out
}

fn stored(shape: Vec<usize>, data: TensorData) -> Stored {
    Stored { shape, values: data.convert::<f32>().try_into_vec::<f32>().expect("f32 parameters") }
}

/// Every float parameter under its external name, in the external layout.
pub fn named_params<N: Named>(net: &N) -> BTreeMap<String, Stored> {
    gather(net, None).into_iter().map(|(name, shape, t)| (name, stored(shape, t.into_data()))).collect()
}

/// [`named_params`] with asynchronous reads, the only kind WebGPU allows in the browser.
pub async fn named_params_async<N: Named>(net: &N) -> Result<BTreeMap<String, Stored>, Error> {
    let mut out = BTreeMap::new();
    for (name, shape, t) in gather(net, None) {
        let data = t.into_data_async().await.map_err(|e| crate::read_error(e, &name))?;
        out.insert(name, stored(shape, data));
    }
    Ok(out)
}

/// The gradients of `net`'s parameters under their external names; parameters without one are absent.
pub fn named_grads<N: Named>(net: &N, grads: &GradientsParams) -> BTreeMap<String, Stored> {
    gather(net, Some(grads)).into_iter().map(|(name, shape, t)| (name, stored(shape, t.into_data()))).collect()
}

struct Load<'a> {
    names: &'a BTreeMap<String, String>,
    source: &'a Tensors,
    prefix: &'a str,
    ids: Option<&'a BTreeMap<String, u64>>,
    path: Vec<String>,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = format!("{}{}", self.prefix, self.names[&self.path.join(".")]);
        let Some(stored) = self.source.get(&name) else {
            self.problems.push(format!("missing {name}"));
            return param;
        };
        self.used.insert(name.clone());
        let mut want = param.dims().to_vec();
        if D == 2 {
            want.reverse();
        }
        if stored.shape != want {
            self.problems.push(format!("{name} has shape {:?}, the network needs {want:?}", stored.shape));
            return param;
        }
        let require_grad = param.is_require_grad();
        // Transposed here rather than on the device, so that the parameter is laid out as a fresh
        // one is: a strided view would change the order of sums, and a resumed run would drift.
        let values = if D == 2 {
            let [rows, cols] = [want[0], want[1]];
            (0..rows * cols).map(|i| stored.values[(i % rows) * cols + i / rows]).collect()
        } else {
            stored.values.clone()
        };
        let shape = param.dims();
        let mut param = param.map(|old| Tensor::<D>::from_data(TensorData::new(values, shape), &old.device()).set_require_grad(require_grad));
        if let Some(&id) = self.ids.and_then(|ids| ids.get(&self.names[&self.path.join(".")])) {
            param.id = ParamId::from(id);
        }
        param
    }
}

/// Every float parameter's module path, mapped to its external name and its id.
struct Paths<'a, N: Named> {
    net: &'a N,
    path: Vec<String>,
    found: BTreeMap<String, (String, u64)>,
}

impl<N: Named> ModuleVisitor for Paths<'_, N> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        self.found.insert(path.clone(), (self.net.param_name(&path), param.id.val()));
    }
}

fn paths<N: Named>(net: &N) -> BTreeMap<String, (String, u64)> {
    let mut paths = Paths { net, path: Vec::new(), found: BTreeMap::new() };
    net.visit(&mut paths);
    paths.found
}

/// Replaces every parameter of `net` with the tensor of the same external name in `source`,
/// looked up as `prefix + name`, keeping parameter ids (so optimizer state still applies).
/// Fails, listing the first problems, on missing tensors, wrong shapes, or unexpected tensors under
/// the prefix (PyTorch's resampling-filter buffers excepted).
/// With `ids` (external name -> parameter id, from [`param_ids`]) the parameters also take back the
/// ids a saved optimizer state refers to.
pub fn load_named<N: Named>(
    net: N,
    source: &Tensors,
    prefix: &str,
    what: &str,
    ids: Option<&BTreeMap<String, u64>>,
) -> Result<N, Error> {
    let names: BTreeMap<String, String> = paths(&net).into_iter().map(|(path, (name, _))| (path, name)).collect();
    let mut load =
        Load { names: &names, source, prefix, ids, path: Vec::new(), used: BTreeSet::new(), problems: Vec::new() };
    let net = net.map(&mut load);
    let mut problems = load.problems;
    for name in source.tensors.keys() {
        if name.starts_with(prefix) && !load.used.contains(name) && !name.ends_with("resample_filter") {
            problems.push(format!("unexpected {name}"));
        }
    }
    if problems.is_empty() {
        return Ok(net);
    }
    let shown: Vec<&str> = problems.iter().take(4).map(String::as_str).collect();
    Err(Error::new(format!(
        "{what} does not fit this network ({} problem{}: {}{}); check the preset or config it was trained with",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        shown.join("; "),
        if problems.len() > 4 { "; ..." } else { "" }
    )))
}

/// Parameter ids by external name: what the optimizer state is keyed by.
pub fn param_ids<N: Named>(net: &N) -> BTreeMap<String, u64> {
    paths(net).into_values().collect()
}

/// The key prefix under which a file holds this network's parameters: none, or `model.` for a
/// whole `IMMPrecond` state_dict.
pub fn detect_prefix<N: Named>(net: &N, source: &Tensors) -> &'static str {
    let first = paths(net).into_values().next().map(|(name, _)| name).unwrap_or_default();
    if source.get(&first).is_none() && source.get(&format!("model.{first}")).is_some() { "model." } else { "" }
}
