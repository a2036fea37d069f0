//! ds01ctl: the admin's tool for ds01-runtime.

use clap::Parser;

/// Admin tool for ds01-runtime.
#[derive(Parser)]
#[command(name = "ds01ctl", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
