//! Users' own images: a folder with one sub-folder per class (the ImageNet layout; classes in name
//! order, as torchvision's `ImageFolder`), PNG or JPEG files, each resized and centre-cropped to
//! the model's side as ADM (and the IMM and EDM2 ImageNet data) prepares ImageNet.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::data::images::Images;

/// The images under `dir` as `channels` (1: grey, 3: RGB) x `side` x `side` bytes, labelled by
/// sub-folder, and the class names (the sub-folders' names). Files directly in `dir` form one class
/// named after `dir` itself. Fails on a folder with no images or a file that does not decode.
pub fn read_image_folder(dir: &Path, side: usize, channels: usize) -> Result<(Images, Vec<String>), Error> {
    if channels != 1 && channels != 3 {
        return Err(Error::new(format!("image folders give 1 (grey) or 3 (RGB) channels, not {channels}")));
    }
    let (files, names) = list_image_folder(dir)?;
    if names.len() > 256 {
        return Err(Error::new(format!("{} has {} classes; at most 256 are supported", dir.display(), names.len())));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (file, label) in &files {
        pixels.extend(square(file, side, channels)?);
        labels.push(*label as u8);
    }
    Ok((Images { channels, side, pixels, labels: Some(labels) }, names))
}

/// The PNG and JPEG files under `dir` with their class (the index of their sub-folder, in name
/// order), in class then name order, and the class names, as [`read_image_folder`] reads them.
pub fn list_image_folder(dir: &Path) -> Result<(Vec<(PathBuf, usize)>, Vec<String>), Error> {
    let listing = |d: &Path| -> Result<Vec<PathBuf>, Error> {
        let entries = std::fs::read_dir(d).map_err(|e| Error::new(format!("cannot read the image folder {}: {e}", d.display())))?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        Ok(paths)
    };
    let is_image = |p: &Path| {
        p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
    };
    let top = listing(dir)?;
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for sub in top.iter().filter(|p| p.is_dir()) {
        let files: Vec<PathBuf> = listing(sub)?.into_iter().filter(|p| is_image(p)).collect();
        if !files.is_empty() {
            classes.push((sub.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(), files));
        }
    }
    let loose: Vec<PathBuf> = top.into_iter().filter(|p| is_image(p)).collect();
    if !loose.is_empty() {
        if !classes.is_empty() {
            return Err(Error::new(format!("{} holds images beside class folders: put every image in its class's folder", dir.display())));
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "images".into());
        classes.push((name, loose));
    }
    if classes.is_empty() {
        return Err(Error::new(format!("{} has no PNG or JPEG images (in it, or in one sub-folder per class)", dir.display())));
    }
    let files = classes.iter().enumerate().flat_map(|(label, (_, files))| files.iter().map(move |f| (f.clone(), label))).collect();
    Ok((files, classes.into_iter().map(|(name, _)| name).collect()))
}

/// The most an image's long side may exceed its short side.
const MAX_ASPECT: usize = 64;

/// One file as ADM's `center_crop_arr` makes it: halved with a box filter while its short side
/// is at least 2 `side`, resized bicubically so that the short side is `side`, then centre-cropped;
/// laid out planar.
pub fn square(file: &Path, side: usize, channels: usize) -> Result<Vec<u8>, Error> {
    let img = image::open(file).map_err(|e| Error::new(format!("cannot read the image {}: {e}", file.display())))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if side == 0 {
        return Err(Error::new("images are cropped to a square of a positive side, not 0"));
    }
    // The resize makes the short side `side`: a thin strip would make the long one enormous.
    if w.min(h) == 0 || w.max(h) > MAX_ASPECT * w.min(h) {
        return Err(Error::new(format!(
            "{} is {w} x {h} pixels: no square crop can be made of it (at most {MAX_ASPECT} times longer than wide)",
            file.display()
        )));
    }
    let pixels = match channels {
        1 => img.to_luma8().into_raw(),
        _ => img.to_rgb8().into_raw(),
    };
    let pixels = centre_crop(pixels, channels, w, h, side);
    Ok((0..channels).flat_map(|c| pixels.iter().skip(c).step_by(channels).copied().collect::<Vec<u8>>()).collect())
}

/// [`square`] on interleaved pixels [h, w, channels]: the side x side crop, interleaved.
fn centre_crop(mut pixels: Vec<u8>, channels: usize, mut w: usize, mut h: usize, side: usize) -> Vec<u8> {
    while w.min(h) >= 2 * side {
        pixels = resample(&pixels, channels, (w, h), (w / 2, h / 2), Filter::Box);
        (w, h) = (w / 2, h / 2);
    }
    let scale = side as f64 / w.min(h) as f64;
    // Python's round: halves to even.
    let (nw, nh) = ((w as f64 * scale).round_ties_even() as usize, (h as f64 * scale).round_ties_even() as usize);
    if (nw, nh) != (w, h) {
        pixels = resample(&pixels, channels, (w, h), (nw, nh), Filter::Bicubic);
    }
    let (x0, y0) = ((nw - side) / 2, (nh - side) / 2);
    (y0..y0 + side).flat_map(|y| pixels[(y * nw + x0) * channels..(y * nw + x0 + side) * channels].to_vec()).collect()
}

#[derive(Clone, Copy)]
enum Filter {
    Box,
    /// Keys' cubic with a = -0.5.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        const A: f64 = -0.5;
        match self {
            Self::Box => f64::from(x > -0.5 && x <= 0.5),
            Self::Bicubic => match x.abs() {
                x if x < 1.0 => ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0,
                x if x < 2.0 => (((x - 5.0) * x + 8.0) * x - 4.0) * A,
                _ => 0.0,
            },
        }
    }
}

/// Pillow's resampling of 8-bit images, which defines ADM's crop: separable, horizontal then
/// vertical, each pass with antialiased weights in 22-bit fixed point, rounded to 8 bits between
/// passes. Written here because the `image` crate has no box filter and rounds otherwise.
fn resample(pixels: &[u8], c: usize, (w, h): (usize, usize), (nw, nh): (usize, usize), filter: Filter) -> Vec<u8> {
    const BITS: u32 = 22;
    // For each output position: the first input position and the fixed-point weights.
    let coefficients = |from: usize, to: usize| -> Vec<(usize, Vec<i64>)> {
        let scale = from as f64 / to as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        (0..to)
            .map(|i| {
                let centre = (i as f64 + 0.5) * scale;
                let lo = ((centre - support + 0.5) as i64).max(0) as usize;
                let hi = ((centre + support + 0.5) as i64).min(from as i64) as usize;
                let weights: Vec<f64> = (lo..hi).map(|x| filter.weight((x as f64 - centre + 0.5) / filterscale)).collect();
                let total: f64 = weights.iter().sum();
                let fixed = weights.iter().map(|&k| {
                    let k = if total != 0.0 { k / total } else { k } * f64::from(1u32 << BITS);
                    (if k < 0.0 { k - 0.5 } else { k + 0.5 }) as i64
                });
                (lo, fixed.collect())
            })
            .collect()
    };
    let clip = |sum: i64| (sum >> BITS).clamp(0, 255) as u8;
    let half = 1i64 << (BITS - 1);
    let across = coefficients(w, nw);
    let mut wide = vec![0u8; h * nw * c];
    for y in 0..h {
        for (x, (lo, k)) in across.iter().enumerate() {
            for ch in 0..c {
                let sum = k.iter().enumerate().map(|(j, k)| pixels[(y * w + lo + j) * c + ch] as i64 * k).sum::<i64>();
                wide[(y * nw + x) * c + ch] = clip(half + sum);
            }
        }
    }
    let down = coefficients(h, nh);
    let mut out = vec![0u8; nh * nw * c];
    for (y, (lo, k)) in down.iter().enumerate() {
        for i in 0..nw * c {
            let sum = k.iter().enumerate().map(|(j, k)| wide[(lo + j) * nw * c + i] as i64 * k).sum::<i64>();
            out[y * nw * c + i] = clip(half + sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Box halving as Pillow rounds it (each pass to 8 bits), an odd size's wider boxes, and
    /// bicubic weights that keep a constant and interpolate a ramp.
    #[test]
    fn resampling_rounds_as_pillow_does() {
        let grey = [10u8, 21, 100, 200, 30, 40, 0, 1];
        // Across: (10+21)/2 = 15.5 -> 16, 150, 35, 0.5 -> 1; down: 25.5 -> 26, 75.5 -> 76.
        assert_eq!(resample(&grey, 1, (4, 2), (2, 1), Filter::Box), [26, 76]);
        // 5 -> 2: boxes 2.5 wide take pixels 0..3 and 3..5.
        assert_eq!(resample(&[3, 6, 9, 100, 50], 1, (5, 1), (2, 1), Filter::Box), [6, 75]);
        let flat = vec![77u8; 7 * 5 * 3];
        assert_eq!(resample(&flat, 3, (7, 5), (4, 3), Filter::Bicubic), vec![77u8; 4 * 3 * 3]);
        let ramp: Vec<u8> = (0..8).map(|x| x * 30).collect();
        let up = resample(&ramp, 1, (8, 1), (16, 1), Filter::Bicubic);
        // Inside, the cubic reproduces the linear ramp: output x sits at input (x + 0.5) / 2 - 0.5.
        for (x, &v) in up.iter().enumerate().take(13).skip(3) {
            let want = ((x as f64 + 0.5) / 2.0 - 0.5) * 30.0;
            assert!((v as f64 - want).abs() <= 0.5, "x {x}: {v} vs {want}");
        }
    }

    /// A strip of 1 x 100 pixels, and a side of 0, are refused with a message.
    #[test]
    fn degenerate_sizes_are_refused() {
        let path = std::env::temp_dir().join(format!("imm-strip-{}.png", std::process::id()));
        image::GrayImage::from_pixel(1, 100, image::Luma([200])).save(&path).unwrap();
        let refused = square(&path, 8, 1).unwrap_err();
        assert!(refused.0.contains("is 1 x 100 pixels: no square crop"), "{refused}");
        image::GrayImage::from_pixel(30, 20, image::Luma([200])).save(&path).unwrap();
        assert_eq!(square(&path, 8, 1).unwrap().len(), 64, "an ordinary image is cropped");
        assert!(square(&path, 0, 1).unwrap_err().0.contains("positive side"));
        std::fs::remove_file(&path).unwrap();
    }

    /// ADM's crop: halvings while the short side is at least twice the target, a bicubic resize
    /// of the short side to it, then the centre.
    #[test]
    fn the_crop_halves_resizes_then_takes_the_centre() {
        // 40 x 24 to 6: 24 >= 12, so halve to 20 x 12, again to 10 x 6; then crop x from 2.
        let pixels: Vec<u8> = (0..24).flat_map(|_| (0..40).map(|x| (x * 6) as u8)).collect();
        let crop = centre_crop(pixels, 1, 40, 24, 6);
        assert_eq!(crop.len(), 36);
        // Column x of the 10-wide image averages input columns 4x..4x+4: 6 (4x + 1.5), rounded.
        let row: Vec<u8> = (2..8).map(|x| (6.0 * (4.0 * x as f64 + 1.5)).round() as u8).collect();
        assert_eq!(crop[..6], row[..]);
        // 30 x 20 to 16: no halving (20 < 32); scale 0.8 -> 24 x 16, crop x from 4.
        let crop = centre_crop(vec![9; 30 * 20 * 3], 3, 30, 20, 16);
        assert_eq!(crop, vec![9; 16 * 16 * 3]);
    }

    /// Classes by sub-folder in name order, crops and channels, and the refusals.
    #[test]
    fn classes_by_folder_crops_and_errors() {
        let dir = std::env::temp_dir().join(format!("imm-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (class, value) in [("b_cat", 200u8), ("a_dog", 50u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            // 12 x 4: a centre of `value` between pairs of red columns that the crop removes.
            let img = image::RgbImage::from_fn(12, 4, |x, _| if x < 2 || x > 9 { image::Rgb([255, 0, 0]) } else { image::Rgb([value, value, 0]) });
            img.save(dir.join(class).join("one.png")).unwrap();
            img.save(dir.join(class).join("two.jpg")).unwrap();
        }
        std::fs::write(dir.join("a_dog").join("notes.txt"), "not an image").unwrap();
        let (images, names) = read_image_folder(&dir, 2, 3).unwrap();
        assert_eq!(names, ["a_dog", "b_cat"]);
        assert_eq!((images.len(), images.labels.as_deref()), (4, Some(&[0, 0, 1, 1][..])));
        let first = &images.pixels[..12];
        assert!(first[..4].iter().all(|&v| v == 50) && first[8..].iter().all(|&v| v == 0), "R, G planes 50, B plane 0: {first:?}");
        let (grey, _) = read_image_folder(&dir, 2, 1).unwrap();
        assert_eq!(grey.pixels.len(), 4 * 4);

        std::fs::write(dir.join("b_cat").join("broken.png"), b"\x89PNG broken").unwrap();
        assert!(read_image_folder(&dir, 2, 3).unwrap_err().0.contains("broken.png"));
        let empty = dir.join("empty");
        std::fs::create_dir_all(empty.join("sub")).unwrap();
        assert!(read_image_folder(&empty, 2, 3).unwrap_err().0.contains("no PNG or JPEG images"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
