//! Weights in the safetensors format, in the names and layouts of PyTorch, through the
//! `safetensors` crate: F32/F64/F16/BF16 read as f32; written as F32, or F16 for the page.
//! [`Mapped`] reads a file's tensors in place, for datasets larger than memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use crate::Error;

/// A tensor as stored: its shape and its values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every tensor of a file by name, plus the free-form `__metadata__` strings.
#[derive(Clone, Debug, Default)]
pub struct Tensors {
    pub tensors: BTreeMap<String, Stored>,
    pub metadata: BTreeMap<String, String>,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(format!("{what} is not a valid safetensors file: {detail}"))
}

/// The crate's errors in words for people.
fn why(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "shorter than its 8-byte header length".into(),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            "its header length runs past the end of the file (truncated?)".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => "its size differs from what its header describes (truncated?)".into(),
        SafeTensorError::InvalidHeader(e) => format!("its header is not UTF-8 ({e})"),
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("its header is not a valid JSON description ({e})"),
        e => format!("{e:?}"),
    }
}

/// One tensor to write: F32 or F16 bytes, little-endian.
struct Raw<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl View for &Raw<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Tensors {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a file; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Error> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(what, why(e)))?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| bad(what, why(e)))?;
        let mut out = Tensors::default();
        for (name, view) in file.iter() {
            let values = decode(view.dtype(), view.data())
                .ok_or_else(|| bad(what, format!("tensor '{name}' has unsupported dtype {:?}", view.dtype())))?;
            out.tensors.insert(name.to_string(), Stored { shape: view.shape().to_vec(), values });
        }
        if let Some(metadata) = header.metadata() {
            out.metadata = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&Stored> {
        self.tensors.get(name)
    }

    /// The file as F32.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(false)
    }

    /// The file as F32, or as F16 with `half` (half the size: for weights shipped to the page).
    pub fn to_bytes_as(&self, half: bool) -> Vec<u8> {
        let raw: Vec<(&String, Raw)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let (dtype, bytes) = if half {
                    (Dtype::F16, t.values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect())
                } else {
                    (Dtype::F32, t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
                };
                (name, Raw { dtype, shape: &t.shape, bytes })
            })
            .collect();
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone().into_iter().collect());
        safetensors::serialize(raw.iter().map(|(name, raw)| (name.as_str(), raw)), metadata)
            .expect("values match their shapes and the header fits")
    }
}

/// A safetensors file mapped into memory, its tensors read in place when asked: the page cache
/// keeps what fits, so data larger than memory (ImageNet's latents: 42 GB) is read from disk.
pub struct Mapped {
    map: memmap2::Mmap,
    pub metadata: BTreeMap<String, String>,
    /// Dtype, shape and the byte offset of the data of each tensor.
    tensors: BTreeMap<String, (Dtype, Vec<usize>, usize)>,
}

impl Mapped {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let what = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::new(format!("cannot read {what}: {e}")))?;
        // SAFETY: the files mapped here (`imm encode`'s shards) are written under a temporary name
        // and renamed, never changed in place, so the mapping does not change while it is read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::new(format!("cannot map {what} into memory: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| bad(&what, why(e)))?;
        let parsed = SafeTensors::deserialize(&map).map_err(|e| bad(&what, why(e)))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.iter() {
            if decode(view.dtype(), &[]).is_none() {
                return Err(bad(&what, format!("tensor '{name}' has unsupported dtype {:?}", view.dtype())));
            }
            let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
            tensors.insert(name.to_string(), (view.dtype(), view.shape().to_vec(), offset));
        }
        let metadata = header.metadata().as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        drop(parsed);
        Ok(Self { map, metadata, tensors })
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(_, shape, _)| shape.as_slice())
    }

    /// Elements `range` of the tensor `name`, flattened row-major, as f32.
    ///
    /// # Panics
    /// If there is no such tensor or the range runs past its end.
    pub fn values(&self, name: &str, range: Range<usize>) -> Vec<f32> {
        let (dtype, shape, offset) = &self.tensors[name];
        assert!(range.end <= shape.iter().product::<usize>(), "{range:?} runs past the end of '{name}' {shape:?}");
        let size = dtype.bitsize() / 8;
        decode(*dtype, &self.map[offset + range.start * size..offset + range.end * size]).expect("a dtype checked at opening")
    }
}

fn decode(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    };
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut t = Tensors::default();
        t.tensors.insert("a.weight".into(), Stored { shape: vec![2, 3], values: vec![1.0, -2.0, 3.5, 0.0, 1e-7, 6.0] });
        t.tensors.insert("b".into(), Stored { shape: vec![1], values: vec![0.25] });
        t.metadata.insert("preset".into(), "mnist-tiny".into());
        let bytes = t.to_bytes();
        let back = Tensors::parse(&bytes, "x").unwrap();
        assert_eq!(back.tensors, t.tensors);
        assert_eq!(back.metadata, t.metadata);
        assert!(Tensors::parse(&bytes[..bytes.len() - 3], "x").unwrap_err().0.contains("truncated"));
        let small = t.to_bytes_as(true);
        assert!(small.len() < bytes.len());
        let back = Tensors::parse(&small, "x").unwrap();
        assert_eq!(back.metadata, t.metadata);
        for (name, stored) in &t.tensors {
            for (a, b) in stored.values.iter().zip(&back.tensors[name].values) {
                assert!((a - b).abs() <= 1e-3 * a.abs() + 1e-7, "{name}: {a} vs {b}");
            }
        }
        assert!(Tensors::parse(&bytes[..5], "x").is_err());
        assert!(Tensors::parse(b"\x04\0\0\0\0\0\0\0nope", "x").unwrap_err().0.contains("JSON"));
        let mut wrong = bytes.clone();
        wrong.push(0);
        assert!(Tensors::parse(&wrong, "x").is_err(), "a trailing byte is refused");
    }

    /// A mapped file reads ranges equal to the whole file's values, in F32 and F16 alike.
    #[test]
    fn mapped_ranges_equal_the_read_values() {
        let mut t = Tensors::default();
        let values: Vec<f32> = (0..60).map(|i| (i as f32 - 20.0) * 0.37).collect();
        t.tensors.insert("moments".into(), Stored { shape: vec![5, 12], values });
        t.tensors.insert("labels".into(), Stored { shape: vec![5], values: vec![0.0, 1.0, 1.0, 3.0, 2.0] });
        t.metadata.insert("imm_latents".into(), "{}".into());
        let dir = std::env::temp_dir().join(format!("imm-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for half in [false, true] {
            let path = dir.join(format!("{half}.safetensors"));
            let bytes = t.to_bytes_as(half);
            std::fs::write(&path, &bytes).unwrap();
            let whole = Tensors::parse(&bytes, "x").unwrap();
            let mapped = Mapped::open(&path).unwrap();
            assert_eq!((mapped.shape("moments"), &mapped.metadata), (Some(&[5, 12][..]), &t.metadata));
            assert_eq!(mapped.values("moments", 24..36), whole.tensors["moments"].values[24..36]);
            assert_eq!(mapped.values("labels", 0..5), whole.tensors["labels"].values);
        }
        let path = dir.join("short.safetensors");
        let bytes = t.to_bytes();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(Mapped::open(&path).err().unwrap().0.contains("truncated"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
