//! What every run directory shares: output checks, JSON files, writes that a crash cannot leave
//! half done, the saved training states, and the progress bar with its metrics.jsonl.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::Error;
pub(crate) use crate::io::write_atomic;
use crate::method::Method;
use crate::networks::Network;
use crate::training::trainer::{Metrics, Observer, Trainer};

pub(crate) fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot write {}: {e}", path.display()))
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_error(path, e))?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// What an interrupted session leaves behind, for a run that goes on from `nimg` images: removes
/// the temporary `.partial` files and directories of writes it did not finish, and the metrics
/// records past `nimg` (and a last line cut short), so that the run writes them again.
pub(crate) fn tidy_interrupted(out: &Path, nimg: u64) -> Result<(), Error> {
    for dir in [out.to_path_buf(), out.join("samples"), out.join("snapshots"), out.join("checkpoints")] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "partial") {
                let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                removed.map_err(|e| io_error(&path, e))?;
            }
        }
    }
    let metrics = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap_or_default();
    let kept: String = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter(|line| serde_json::from_str::<Metrics>(line).is_ok_and(|m| m.nimg <= nimg))
        .collect();
    if kept != text {
        write_atomic(&metrics, kept.as_bytes())?;
    }
    Ok(())
}

/// Creates `dir` and checks that files can be written there.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::new(format!("cannot create output directory {}: {e}", dir.display())))?;
    let probe = dir.join(".write-test");
    File::create(&probe).map_err(|e| Error::new(format!("output directory {} is not writable: {e}", dir.display())))?;
    std::fs::remove_file(&probe).map_err(|e| io_error(&probe, e))
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
}

/// The newest `state-NIMG` directory under `dir`, if any.
pub(crate) fn latest_state(dir: &Path) -> Option<(u64, PathBuf)> {
    states(dir).into_iter().last()
}

/// Complete training states under `dir`, oldest first (temporary `.partial` ones are not listed).
pub(crate) fn states(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let nimg = name.strip_prefix("state-")?.parse::<u64>().ok()?;
            Some((nimg, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Progress bar, terminal lines and metrics.jsonl: what every run shows and keeps.
pub struct Terminal {
    bar: ProgressBar,
    metrics: File,
    metrics_path: PathBuf,
    label: &'static str,
}

impl Terminal {
    /// Appends to `metrics_path` (a resumed run continues its file).
    pub fn new(label: &'static str, total_nimg: u64, metrics_path: PathBuf) -> Result<Self, Error> {
        let bar = ProgressBar::new(total_nimg);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>4} [{bar:32}] {human_pos}/{human_len} img  {elapsed} < {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        let metrics = File::options()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| io_error(&metrics_path, e))?;
        Ok(Self { bar, metrics, metrics_path, label })
    }

    pub fn println(&self, line: &str) {
        // A hidden bar (output not a terminal) drops its println: logs still get the line.
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Terminal {
    fn on_chunk<N: Network, M: Method>(&mut self, trainer: &Trainer<N, M>) -> Result<(), Error> {
        self.bar.set_position(trainer.nimg);
        Ok(())
    }

    fn on_log(&mut self, record: &Metrics) -> Result<(), Error> {
        let mut line = format!(
            "{:>4}  nimg {:>9}  loss {:.5}  {:.3} s/kimg",
            self.label, record.nimg, record.loss, record.sec_per_kimg
        );
        if record.skipped > 0 {
            line += &format!("  {} step{} skipped (not finite)", record.skipped, if record.skipped == 1 { "" } else { "s" });
        }
        self.println(&line);
        let line = serde_json::to_string(record).expect("metrics serialise");
        writeln!(self.metrics, "{line}").map_err(|e| io_error(&self.metrics_path, e))
    }
}

