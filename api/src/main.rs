//! `paperhook-api`: serves the HTTP API; `migrate` and `admin` for operators.

use anyhow::Context;
use clap::{Parser, Subcommand};
use paperhook_api::admin::{self, AdminCommand};
use paperhook_core::config::Config;

#[derive(Parser)]
#[command(
    name = "paperhook-api",
    version,
    about = "Paperhook HTTP API and admin commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Operator commands; each prints JSON.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load()?;
    paperhook_core::config::init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            config.validate()?;
            paperhook_api::serve::run(config).await
        }
        Command::Migrate => {
            let pool = paperhook_core::db::pool(&config)?;
            // Strict, unlike start-up: refuses a database a newer version migrated.
            paperhook_core::db::migrate_strict(&pool).await?;
            println!("{}", serde_json::json!({"migrated": true}));
            Ok(())
        }
        // Made before anything runs (the compose file's first step): no
        // database needed.
        Command::Admin {
            command: AdminCommand::GenKey { id },
        } => {
            println!("{}", admin::gen_key(id));
            Ok(())
        }
        Command::Admin { command } => {
            // Only reencrypt needs the keys: it says why they are unusable
            // (bad base64, a wrong length, an id twice), not that none are set.
            let keyring = config.keyring();
            if let (AdminCommand::Reencrypt, Err(e)) = (&command, &keyring) {
                anyhow::bail!("{e}");
            }
            let keyring = keyring.ok();
            let pool = paperhook_core::db::pool(&config)?;
            if config.migrate_on_start {
                paperhook_core::db::migrate(&pool)
                    .await
                    .context("migrating the database")?;
            }
            let out = admin::run(command, &pool, keyring.as_ref(), &config).await?;
            println!("{out}");
            Ok(())
        }
    }
}
