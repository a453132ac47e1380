//! The `meshrelay` binary: parse the command line and hand over to `cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = meshrelay::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(meshrelay::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshrelay: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
