//! PNG figures: scatter plots of 2D samples in labelled panels, and labelled rows of generated
//! images. Our own drawing, not `plotters`: its text needs system fonts or an embedded font file,
//! and these figures need only points, pixels and a 5x7 bitmap font.

use std::path::Path;

use crate::Error;

/// One panel: `points` drawn in `color` over `background` points in grey, both flattened [n, 2].
pub struct Panel {
    pub title: String,
    pub background: Vec<f32>,
    pub points: Vec<f32>,
    pub color: [u8; 3],
}

const PANEL: usize = 256;
const MARGIN: usize = 8;
const TITLE: usize = 22;
const LABEL: usize = 52;
/// Half-width of the plotted square, in data units (3 sigma_data).
const EXTENT: f32 = 1.5;

struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self { width, height, rgb: vec![255; width * height * 3] }
    }

    fn put(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&color);
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, color: [u8; 3]) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.put(x, y, color);
            }
        }
    }

    /// Text in a 5x7 font at `scale` pixels per dot.
    fn text(&mut self, x0: usize, y0: usize, text: &str, scale: usize, color: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (dy, bits) in rows.iter().enumerate() {
                for dx in 0..5 {
                    if bits >> (4 - dx) & 1 == 1 {
                        self.rect(x0 + (i * 6 + dx) * scale, y0 + dy * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    fn scatter(&mut self, x0: usize, y0: usize, points: &[f32], color: [u8; 3]) {
        for p in points.chunks_exact(2) {
            let (u, v) = ((p[0] + EXTENT) / (2.0 * EXTENT), (EXTENT - p[1]) / (2.0 * EXTENT));
            if (0.0..1.0).contains(&u) && (0.0..1.0).contains(&v) {
                let (x, y) = ((u * PANEL as f32) as usize, (v * PANEL as f32) as usize);
                self.rect(x0 + x.saturating_sub(1), y0 + y.saturating_sub(1), 2, 2, color);
            }
        }
    }
}

/// Rows of panels, each row with a label at its left, written as an RGB PNG.
pub fn scatter_grid(rows: &[(String, Vec<Panel>)], path: &Path) -> Result<(), Error> {
    let columns = rows.iter().map(|(_, panels)| panels.len()).max().unwrap_or(0);
    let width = LABEL + columns * (PANEL + MARGIN) + MARGIN;
    let height = rows.len() * (TITLE + PANEL + MARGIN) + MARGIN;
    let mut canvas = Canvas::new(width, height);
    for (r, (label, panels)) in rows.iter().enumerate() {
        let y0 = MARGIN + r * (TITLE + PANEL + MARGIN);
        canvas.text(6, y0 + TITLE + PANEL / 2 - 7, label, 2, [30, 30, 30]);
        for (c, panel) in panels.iter().enumerate() {
            let x0 = LABEL + MARGIN + c * (PANEL + MARGIN);
            canvas.text(x0 + 2, y0 + 4, &panel.title, 2, [30, 30, 30]);
            let top = y0 + TITLE;
            canvas.rect(x0, top, PANEL, PANEL, [246, 246, 246]);
            canvas.rect(x0, top + PANEL / 2, PANEL, 1, [225, 225, 225]);
            canvas.rect(x0 + PANEL / 2, top, 1, PANEL, [225, 225, 225]);
            canvas.scatter(x0, top, &panel.background, [200, 200, 200]);
            canvas.scatter(x0, top, &panel.points, panel.color);
        }
    }
    write_png(path, canvas.width, canvas.height, &canvas.rgb)
}

/// Rows of images, each row with a label at its left, written as an RGB PNG. Each row holds
/// `values.len() / (channels * side^2)` images (C x side x side, in [-1, 1]), drawn `zoom`x.
pub fn image_grid(rows: &[(String, Vec<f32>)], channels: usize, side: usize, zoom: usize, path: &Path) -> Result<(), Error> {
    let per_image = channels * side * side;
    let columns = rows.iter().map(|(_, v)| v.len() / per_image).max().unwrap_or(0);
    let cell = side * zoom + 2;
    let label = 16 + 6 * 2 * rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
    let mut canvas = Canvas::new(label + columns * cell + MARGIN, rows.len() * cell + 2 * MARGIN);
    for (r, (text, values)) in rows.iter().enumerate() {
        let y0 = MARGIN + r * cell;
        canvas.text(8, y0 + cell / 2 - 7, text, 2, [30, 30, 30]);
        for (c, image) in values.chunks_exact(per_image).enumerate() {
            let x0 = label + c * cell;
            for y in 0..side * zoom {
                for x in 0..side * zoom {
                    let at = |ch: usize| image[(ch * side + y / zoom) * side + x / zoom];
                    let byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                    let rgb = if channels == 3 { [byte(at(0)), byte(at(1)), byte(at(2))] } else { [byte(at(0)); 3] };
                    canvas.put(x0 + 1 + x, y0 + 1 + y, rgb);
                }
            }
        }
    }
    write_png(path, canvas.width, canvas.height, &canvas.rgb)
}

fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| Error::new(format!("cannot write {}: {e}", path.display()));
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    crate::io::write_atomic(path, &bytes)
}

/// Rows of a 5x7 glyph, most significant of the low 5 bits leftmost; lowercase is drawn as uppercase.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0; 7],
    }
}
