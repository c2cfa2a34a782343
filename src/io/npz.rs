//! NumPy's .npz: the uint8 image arrays that FID tools read.

/// An .npz (a stored zip) holding `arr_0`: uint8 images [N, H, W, C], as FID tools read them.
pub fn npz_u8(images: &[f32], n: usize, c: usize, side: usize) -> Vec<u8> {
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
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({n}, {side}, {side}, {c}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    npy.extend(body);

    let name = b"arr_0.npy";
    let mut crc = flate2::Crc::new();
    crc.update(&npy);
    let (crc, size) = (crc.sum(), npy.len() as u32);
    // Fields shared by the local and the central header: version 2.0, no flags, stored, 1980-01-01.
    let common = |v: &mut Vec<u8>| {
        for half in [20u16, 0, 0, 0, 0x21] {
            v.extend(half.to_le_bytes());
        }
        for word in [crc, size, size] {
            v.extend(word.to_le_bytes());
        }
        v.extend((name.len() as u16).to_le_bytes());
        v.extend(0u16.to_le_bytes());
    };
    let mut zip = 0x04034b50u32.to_le_bytes().to_vec();
    common(&mut zip);
    zip.extend(name);
    zip.extend(&npy);
    let central_at = zip.len() as u32;
    zip.extend(0x02014b50u32.to_le_bytes());
    zip.extend(20u16.to_le_bytes());
    common(&mut zip);
    for half in [0u16, 0, 0] {
        zip.extend(half.to_le_bytes());
    }
    zip.extend(0u32.to_le_bytes());
    zip.extend(0u32.to_le_bytes());
    zip.extend(name);
    let central_len = zip.len() as u32 - central_at;
    zip.extend(0x06054b50u32.to_le_bytes());
    for half in [0u16, 0, 1, 1] {
        zip.extend(half.to_le_bytes());
    }
    zip.extend(central_len.to_le_bytes());
    zip.extend(central_at.to_le_bytes());
    zip.extend(0u16.to_le_bytes());
    zip
}
