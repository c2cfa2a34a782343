//! Users' own images: a folder with one sub-folder per class (the ImageNet layout; classes in name
//! order, as torchvision's `ImageFolder`), PNG or JPEG files, each centre-cropped to a square and
//! resized to the model's side.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

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

/// One file, centre-cropped to a square, resized to `side` (Catmull-Rom) and laid out planar.
pub fn square(file: &Path, side: usize, channels: usize) -> Result<Vec<u8>, Error> {
    let img = image::open(file).map_err(|e| Error::new(format!("cannot read the image {}: {e}", file.display())))?;
    let (w, h) = (img.width(), img.height());
    let s = w.min(h);
    let img = img.crop_imm((w - s) / 2, (h - s) / 2, s, s).resize_exact(side as u32, side as u32, FilterType::CatmullRom);
    Ok(match channels {
        1 => img.to_luma8().into_raw(),
        _ => {
            let rgb = img.to_rgb8().into_raw();
            (0..3).flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<u8>>()).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classes by sub-folder in name order, crops and channels, and the refusals.
    #[test]
    fn classes_by_folder_crops_and_errors() {
        let dir = std::env::temp_dir().join(format!("imm-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (class, value) in [("b_cat", 200u8), ("a_dog", 50u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            // 6 x 4: a centre square of `value` between two red columns that the crop removes.
            let img = image::RgbImage::from_fn(6, 4, |x, _| if x == 0 || x == 5 { image::Rgb([255, 0, 0]) } else { image::Rgb([value, value, 0]) });
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
