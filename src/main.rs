//! The `redkit` server binary: parses the command line and calls [`redkit::run`].

use std::process::ExitCode;

use clap::Parser;
use redkit::config::{Cli, Command, Config};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // One line: clap's first line names the option and the problem.
            let text = err.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid command line")
            );
            return ExitCode::from(2);
        }
    };
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    redkit::init_tracing(args.log_format);
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = actix_web::rt::System::new().block_on(redkit::run(config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
