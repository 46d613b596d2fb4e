//! `paperhook-api admin ...`: operator commands that print JSON.

use clap::Subcommand;
use paperhook_core::config::Config;
use paperhook_core::crypto::Keyring;
use paperhook_core::db::accounts;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account with an opening credit grant and a first API key.
    CreateAccount {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        credits: i64,
    },
    /// List accounts (newest first) with their credits and API key prefixes.
    ListAccounts {
        /// Only accounts whose name contains this text (any case).
        #[arg(long)]
        name: Option<String>,
        /// At most this many accounts.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Create another API key for an account (shown once).
    CreateKey {
        #[arg(long)]
        account: Uuid,
    },
    /// Add credits to an account's balance (recorded in its ledger).
    AddCredits {
        #[arg(long)]
        account: Uuid,
        #[arg(long)]
        credits: i64,
    },
    /// Revoke the API key with this prefix (the `ph_xxxxxxx` part).
    RevokeKey {
        #[arg(long)]
        key_prefix: String,
    },
    /// Print a new encryption key for PAPERHOOK_ENCRYPTION_KEYS.
    GenKey {
        /// Key id (0-255); use a new id when rotating.
        #[arg(long, default_value_t = 0)]
        id: u8,
    },
    /// Re-encrypt every webhook secret and header set with the first configured key.
    Reencrypt,
}

/// `admin gen-key`: a new encryption key, made without the database.
pub fn gen_key(id: u8) -> serde_json::Value {
    json!({"encryption_key": Keyring::generate_spec(id)})
}

/// Runs one admin command and returns what to print.
pub async fn run(
    cmd: AdminCommand,
    pool: &PgPool,
    keyring: Option<&Keyring>,
    config: &Config,
) -> anyhow::Result<serde_json::Value> {
    Ok(match cmd {
        AdminCommand::CreateAccount { name, credits } => {
            anyhow::ensure!(credits >= 0, "--credits must not be negative");
            let name = name.trim();
            anyhow::ensure!(
                (1..=200).contains(&name.chars().count()),
                "--name must be 1-200 characters"
            );
            let (account, key) = accounts::create(pool, name, credits).await?;
            json!({"account_id": account.id, "api_key": key.key, "key_prefix": key.prefix, "credits": account.credits})
        }
        AdminCommand::ListAccounts { name, limit } => {
            anyhow::ensure!(limit > 0, "--limit must be positive");
            let mut out = Vec::new();
            for account in accounts::list(pool, name.as_deref().map(str::trim), limit).await? {
                let keys = accounts::list_keys(pool, account.id).await?;
                out.push(json!({
                    "account_id": account.id,
                    "name": account.name,
                    "credits": account.credits,
                    "created_at": account.created_at,
                    "keys": keys.iter().map(|k| json!({
                        "key_prefix": k.prefix,
                        "created_at": k.created_at,
                        "last_used_at": k.last_used_at,
                        "revoked_at": k.revoked_at,
                    })).collect::<Vec<_>>(),
                }));
            }
            json!({"accounts": out})
        }
        AdminCommand::CreateKey { account } => {
            let max = config.max_api_keys_per_account;
            let key = match accounts::create_key(pool, account, max).await? {
                accounts::CreatedKey::Created(key) => key,
                accounts::CreatedKey::NoAccount => anyhow::bail!("no account {account}"),
                accounts::CreatedKey::TooMany { max } => {
                    anyhow::bail!("{}", crate::routes::keys::too_many_keys(max).message)
                }
            };
            json!({"account_id": account, "api_key": key.key, "key_prefix": key.prefix})
        }
        AdminCommand::AddCredits { account, credits } => {
            anyhow::ensure!(credits > 0, "--credits must be positive");
            let mut tx = pool.begin().await?;
            let updated = accounts::add_credits(&mut tx, account, credits)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account {account}"))?;
            tx.commit().await?;
            json!({"account_id": account, "credits": updated.credits})
        }
        AdminCommand::RevokeKey { key_prefix } => {
            let account = accounts::revoke_key(pool, key_prefix.trim(), None)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no API key with prefix {key_prefix:?}"))?;
            json!({"key_prefix": key_prefix, "account_id": account, "revoked": true})
        }
        AdminCommand::GenKey { id } => gen_key(id),
        AdminCommand::Reencrypt => {
            let keyring =
                keyring.ok_or_else(|| anyhow::anyhow!("encryption_keys is not configured"))?;
            json!({"reencrypted": reencrypt(pool, keyring).await?})
        }
    })
}

async fn reencrypt(pool: &PgPool, keyring: &Keyring) -> anyhow::Result<u64> {
    type Row = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM templates ORDER BY id")
        .fetch_all(pool)
        .await?;
    use paperhook_core::crypto::{WEBHOOK_HEADERS, WEBHOOK_SECRET, context};
    let mut count = 0;
    for id in ids {
        let (headers_ctx, secret_ctx) = (context(id, WEBHOOK_HEADERS), context(id, WEBHOOK_SECRET));
        // Each row read under its lock and written in the same transaction:
        // the API keeps serving during a rotation, and a secret rotated or
        // headers changed meanwhile must not be overwritten by what was
        // read before.
        let mut tx = pool.begin().await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT webhook_secret_enc, webhook_headers_enc, webhook_previous_secret_enc
             FROM templates WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((secret, headers, previous)) = row else {
            continue;
        };
        let stale = [
            (Some(&secret), &secret_ctx),
            (headers.as_ref(), &headers_ctx),
            (previous.as_ref(), &secret_ctx),
        ]
        .into_iter()
        .any(|(enc, ctx)| enc.is_some_and(|enc| keyring.needs_reencrypt(enc, ctx)));
        if !stale {
            continue;
        }
        // A secret that no key opens stops the run here, saying which
        // template and how far it got (the rows before it are done).
        let unreadable = |e: anyhow::Error| {
            anyhow::anyhow!(
                "template {id}: {e:#}; {count} template(s) re-encrypted before it (run again once \
                 PAPERHOOK_ENCRYPTION_KEYS holds the key it was written with)"
            )
        };
        // With the current key, sealed to the template as `secret_sealing`
        // says (sealed when on or strict, unsealed when off).
        let again =
            |enc: &[u8], ctx: &[u8]| keyring.reseal(enc, ctx).map_err(|e| unreadable(e.into()));
        let secret = again(&secret, &secret_ctx)?;
        let headers = headers.map(|h| again(&h, &headers_ctx)).transpose()?;
        let previous = previous.map(|p| again(&p, &secret_ctx)).transpose()?;
        sqlx::query(
            "UPDATE templates SET webhook_secret_enc = $2, webhook_headers_enc = $3,
                    webhook_previous_secret_enc = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(secret)
        .bind(headers)
        .bind(previous)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        count += 1;
    }
    Ok(count)
}
