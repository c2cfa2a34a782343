//! What the image-training tests share: a small synthetic MNIST-format dataset and reading weights.

use std::path::{Path, PathBuf};

use imm::io::safetensors::Tensors;

/// A scratch directory with 64 blurry synthetic "digits" (a bright square at varying places) as a
/// gzipped IDX file, with their labels (image i is of class i mod 10).
pub fn scratch_with_data(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imm-images-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut bytes = Vec::new();
    for v in [0x803u32, 64, 28, 28] {
        bytes.extend(v.to_be_bytes());
    }
    for i in 0..64usize {
        for y in 0..28usize {
            for x in 0..28usize {
                let (cx, cy) = (6 + i % 16, 6 + i / 4);
                bytes.push(if x.abs_diff(cx) < 5 && y.abs_diff(cy) < 5 { 230 } else { 10 });
            }
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    std::fs::write(dir.join("data/train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    let mut labels = Vec::new();
    for v in [0x801u32, 64] {
        labels.extend(v.to_be_bytes());
    }
    labels.extend((0..64u8).map(|i| i % 10));
    std::fs::write(dir.join("data/train-labels-idx1-ubyte"), labels).unwrap();
    dir
}

/// Every value of a safetensors file, in name order.
pub fn weights(path: &Path) -> Vec<f32> {
    Tensors::read(path).unwrap().tensors.values().flat_map(|t| t.values.clone()).collect()
}
