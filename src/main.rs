//! `imm`: train and compare few-step generative models. With no arguments it runs the demo.

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    imm::cli::main()
}

/// glibc hands freed blocks over 128 KB back to the kernel, so on the CPU every step's activations
/// were faulted in and zeroed by it again (5-10% of a `mnist-tiny` step); keep them in the process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator thresholds; no other thread has started yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
