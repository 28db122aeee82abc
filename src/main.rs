//! The `redkit` server binary: parses the command line and calls [`redkit::run`].

use std::process::ExitCode;

use clap::Parser;
use redkit::config::{Cli, Command, Config, UserCommand};

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
        Some(Command::Serve(args)) => *args,
        Some(Command::User(UserCommand::Add(args))) => return user_add(&args),
        Some(_) => return ExitCode::FAILURE,
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

/// `redkit user add`: the same checks and hashing as `POST /auth/register`, for operators.
fn user_add(args: &redkit::config::UserAddArgs) -> ExitCode {
    let mut password = String::new();
    if std::io::stdin().read_line(&mut password).is_err() {
        eprintln!("error: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    let created = redkit::config::parse_database_url(&args.database_url)
        .map_err(|e| e.to_string())
        .and_then(|location| {
            let conn = redkit::auth::users::open(&location).map_err(|e| e.to_string())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            redkit::auth::users::create(&conn, &args.username, &args.email, password, now).map_err(
                |e| match e {
                    redkit::auth::AuthError::UsernameTaken => "username already taken".to_owned(),
                    other => other.to_string(),
                },
            )
        });
    match created {
        Ok(user) => {
            println!("created user {} (id {})", user.username, user.id);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
