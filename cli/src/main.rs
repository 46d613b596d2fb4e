//! `paperhook`: the command-line client of the Paperhook API. It speaks only
//! the public HTTP API (the same as any customer's code): log in, manage
//! templates, submit folders of documents with progress and resumable
//! idempotency keys, follow jobs, fetch results, and receive and verify
//! webhooks locally.

mod args;
mod client;
mod commands;
mod config;
mod output;
mod submit;
mod webhooks;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::Out;

/// Exit codes: 0 ok, 1 an error, 2 a usage error (clap), 3 the command ran
/// but some documents (or webhook checks) failed, 130 interrupted.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_FAILED_DOCUMENTS: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error for people: what went wrong, and what to try.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
    pub exit: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
            exit: EXIT_ERROR,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit(mut self, code: u8) -> CliError {
        self.exit = code;
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::new(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&CliError::new(format!("starting the runtime: {e}")));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(run(cli, &out));
    // Background tasks (a listener, requests in flight) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            out.error(&err);
            ExitCode::from(err.exit)
        }
    }
}

async fn run(cli: Cli, out: &Out) -> Result<u8> {
    match cli.command {
        Command::Login(a) => commands::login(a, out).await,
        Command::Logout => commands::logout(out),
        Command::Whoami => commands::whoami(out).await,
        Command::Templates(t) => commands::templates(t.command, out).await,
        Command::Submit(a) => submit::run(a, out).await,
        Command::Status(a) => commands::status(a, out).await,
        Command::Results(a) => commands::results(a, out).await,
        Command::Webhooks(w) => webhooks::run(w.command, out).await,
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "paperhook", &mut std::io::stdout());
            Ok(0)
        }
    }
}
