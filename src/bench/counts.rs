//! What one step costs a cubecl device (wgpu, CUDA), counted by the runtime itself: kernel launches
//! (cubecl's launch observer, called on the thread that issues each launch) and buffer
//! reservations (cubecl's memory logger at its `full` level, read through the `log` crate).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, TypeNameFormatLevel, type_name_format};
use burn::tensor::Device;
use cubecl_runtime::logging::{LaunchObservation, LaunchObserver};
use serde::Serialize;

use crate::Error;

/// Reservations and their bytes since the process started, as the memory logger reported them.
static RESERVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Receives cubecl's memory log lines and adds up the reservations they report.
struct MemoryLog;

impl log::Log for MemoryLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == "cubecl::memory"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata())
            && let Some(bytes) = reserved_bytes(&record.args().to_string())
        {
            RESERVED[0].fetch_add(1, Ordering::Relaxed);
            RESERVED[1].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// The bytes of one "Reserved memory ..." line of cubecl's memory logger: an exact count from the
/// persistent pool ("Reserved memory 4096 using persistent memory"), three significant digits from
/// the dynamic pools ("Reserved memory 1.23 MB using dynamic pool"). `None` for its other lines.
pub fn reserved_bytes(line: &str) -> Option<u64> {
    let rest = &line[line.find("Reserved memory ")? + "Reserved memory ".len()..];
    let mut words = rest.split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    let scale = match words.next()? {
        "using" => 1.0,
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((number * scale).round() as u64)
}

/// Turns on the counting. Must run before the first device starts: cubecl reads its configuration
/// once, when a device's runtime is created. The rest of the configuration is cubecl's own (a
/// `cubecl.toml`, `CUBECL_*` variables such as `CUBECL_AUTOTUNE_LEVEL`).
pub fn install() -> Result<(), Error> {
    let bad = |e: serde_json::Error| Error::new(format!("cubecl's configuration: {e}"));
    // Edited in its serialised form: the logger's level types are not exported by cubecl.
    let mut config = serde_json::to_value(CubeClRuntimeConfig::from_current_dir().override_from_env()).map_err(bad)?;
    config["memory"]["logger"] = serde_json::json!({ "level": "full", "log": "info" });
    let config: CubeClRuntimeConfig = serde_json::from_value(config).map_err(bad)?;
    if !CubeClRuntimeConfig::try_set(config) {
        return Err(Error::new("cubecl's configuration was already loaded: the counts must be set up before any device starts"));
    }
    log::set_logger(&MemoryLog).map_err(|_| Error::new("another logger is installed: the memory counts need the `log` crate's slot"))?;
    log::set_max_level(log::LevelFilter::Info);
    Ok(())
}

#[derive(Default)]
struct Launches(Mutex<BTreeMap<&'static str, u64>>);

impl LaunchObserver for Launches {
    fn launched(&self, kernel: &'static str) {
        *self.0.lock().expect("the launch counts' lock").entry(kernel).or_default() += 1;
    }
}

/// What one run of some work cost the device.
#[derive(Clone, Debug, Serialize)]
pub struct Counts {
    pub launches: u64,
    /// Distinct kernels among the launches.
    pub kernels: usize,
    /// Buffers reserved from cubecl's memory pools.
    pub buffers: u64,
    pub buffer_bytes: u64,
    /// Launches per kernel, most launched first, by a short name: the kernel and its first generic
    /// argument.
    pub by_kernel: Vec<(String, u64)>,
}

fn reserved() -> [u64; 2] {
    [RESERVED[0].load(Ordering::Relaxed), RESERVED[1].load(Ordering::Relaxed)]
}

/// Waits until the memory logger's thread has delivered every line sent so far (no new line for
/// a quarter of a second; at most five seconds).
fn settle() -> [u64; 2] {
    let start = Instant::now();
    let mut last = reserved();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(250) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(25));
        let now = reserved();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Counts what `run` launches and reserves on `device`, its work drained before and after.
pub fn count(device: &Device, run: impl FnOnce() -> Result<(), Error>) -> Result<Counts, Error> {
    let sync = |device: &Device| device.sync().map_err(|e| Error::new(format!("device error: {e}")));
    sync(device)?;
    let before = settle();
    let launches = Arc::new(Launches::default());
    {
        let _watch = LaunchObservation::new(launches.clone());
        run()?;
        sync(device)?;
    }
    let after = settle();
    let launches = launches.0.lock().expect("the launch counts' lock").clone();
    // cubecl's balanced names, cut after the first generic argument (the operation of an
    // elementwise kernel), since a matmul's run to hundreds of characters.
    let short = |name: &str| type_name_format(name, TypeNameFormatLevel::Balanced).splitn(3, " | ").take(2).collect::<Vec<_>>().join(" | ");
    let mut by_name = BTreeMap::<String, u64>::new();
    for (name, n) in &launches {
        *by_name.entry(short(name)).or_default() += n;
    }
    let mut by_kernel: Vec<(String, u64)> = by_name.into_iter().collect();
    by_kernel.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Counts {
        launches: launches.values().sum(),
        kernels: launches.len(),
        buffers: after[0] - before[0],
        buffer_bytes: after[1] - before[1],
        by_kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::reserved_bytes;

    #[test]
    fn reads_the_memory_loggers_reservations() {
        assert_eq!(reserved_bytes("[wgpu] Reserved memory 4096 using persistent memory"), Some(4096));
        assert_eq!(reserved_bytes("[wgpu] Reserved memory 1.23 MB using dynamic pool"), Some(1_230_000));
        assert_eq!(reserved_bytes("[wgpu] Reserved memory 512 B using dynamic pool"), Some(512));
        assert_eq!(reserved_bytes("[wgpu], Allocated a new memory page, current usage: ..."), None);
    }
}
