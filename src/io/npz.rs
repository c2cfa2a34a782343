//! NumPy's .npz (a zip of .npy arrays): the uint8 image arrays that FID tools read, and the float
//! arrays of reference statistics (ADM's `mu` and `sigma`) that `imm eval --ref` reads.

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use zip::ZipArchive;
use zip::write::{FileOptions, ZipWriter};

use crate::Error;

/// One array of an .npz.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// An .npz of `arrays` (name, .npy dtype such as `|u1` or `<f8`, shape, little-endian bytes),
/// stored uncompressed as `np.savez` writes them.
pub fn npz(arrays: &[(&str, &str, &[usize], &[u8])]) -> Result<Vec<u8>, Error> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let fail = |e: &dyn std::fmt::Display| Error::new(format!("writing an .npz: {e}"));
    for (name, descr, shape, bytes) in arrays {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let dims = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
        // The data starts 64-byte aligned, as NumPy writes it.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let options = FileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(bytes.len() > u32::MAX as usize / 2);
        zip.start_file(format!("{name}.npy"), options).map_err(|e| fail(&e))?;
        zip.write_all(b"\x93NUMPY\x01\x00").map_err(|e| fail(&e))?;
        zip.write_all(&(header.len() as u16).to_le_bytes()).map_err(|e| fail(&e))?;
        zip.write_all(header.as_bytes()).map_err(|e| fail(&e))?;
        zip.write_all(bytes).map_err(|e| fail(&e))?;
    }
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}

/// An .npz holding `arr_0`: uint8 images [N, H, W, C] from planar images in [-1, 1], as FID tools read them.
pub fn npz_u8(images: &[f32], n: usize, c: usize, side: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::with_capacity(n * c * side * side);
    for image in images.chunks_exact(c * side * side) {
        for y in 0..side {
            for x in 0..side {
                for ch in 0..c {
                    let v = image[(ch * side + y) * side + x];
                    body.push(((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8);
                }
            }
        }
    }
    npz(&[("arr_0", "|u1", &[n, side, side, c], &body)])
}

/// The float arrays `names` of the .npz at `path` (f32 or f64, C order), reading only those
/// entries: ADM's reference batches also hold 10,000 images.
pub fn read_floats(path: &Path, names: &[&str]) -> Result<Vec<Array>, Error> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::new(format!("cannot read {what}: {e}")))?;
    floats_from(std::io::BufReader::new(file), &what, names)
}

/// [`read_floats`] of an .npz in memory; `what` names it in errors.
pub fn parse_floats(bytes: &[u8], what: &str, names: &[&str]) -> Result<Vec<Array>, Error> {
    floats_from(Cursor::new(bytes), what, names)
}

fn floats_from<R: Read + Seek>(reader: R, what: &str, names: &[&str]) -> Result<Vec<Array>, Error> {
    let mut zip = ZipArchive::new(reader).map_err(|e| Error::new(format!("{what} is not an .npz (a zip archive): {e}")))?;
    names.iter().map(|name| read_array(&mut zip, name).map_err(|e| Error::new(format!("{what}: {e}")))).collect()
}

fn read_array<R: Read + Seek>(zip: &mut ZipArchive<R>, name: &str) -> Result<Array, String> {
    let mut entry = zip.by_name(&format!("{name}.npy")).map_err(|_| format!("has no array '{name}'"))?;
    // No room reserved from the size the archive claims: a damaged one may claim any.
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| format!("reading '{name}': {e}"))?;
    let bad = |why: &str| format!("'{name}' is not an array this reads ({why})");
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 12 {
        return Err(bad("no .npy header"));
    }
    // Version 1 has a 2-byte header length; versions 2 and 3 a 4-byte one.
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(bytes.get(start..start.saturating_add(len)).ok_or_else(|| bad("truncated"))?).map_err(|_| bad("header"))?;
    let field = |key: &str| header.split(&format!("'{key}':")).nth(1).map(str::trim_start);
    let descr = field("descr").and_then(|d| d.strip_prefix('\'')).and_then(|d| d.split('\'').next()).ok_or_else(|| bad("no dtype"))?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad("Fortran order"));
    }
    let dims = field("shape").and_then(|s| s.strip_prefix('(')).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = dims.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().map_err(|_| bad("shape"))).collect::<Result<_, _>>()?;
    let data = &bytes[start + len..];
    // A shape that claims more values than memory holds is refused before any is read.
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| bad("a shape beyond any memory"))?;
    let values: Vec<f64> = match descr {
        "<f8" => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
        "<f4" => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64).collect(),
        other => return Err(bad(&format!("dtype {other}; f32 and f64 are read"))),
    };
    if values.len() != count {
        return Err(bad(&format!("{} values for shape {shape:?}", values.len())));
    }
    Ok(Array { shape, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arrays written by [`npz`] read back; missing names, other dtypes and truncation are refused.
    #[test]
    fn float_arrays_round_trip() {
        let dir = std::env::temp_dir().join(format!("imm-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mu = [1.5f64, -2.0, 3.25];
        let sigma: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let bytes = |v: &[u8]| v.to_vec();
        let mu_bytes: Vec<u8> = mu.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sigma_bytes: Vec<u8> = sigma.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = npz(&[("arr_0", "|u1", &[2, 1], &bytes(&[7, 8])), ("mu", "<f8", &[3], &mu_bytes), ("sigma", "<f4", &[2, 3], &sigma_bytes)]).unwrap();
        let path = dir.join("ref.npz");
        std::fs::write(&path, &file).unwrap();
        let arrays = read_floats(&path, &["sigma", "mu"]).unwrap();
        assert_eq!(arrays[0], Array { shape: vec![2, 3], values: sigma.iter().map(|&v| v as f64).collect() });
        assert_eq!(arrays[1], Array { shape: vec![3], values: mu.to_vec() });
        assert!(read_floats(&path, &["mean"]).unwrap_err().0.contains("has no array 'mean'"));
        assert!(read_floats(&path, &["arr_0"]).unwrap_err().0.contains("dtype |u1"));
        std::fs::write(&path, &file[..file.len() / 2]).unwrap();
        assert!(read_floats(&path, &["mu"]).unwrap_err().0.contains("is not an .npz"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
