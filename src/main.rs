//! `imm`: train and compare few-step generative models. With no arguments it runs the demo.

fn main() -> std::process::ExitCode {
    imm::cli::main()
}
