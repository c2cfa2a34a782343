//! The safetensors file format (an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the raw little-endian data): read F32/F64/F16/BF16 as
//! f32, write F32. Small enough to own; it keeps weights in the names and layouts of PyTorch.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

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

impl Tensors {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a file; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Error> {
        let len = bytes.get(..8).ok_or_else(|| bad(what, "shorter than its 8-byte header length"))?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let header = bytes
            .get(8..8usize.saturating_add(len))
            .ok_or_else(|| bad(what, format!("header of {len} bytes runs past the end of the file")))?;
        let header: Map<String, Value> =
            serde_json::from_slice(header).map_err(|e| bad(what, format!("header is not a JSON object ({e})")))?;
        let data = &bytes[8 + len..];
        let mut out = Tensors::default();
        for (name, entry) in header {
            if name == "__metadata__" {
                if let Some(map) = entry.as_object() {
                    for (k, v) in map {
                        out.metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                    }
                }
                continue;
            }
            let field = |key: &str| entry.get(key).ok_or_else(|| bad(what, format!("tensor '{name}' has no {key}")));
            let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
            let numbers = |key: &str| -> Result<Vec<usize>, Error> {
                field(key)?
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| bad(what, format!("tensor '{name}' has a malformed {key}")))
            };
            let shape = numbers("shape")?;
            let range = numbers("data_offsets")?;
            let raw = match range[..] {
                [start, end] if start <= end => data.get(start..end),
                _ => None,
            }
            .ok_or_else(|| bad(what, format!("tensor '{name}' lies outside the file (truncated?)")))?;
            let values = decode(&dtype, raw).ok_or_else(|| bad(what, format!("tensor '{name}' has unsupported dtype {dtype}")))?;
            if values.len() != shape.iter().product::<usize>() {
                return Err(bad(what, format!("tensor '{name}' holds {} values for shape {shape:?}", values.len())));
            }
            out.tensors.insert(name, Stored { shape, values });
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&Stored> {
        self.tensors.get(name)
    }

    /// The file as F32, tensors in name order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(false)
    }

    /// The file as F32, or as F16 with `half` (half the size: for weights shipped to the page).
    pub fn to_bytes_as(&self, half: bool) -> Vec<u8> {
        let (dtype, width) = if half { ("F16", 2) } else { ("F32", 4) };
        let mut header = Map::new();
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), json!(self.metadata));
        }
        let mut offset = 0;
        for (name, t) in &self.tensors {
            let end = offset + width * t.values.len();
            header.insert(name.clone(), json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, end]}));
            offset = end;
        }
        let mut text = serde_json::to_vec(&Value::Object(header)).expect("header serialises");
        // Pad the header with spaces so that the data starts 8-byte aligned, as the format advises.
        while (8 + text.len()) % 8 != 0 {
            text.push(b' ');
        }
        let mut bytes = Vec::with_capacity(8 + text.len() + offset);
        bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&text);
        for t in self.tensors.values() {
            for v in &t.values {
                if half {
                    bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                } else {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        bytes
    }
}

fn decode(dtype: &str, raw: &[u8]) -> Option<Vec<f32>> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let bf16 = |b: &[u8]| half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
    let (size, convert): (usize, &dyn Fn(&[u8]) -> f32) = match dtype {
        "F32" => (4, &|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "F64" => (8, &|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        "F16" => (2, &f16),
        "BF16" => (2, &bf16),
        _ => return None,
    };
    (raw.len() % size == 0).then(|| raw.chunks_exact(size).map(convert).collect())
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
    }
}
