//! Layered configuration: embedded defaults, then a TOML file, then
//! `PAPERHOOK_*` environment variables. Validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::crypto::Keyring;

/// The documented defaults; every key is listed there.
pub const DEFAULTS: &str = include_str!("../config.default.toml");

/// The largest `inline_document_max_bytes`: a document kept in the
/// database travels whole in one statement and in the write-ahead log.
pub const INLINE_DOCUMENT_MAX: u64 = 16 * 1024 * 1024;

/// The most the documents of one batched submission insert may hold
/// together (`inline_document_max_bytes` x `submission_batch_max_rows`).
pub const INLINE_BATCH_MAX: u64 = 256 * 1024 * 1024;

/// The deepest `max_static_values_depth`: serde_json stops parsing at 128
/// levels, and a JSON body holds `static_values` a level below its own.
pub const STATIC_VALUES_MAX_DEPTH: u32 = 126;

/// The largest `submission_memory_bytes`: the API counts upload memory in
/// KiB, in a 32-bit number (just under 4 TiB).
pub const SUBMISSION_MEMORY_MAX: u64 = (u32::MAX as u64 + 1) * 1024 - 1;

/// The largest `max_result_bytes`: under PostgreSQL's jsonb limit of
/// 255 MiB, with room for the webhook payload around the result.
pub const MAX_RESULT_BYTES: u64 = 200 * 1024 * 1024;

/// The most rows a batched insert, or keys a batched key check, takes:
/// its batcher holds room for a whole batch.
pub const MAX_BATCH: u32 = 10_000;

/// The directives of `log_level`, without the spaces around them (which
/// `tracing`'s filter would take into the target name).
fn log_directives(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect()
}

/// `log_level` as `tracing`'s filter reads it: directives separated by
/// commas, each a level or `target=level`. A misspelt level (`warning`)
/// would be read as a target name and silence every log; so would a
/// target alone, which is refused too (write `target=trace`).
fn check_log_level(value: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 12] = [
        "trace", "debug", "info", "warn", "error", "off", "0", "1", "2", "3", "4", "5",
    ];
    let directives = log_directives(value);
    if directives.is_empty() {
        return Err(invalid("log_level", "is empty: give a level such as info"));
    }
    for directive in directives {
        if directive.contains('[') {
            continue; // a span filter: tracing's own syntax, left to it
        }
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "log_level",
                format!(
                    "{directive:?} is not a level or target=level (levels: {})",
                    LEVELS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: SecretString,
    pub db_max_connections: u32,
    pub db_acquire_timeout_secs: u64,
    pub db_idle_in_transaction_timeout_secs: u64,
    pub db_keepalive_secs: u64,
    pub submission_batch_max_rows: u32,
    pub submission_batch_statements: u32,
    pub auth_batch_max_keys: u32,
    pub auth_batch_statements: u32,
    pub migrate_on_start: bool,
    pub api_addr: String,
    pub public_url: String,
    pub storage_url: String,
    pub storage_fsync: bool,
    pub inline_document_max_bytes: u64,
    pub s3_region: String,
    pub s3_endpoint: String,
    pub s3_force_path_style: bool,
    pub s3_connect_timeout_secs: u64,
    pub s3_read_timeout_secs: u64,
    pub s3_upload_min_bytes_per_sec: u64,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: SecretString,
    pub max_upload_bytes: u64,
    pub max_json_bytes: u64,
    pub max_static_values_bytes: u64,
    pub max_static_values_depth: u32,
    pub idempotency_ttl_secs: u64,
    pub result_retention_secs: u64,
    pub encryption_keys: SecretString,
    pub session_ttl_secs: u64,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub metrics_addr: String,
    pub log_format: String,
    pub secret_sealing: String,
    pub log_level: String,
    pub worker_concurrency: u32,
    pub worker_delivery_concurrency: u32,
    pub worker_keep_page_buffers: bool,
    pub worker_lease_secs: u64,
    pub worker_poll_ms: u64,
    pub worker_shutdown_grace_secs: u64,
    pub worker_task_time_limit_secs: u64,
    pub task_max_attempts: u32,
    pub task_retry_max_delay_secs: u64,
    pub preview_max_concurrent: u32,
    pub preview_max_pages: u32,
    pub preview_dpi: u32,
    pub webhook_test_max_concurrent: u32,
    pub max_api_keys_per_account: u32,
    pub api_shutdown_grace_secs: u64,
    pub submission_memory_bytes: u64,
    pub submission_memory_per_account_bytes: u64,
    pub submission_read_timeout_secs: u64,
    pub max_pages: u32,
    pub max_pixels_per_page: u64,
    pub max_image_side: u32,
    pub max_page_overdraw: u32,
    pub max_text_glyphs: u64,
    pub max_drawing_operations: u64,
    pub max_text_bytes: u64,
    pub max_pdf_stream_bytes: u64,
    pub max_pdf_objects: u64,
    pub max_result_bytes: u64,
    pub max_field_matches: usize,
    pub max_replace_growth_bytes: usize,
    pub max_render_dpi: u32,
    pub render_dpi: u32,
    pub page_time_limit_secs: u64,
    pub document_time_limit_secs: u64,
    pub zip_max_entries: u32,
    pub zip_max_total_bytes: u64,
    pub zip_max_entry_bytes: u64,
    pub zip_max_ratio: u32,
    pub webhook_timeout_secs: u64,
    pub webhook_retry_schedule: String,
    pub webhook_allow_cidrs: String,
    pub webhook_max_headers: usize,
    pub webhook_max_header_bytes: usize,
    pub template_max_fields: usize,
    pub janitor_interval_secs: u64,
    pub janitor_step_timeout_secs: u64,
    pub janitor_batch: i64,
    pub orphan_file_grace_secs: u64,
    pub webhook_attempts_retention_secs: u64,
    pub tasks_retention_secs: u64,
}

/// Where uploaded files live, parsed from `storage_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// The longest of the settings the database server applies in
/// milliseconds (a 32-bit integer there): about 24 days.
const MAX_SERVER_TIMEOUT_SECS: u64 = i32::MAX as u64 / 1000;

/// The longest duration a `*_secs` setting takes: 100 years.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 24 * 3600;

/// Every key of a configuration file must be a setting: a misspelt one
/// would leave its setting at the default without a word. (The
/// environment cannot be held to this: other PAPERHOOK_ variables, the
/// CLI's and the tests', share it.)
fn check_file_keys(path: &std::path::Path) -> Result<(), ConfigError> {
    let known = setting_keys(&Toml::string(DEFAULTS))?;
    let unknown: Vec<String> = setting_keys(&Toml::file_exact(path))?
        .into_iter()
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(invalid(
        "PAPERHOOK_CONFIG",
        format!(
            "{} has settings that do not exist: {} (every setting is in core/config.default.toml)",
            path.display(),
            unknown.join(", ")
        ),
    ))
}

/// PAPERHOOK_ variables that are not settings: the CLI's, the scripts' and
/// the tests'.
const OTHER_VARIABLES: [&str; 8] = [
    "CONFIG",
    "API_KEY",
    "URL",
    "CLI_CONFIG",
    "PROFILE",
    "STATE_DIR",
    "S3_SECRET",
    "WEBHOOK_SECRET",
];
const OTHER_PREFIXES: [&str; 3] = ["TEST_", "E2E_", "LOG_SCAN_"];

/// The names of PAPERHOOK_ environment variables that are no setting (a
/// misspelt one would leave its setting at the default without a word):
/// logged as a warning at start-up, not refused, since the CLI's and the
/// scripts' variables share the prefix.
pub fn unknown_env_vars() -> Vec<String> {
    let Ok(known) = setting_keys(&Toml::string(DEFAULTS)) else {
        return Vec::new();
    };
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.strip_prefix("PAPERHOOK_").is_some_and(|rest| {
                !known.contains(&rest.to_lowercase())
                    && !OTHER_VARIABLES.contains(&rest)
                    && !OTHER_PREFIXES.iter().any(|p| rest.starts_with(p))
                    && !kubernetes_service_variable(rest)
            })
        })
        .collect();
    unknown.sort();
    unknown
}

/// What Kubernetes sets in every pod for each service of its namespace
/// (`paperhook-api`: `PAPERHOOK_API_SERVICE_HOST`, `PAPERHOOK_API_PORT`,
/// `PAPERHOOK_API_PORT_80_TCP_ADDR`, ...), unless `enableServiceLinks` is
/// false: no setting has these shapes.
fn kubernetes_service_variable(name: &str) -> bool {
    if name.contains("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT") {
        return true;
    }
    // ..._PORT_<number>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]
    name.split("_PORT_").nth(1).is_some_and(|rest| {
        let mut parts = rest.split('_');
        parts.next().is_some_and(|n| n.parse::<u16>().is_ok())
            && parts
                .next()
                .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"))
    })
}

fn setting_keys(provider: &dyn figment::Provider) -> Result<Vec<String>, ConfigError> {
    let data = provider
        .data()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    Ok(data
        .into_values()
        .flat_map(|dict| dict.into_keys())
        .collect())
}

/// The settings that are text, whatever their value looks like.
const TEXT_KEYS: [&str; 14] = [
    "api_addr",
    "public_url",
    "storage_url",
    "s3_region",
    "s3_endpoint",
    "s3_access_key_id",
    "s3_secret_access_key",
    "encryption_keys",
    "metrics_addr",
    "webhook_retry_schedule",
    "webhook_allow_cidrs",
    "log_format",
    "log_level",
    "secret_sealing",
];

impl Config {
    /// Loads defaults, `PAPERHOOK_CONFIG` (or `./paperhook.toml` if present) and the environment.
    pub fn load() -> Result<Config, ConfigError> {
        let file = match std::env::var_os("PAPERHOOK_CONFIG").filter(|v| !v.is_empty()) {
            // A file named on purpose must be there: a typo would run the
            // process on defaults (local storage, for one) without a word.
            Some(named) => {
                let path = PathBuf::from(named);
                if !path.is_file() {
                    return Err(invalid(
                        "PAPERHOOK_CONFIG",
                        format!("{} is not a file", path.display()),
                    ));
                }
                Some(path)
            }
            None => Some(PathBuf::from("paperhook.toml")).filter(|p| p.is_file()),
        };
        if let Some(path) = &file {
            check_file_keys(path)?;
        }
        Self::figment(file)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Defaults only, overridden by the environment: for tests and tools.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::figment(None)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    fn figment(file: Option<PathBuf>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            // Exactly this file: `Toml::file` also searches every parent
            // folder for the name.
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            )
            // Only split-free names: PAPERHOOK_S3_REGION is the key s3_region.
            .merge(Env::prefixed("PAPERHOOK_").ignore(&["CONFIG"]));
        // figment types environment values: a secret of digits became a
        // number that no text setting takes (and the error showed it), a
        // leading 0 was lost. Text settings take the variable as written.
        for key in TEXT_KEYS {
            if let Ok(value) = std::env::var(format!("PAPERHOOK_{}", key.to_uppercase())) {
                // Quotes that an env file kept around the value go, as
                // figment took them off before.
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map_or(value.as_str(), |v| v)
                    .to_owned();
                figment = figment.merge(figment::providers::Serialized::default(key, value));
            }
        }
        figment
    }

    /// Checks every setting once, so a bad value fails at start-up with its name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.api_socket_addr()?;
        self.storage_location()?;
        if self.max_upload_bytes == 0 {
            return Err(invalid("max_upload_bytes", "must be greater than 0"));
        }
        if self.inline_document_max_bytes > INLINE_DOCUMENT_MAX {
            return Err(invalid(
                "inline_document_max_bytes",
                format!("must be at most {INLINE_DOCUMENT_MAX} (16 MiB)"),
            ));
        }
        // One batched insert carries up to this many documents in one
        // message; PostgreSQL refuses a message of 1 GiB.
        let batch_bytes = self
            .inline_document_max_bytes
            .saturating_mul(u64::from(self.submission_batch_max_rows));
        if batch_bytes > INLINE_BATCH_MAX {
            return Err(invalid(
                "inline_document_max_bytes",
                format!(
                    "times submission_batch_max_rows ({}) must be at most {INLINE_BATCH_MAX} \
                     (256 MiB): one batched insert carries that many documents",
                    self.submission_batch_max_rows
                ),
            ));
        }
        if self.db_max_connections == 0 {
            return Err(invalid("db_max_connections", "must be greater than 0"));
        }
        for (name, value) in [
            ("submission_batch_max_rows", self.submission_batch_max_rows),
            (
                "submission_batch_statements",
                self.submission_batch_statements,
            ),
            ("auth_batch_max_keys", self.auth_batch_max_keys),
            ("auth_batch_statements", self.auth_batch_statements),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        let statements = self
            .submission_batch_statements
            .saturating_add(self.auth_batch_statements);
        if statements >= self.db_max_connections {
            return Err(invalid(
                "db_max_connections",
                format!(
                    "must be greater than submission_batch_statements + auth_batch_statements ({statements}), \
                     to leave connections for the other statements"
                ),
            ));
        }
        // The batchers hold room for a whole batch from the start.
        for (name, value) in [
            ("submission_batch_max_rows", self.submission_batch_max_rows),
            ("auth_batch_max_keys", self.auth_batch_max_keys),
        ] {
            if value > MAX_BATCH {
                return Err(invalid(
                    name,
                    format!("must be at most {MAX_BATCH}, not {value}"),
                ));
            }
        }
        check_log_level(&self.log_level)?;
        self.sealing()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "log_format",
                format!("must be \"text\" or \"json\", not {:?}", self.log_format),
            ));
        }
        self.keyring()?;
        // PostgreSQL takes these in milliseconds, as a 32-bit integer.
        for (name, value) in [
            (
                "db_idle_in_transaction_timeout_secs",
                self.db_idle_in_transaction_timeout_secs,
            ),
            ("db_keepalive_secs", self.db_keepalive_secs),
        ] {
            if value > MAX_SERVER_TIMEOUT_SECS {
                return Err(invalid(
                    name,
                    format!("must be at most {MAX_SERVER_TIMEOUT_SECS} (24 days), not {value}"),
                ));
            }
        }
        if self.worker_lease_secs < 3 {
            return Err(invalid("worker_lease_secs", "must be at least 3"));
        }
        let at_least = self.longest_task_work().saturating_mul(2);
        if self.worker_task_time_limit_secs != 0 && self.worker_task_time_limit_secs < at_least {
            return Err(invalid(
                "worker_task_time_limit_secs",
                format!(
                    "must be 0 (twice the longest work) or at least twice \
                     document_time_limit_secs + page_time_limit_secs or webhook_timeout_secs \
                     ({at_least} s), not {}: tasks that are still working would be stopped",
                    self.worker_task_time_limit_secs
                ),
            ));
        }
        if self.max_pages == 0 || self.zip_max_entries == 0 || self.zip_max_ratio == 0 {
            return Err(invalid(
                "max_pages",
                "max_pages, zip_max_entries and zip_max_ratio must be greater than 0",
            ));
        }
        for (name, value) in [
            // 0 would expire every result, and every webhook not yet sent,
            // as its job finished.
            ("result_retention_secs", self.result_retention_secs),
            // 0 would run passes back to back, each listing the whole store.
            ("janitor_interval_secs", self.janitor_interval_secs),
            ("worker_concurrency", u64::from(self.worker_concurrency)),
            (
                "worker_delivery_concurrency",
                u64::from(self.worker_delivery_concurrency),
            ),
            ("max_pixels_per_page", self.max_pixels_per_page),
            ("max_image_side", u64::from(self.max_image_side)),
            ("max_page_overdraw", u64::from(self.max_page_overdraw)),
            ("max_text_glyphs", self.max_text_glyphs),
            ("max_drawing_operations", self.max_drawing_operations),
            ("max_text_bytes", self.max_text_bytes),
            ("max_pdf_stream_bytes", self.max_pdf_stream_bytes),
            ("max_pdf_objects", self.max_pdf_objects),
            ("max_result_bytes", self.max_result_bytes),
            // Every regex field with occurrence "all" would fail.
            ("max_field_matches", self.max_field_matches as u64),
            ("page_time_limit_secs", self.page_time_limit_secs),
            ("document_time_limit_secs", self.document_time_limit_secs),
            (
                "submission_read_timeout_secs",
                self.submission_read_timeout_secs,
            ),
            // Every attempt would time out before it was sent.
            ("webhook_timeout_secs", self.webhook_timeout_secs),
            // No connection could be opened or checked within 0 s.
            ("db_acquire_timeout_secs", self.db_acquire_timeout_secs),
            ("s3_connect_timeout_secs", self.s3_connect_timeout_secs),
            ("s3_read_timeout_secs", self.s3_read_timeout_secs),
            // An idle worker would ask the database for work without pause.
            ("worker_poll_ms", self.worker_poll_ms),
            // A session would end as it was made.
            ("session_ttl_secs", self.session_ttl_secs),
            ("max_json_bytes", self.max_json_bytes),
            ("zip_max_total_bytes", self.zip_max_total_bytes),
            ("zip_max_entry_bytes", self.zip_max_entry_bytes),
            (
                "preview_max_concurrent",
                u64::from(self.preview_max_concurrent),
            ),
            (
                "webhook_test_max_concurrent",
                u64::from(self.webhook_test_max_concurrent),
            ),
            ("preview_max_pages", u64::from(self.preview_max_pages)),
            // A task could never be claimed.
            ("task_max_attempts", u64::from(self.task_max_attempts)),
            // A failing task would be retried without pause.
            ("task_retry_max_delay_secs", self.task_retry_max_delay_secs),
            // No account could make a key.
            (
                "max_api_keys_per_account",
                u64::from(self.max_api_keys_per_account),
            ),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        // Durations are added to and taken from timestamps: past about a
        // century they would overflow them (and mean "for ever" anyway).
        for (name, value) in [
            ("db_acquire_timeout_secs", self.db_acquire_timeout_secs),
            ("s3_connect_timeout_secs", self.s3_connect_timeout_secs),
            ("s3_read_timeout_secs", self.s3_read_timeout_secs),
            ("idempotency_ttl_secs", self.idempotency_ttl_secs),
            ("result_retention_secs", self.result_retention_secs),
            ("session_ttl_secs", self.session_ttl_secs),
            ("worker_lease_secs", self.worker_lease_secs),
            (
                "worker_shutdown_grace_secs",
                self.worker_shutdown_grace_secs,
            ),
            ("api_shutdown_grace_secs", self.api_shutdown_grace_secs),
            ("page_time_limit_secs", self.page_time_limit_secs),
            ("document_time_limit_secs", self.document_time_limit_secs),
            (
                "worker_task_time_limit_secs",
                self.worker_task_time_limit_secs,
            ),
            ("webhook_timeout_secs", self.webhook_timeout_secs),
            (
                "submission_read_timeout_secs",
                self.submission_read_timeout_secs,
            ),
            ("janitor_interval_secs", self.janitor_interval_secs),
            ("janitor_step_timeout_secs", self.janitor_step_timeout_secs),
            ("orphan_file_grace_secs", self.orphan_file_grace_secs),
            (
                "webhook_attempts_retention_secs",
                self.webhook_attempts_retention_secs,
            ),
            ("tasks_retention_secs", self.tasks_retention_secs),
            ("task_retry_max_delay_secs", self.task_retry_max_delay_secs),
        ] {
            if value > MAX_DURATION_SECS {
                return Err(invalid(
                    name,
                    format!("must be at most {MAX_DURATION_SECS} (100 years), not {value}"),
                ));
            }
        }
        // A file stored for a submission has no job until the insert
        // commits, which may wait for a connection (db_acquire_timeout_secs)
        // first: the janitor must not take it for an orphan meanwhile.
        if self.orphan_file_grace_secs < 2 * self.db_acquire_timeout_secs {
            return Err(invalid(
                "orphan_file_grace_secs",
                format!(
                    "must be at least twice db_acquire_timeout_secs ({} s), not {}: a file younger may \
                     belong to a submission whose job is still being inserted",
                    2 * self.db_acquire_timeout_secs,
                    self.orphan_file_grace_secs
                ),
            ));
        }
        if self.s3_upload_min_bytes_per_sec == 0 {
            return Err(invalid(
                "s3_upload_min_bytes_per_sec",
                "must be greater than 0 (an upload given no time at all would never finish)",
            ));
        }
        if !(72..=600).contains(&self.render_dpi) {
            return Err(invalid(
                "render_dpi",
                format!("must be between 72 and 600, not {}", self.render_dpi),
            ));
        }
        if !(72..=600).contains(&self.max_render_dpi) || self.max_render_dpi < self.render_dpi {
            return Err(invalid(
                "max_render_dpi",
                format!(
                    "must be between 72 and 600 and at least render_dpi ({}), not {}",
                    self.render_dpi, self.max_render_dpi
                ),
            ));
        }
        if !(72..=600).contains(&self.preview_dpi) {
            return Err(invalid(
                "preview_dpi",
                format!("must be between 72 and 600, not {}", self.preview_dpi),
            ));
        }
        // serde_json stops parsing at 128 levels, and a JSON body holds
        // static_values a level down: a higher limit could never be reached.
        if !(1..=STATIC_VALUES_MAX_DEPTH).contains(&self.max_static_values_depth) {
            return Err(invalid(
                "max_static_values_depth",
                format!(
                    "must be between 1 and {STATIC_VALUES_MAX_DEPTH}, not {}",
                    self.max_static_values_depth
                ),
            ));
        }
        // `{}`, the smallest object, is 2 bytes.
        if self.max_static_values_bytes < 2 {
            return Err(invalid(
                "max_static_values_bytes",
                format!(
                    "must be at least 2 (the size of {{}}), not {}",
                    self.max_static_values_bytes
                ),
            ));
        }
        // The API counts upload memory in KiB, in a 32-bit number.
        if self.submission_memory_bytes > SUBMISSION_MEMORY_MAX {
            return Err(invalid(
                "submission_memory_bytes",
                format!(
                    "must be less than 4 TiB ({}), not {}",
                    SUBMISSION_MEMORY_MAX + 1,
                    self.submission_memory_bytes
                ),
            ));
        }
        if self.template_max_fields == 0 {
            return Err(invalid("template_max_fields", "must be greater than 0"));
        }
        if self.janitor_step_timeout_secs == 0 {
            return Err(invalid(
                "janitor_step_timeout_secs",
                "must be greater than 0",
            ));
        }
        if self.janitor_batch <= 0 {
            return Err(invalid("janitor_batch", "must be greater than 0"));
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            return Err(invalid(
                "rate_limit_burst",
                "must be at least 1 when rate_limit_per_sec is set (0 turns the limit off)",
            ));
        }
        // The tasks table keeps it in a 32-bit integer.
        if self.task_max_attempts > i32::MAX as u32 {
            return Err(invalid(
                "task_max_attempts",
                format!(
                    "must be at most {}, not {}",
                    i32::MAX,
                    self.task_max_attempts
                ),
            ));
        }
        // A document whose page timed out is tried once more before it
        // fails `timeout` (the machine may have been busy): two claims.
        if self.task_max_attempts < 2 {
            return Err(invalid(
                "task_max_attempts",
                "must be at least 2: a document whose page timed out is tried once more",
            ));
        }
        // Results and webhook payloads are stored as jsonb, which holds
        // at most 255 MiB: a larger result could never be stored, and its
        // document would be extracted again on every claim.
        if self.max_result_bytes > MAX_RESULT_BYTES {
            return Err(invalid(
                "max_result_bytes",
                format!(
                    "must be at most {MAX_RESULT_BYTES} (200 MiB): results are stored as jsonb"
                ),
            ));
        }
        // A delivery is sent once and once per retry, each a claim of its
        // task: a schedule longer than the task's claims would be cut short
        // (the delivery failed `gave_up`) without a word.
        let retries = self.webhook_schedule()?.len() as u64;
        if retries + 1 > u64::from(self.task_max_attempts) {
            return Err(invalid(
                "webhook_retry_schedule",
                format!(
                    "lists {retries} retries: a webhook is sent up to {} times, each a claim of \
                     its task, which task_max_attempts ({}) does not allow; raise \
                     task_max_attempts to at least {} (a few more leave room for workers that \
                     stop while holding it) or shorten the schedule",
                    retries + 1,
                    self.task_max_attempts,
                    retries + 1
                ),
            ));
        }
        self.webhook_allow_list()?;
        Ok(())
    }

    /// The delays between webhook attempts, from `webhook_retry_schedule`.
    pub fn webhook_schedule(&self) -> Result<Vec<Duration>, ConfigError> {
        crate::webhook::parse_schedule(&self.webhook_retry_schedule)
            .map_err(|m| invalid("webhook_retry_schedule", m))
    }

    /// Private networks webhooks may reach, from `webhook_allow_cidrs`.
    pub fn webhook_allow_list(&self) -> Result<Vec<crate::webhook::Cidr>, ConfigError> {
        crate::webhook::parse_cidrs(&self.webhook_allow_cidrs)
            .map_err(|m| invalid("webhook_allow_cidrs", m))
    }

    /// The extraction limits of `max_pages`, `max_pixels_per_page`,
    /// `max_image_side`, `max_page_overdraw`, `max_text_glyphs`,
    /// `max_drawing_operations`, `max_text_bytes`, `max_pdf_stream_bytes`,
    /// `max_pdf_objects`, `max_result_bytes`, `max_field_matches`, `max_replace_growth_bytes`,
    /// `max_render_dpi`, `render_dpi` and the two time limits.
    pub fn extract_options(&self) -> paperhook_extract::Options {
        paperhook_extract::Options {
            max_pages: self.max_pages,
            max_pixels_per_page: self.max_pixels_per_page,
            max_side: self.max_image_side,
            max_page_overdraw: self.max_page_overdraw,
            max_text_glyphs: self.max_text_glyphs,
            max_drawing_operations: self.max_drawing_operations,
            max_text_bytes: self.max_text_bytes,
            max_pdf_stream_bytes: self.max_pdf_stream_bytes,
            max_pdf_objects: self.max_pdf_objects,
            max_result_bytes: self.max_result_bytes,
            max_field_matches: self.max_field_matches,
            max_replace_growth_bytes: self.max_replace_growth_bytes,
            max_render_dpi: self.max_render_dpi,
            dpi: self.render_dpi,
            page_time_limit: Duration::from_secs(self.page_time_limit_secs),
            document_time_limit: Duration::from_secs(self.document_time_limit_secs),
            ..paperhook_extract::Options::default()
        }
    }

    pub fn submission_read_timeout(&self) -> Duration {
        Duration::from_secs(self.submission_read_timeout_secs)
    }

    /// `worker_task_time_limit_secs`, or when 0 twice the longest a task's
    /// own work may take.
    pub fn worker_task_time_limit(&self) -> Duration {
        Duration::from_secs(match self.worker_task_time_limit_secs {
            0 => self.longest_task_work().saturating_mul(2),
            secs => secs,
        })
    }

    /// The longest a document's extraction (abandoned a page limit after
    /// its own) or a webhook's send may take.
    fn longest_task_work(&self) -> u64 {
        self.document_time_limit_secs
            .saturating_add(self.page_time_limit_secs)
            .max(self.webhook_timeout_secs)
    }

    pub fn worker_lease(&self) -> Duration {
        Duration::from_secs(self.worker_lease_secs)
    }

    pub fn worker_poll(&self) -> Duration {
        Duration::from_millis(self.worker_poll_ms)
    }

    pub fn worker_shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.worker_shutdown_grace_secs)
    }

    pub fn api_shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.api_shutdown_grace_secs)
    }

    /// `task_max_attempts`, as the tasks table stores it (validated to fit).
    pub fn task_max_attempts(&self) -> i32 {
        i32::try_from(self.task_max_attempts).unwrap_or(i32::MAX)
    }

    /// The longest wait before a failed task is tried again (its own
    /// backoff doubles up to this; a `Retry-After` or a webhook's schedule
    /// is not capped by it).
    pub fn task_retry_max_delay(&self) -> Duration {
        Duration::from_secs(self.task_retry_max_delay_secs)
    }

    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_secs(self.webhook_timeout_secs)
    }

    pub fn orphan_file_grace(&self) -> Duration {
        Duration::from_secs(self.orphan_file_grace_secs)
    }

    pub fn janitor_interval(&self) -> Duration {
        Duration::from_secs(self.janitor_interval_secs)
    }

    pub fn janitor_step_timeout(&self) -> Duration {
        Duration::from_secs(self.janitor_step_timeout_secs)
    }

    pub fn webhook_attempts_retention(&self) -> Duration {
        Duration::from_secs(self.webhook_attempts_retention_secs)
    }

    pub fn tasks_retention(&self) -> Duration {
        Duration::from_secs(self.tasks_retention_secs)
    }

    pub fn api_socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.api_addr.parse().map_err(|e| {
            invalid(
                "api_addr",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080: {e}",
                    self.api_addr
                ),
            )
        })
    }

    pub fn storage_location(&self) -> Result<StorageLocation, ConfigError> {
        let url = self.storage_url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("storage_url", "file:// needs a path"));
            }
            Ok(StorageLocation::File(PathBuf::from(path)))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(
                    "storage_url",
                    "s3:// needs a bucket: s3://BUCKET[/PREFIX]",
                ));
            }
            Ok(StorageLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            })
        } else {
            Err(invalid(
                "storage_url",
                format!("{url:?} must start with file:// or s3://"),
            ))
        }
    }

    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        Ok(Keyring::parse(self.encryption_keys.expose_secret())
            .map_err(|message| invalid("encryption_keys", message))?
            .with_sealing(self.sealing()?))
    }

    pub fn sealing(&self) -> Result<crate::crypto::Sealing, ConfigError> {
        self.secret_sealing
            .parse()
            .map_err(|message: String| invalid("secret_sealing", message))
    }

    /// What every database session of the process sets when it connects
    /// (PostgreSQL setting, value), settings at 0 left out.
    pub fn db_session_settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = Vec::new();
        let idle = self.db_idle_in_transaction_timeout_secs;
        if idle > 0 {
            settings.push(("idle_in_transaction_session_timeout", format!("{idle}s")));
        }
        let dead = self.db_keepalive_secs;
        if dead > 0 {
            // The first probe after half of it, then three more a sixth
            // apart; unacknowledged data (probes are not sent while there
            // is some) gives up after all of it.
            settings.extend([
                ("tcp_keepalives_idle", (dead / 2).max(1).to_string()),
                ("tcp_keepalives_interval", (dead / 6).max(1).to_string()),
                ("tcp_keepalives_count", "3".to_owned()),
                ("tcp_user_timeout", format!("{}", dead * 1000)),
            ]);
        }
        settings
    }

    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.db_acquire_timeout_secs)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    /// Each API key's request budget; shared by every API process.
    pub fn rate_limit(&self) -> crate::db::accounts::RateLimit {
        crate::db::accounts::RateLimit {
            per_sec: self.rate_limit_per_sec,
            burst: self.rate_limit_burst,
        }
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn result_retention(&self) -> Duration {
        Duration::from_secs(self.result_retention_secs)
    }
}

/// Installs the tracing subscriber: text or JSON lines on stderr.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // PostgreSQL's notices (such as "relation _sqlx_migrations already
    // exists, skipping" at every start) are not worth an INFO line unless
    // asked for by name.
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        let level = log_directives(&config.log_level).join(",");
        if level.contains("sqlx") {
            EnvFilter::new(level)
        } else {
            EnvFilter::new(format!("{level},sqlx::postgres::notice=warn"))
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    for name in unknown_env_vars() {
        tracing::warn!(
            variable = %name,
            "this PAPERHOOK_ environment variable is no setting and is ignored (misspelt? every setting is in core/config.default.toml)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        for (k, v) in pairs {
            figment = figment.merge((*k, *v));
        }
        figment.extract().map_err(Box::new)
    }

    const KEY: (&str, &str) = (
        "encryption_keys",
        "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );

    /// The defaults with an encryption key and these numbers, not validated.
    fn numbers(pairs: &[(&str, u64)]) -> Config {
        let mut figment = Figment::from(Toml::string(DEFAULTS)).merge(KEY);
        for (k, v) in pairs {
            figment = figment.merge((*k, *v));
        }
        figment.extract().unwrap()
    }

    /// Text settings from the environment are taken as written, however
    /// they look; a configuration file named on purpose must exist; the
    /// default one is only ever ./paperhook.toml.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn the_environment_and_files_are_read_as_written() {
        figment::Jail::expect_with(|jail| {
            // No ./paperhook.toml: defaults. One in a parent folder is not
            // this process's. (The environment is not cleared: other tests
            // of this binary read theirs meanwhile.)
            jail.create_file("paperhook.toml", "worker_concurrency = 7")?;
            let load = || Config::load().map_err(|e| e.to_string());
            assert_eq!(load()?.worker_concurrency, 7);
            std::fs::create_dir("below").map_err(|e| e.to_string())?;
            std::env::set_current_dir("below").map_err(|e| e.to_string())?;
            let below = load();
            std::env::set_current_dir("..").map_err(|e| e.to_string())?;
            assert_ne!(below?.worker_concurrency, 7);

            jail.set_env("PAPERHOOK_CONFIG", "");
            assert_eq!(load()?.worker_concurrency, 7);
            // A misspelt key is named, not ignored.
            jail.create_file("typo.toml", "worker_concurency = 7\nmax_pages = 3")?;
            jail.set_env("PAPERHOOK_CONFIG", "typo.toml");
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("worker_concurency") && !err.contains("max_pages"),
                "{err}"
            );
            jail.set_env("PAPERHOOK_CONFIG", "paperhook.tml");
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("PAPERHOOK_CONFIG") && err.contains("paperhook.tml"),
                "{err}"
            );

            jail.set_env("PAPERHOOK_CONFIG", "paperhook.toml");
            jail.set_env("PAPERHOOK_ENCRYPTION_KEYS", KEY.1);
            jail.set_env("PAPERHOOK_S3_SECRET_ACCESS_KEY", "0012345678");
            jail.set_env("PAPERHOOK_S3_ACCESS_KEY_ID", "\"true\"");
            jail.set_env("PAPERHOOK_WEBHOOK_RETRY_SCHEDULE", "30");
            jail.set_env("PAPERHOOK_WORKER_CONCURRENCY", "3");
            // A misspelt variable is named at start-up; the CLI's and the
            // tests' are not.
            jail.set_env("PAPERHOOK_WORKER_CONCURENCY", "3");
            jail.set_env("PAPERHOOK_API_KEY", "ph_x");
            jail.set_env("PAPERHOOK_TEST_ANYTHING", "1");
            // Kubernetes' variables for a service named paperhook-api.
            jail.set_env("PAPERHOOK_API_SERVICE_HOST", "10.0.0.1");
            jail.set_env("PAPERHOOK_API_PORT_80_TCP_ADDR", "10.0.0.1");
            jail.set_env("PAPERHOOK_API_PORT", "tcp://10.0.0.1:80");
            let unknown = unknown_env_vars();
            assert!(
                unknown.contains(&"PAPERHOOK_WORKER_CONCURENCY".to_owned()),
                "{unknown:?}"
            );
            for fine in [
                "PAPERHOOK_WORKER_CONCURRENCY",
                "PAPERHOOK_API_KEY",
                "PAPERHOOK_TEST_ANYTHING",
                "PAPERHOOK_CONFIG",
                "PAPERHOOK_API_SERVICE_HOST",
                "PAPERHOOK_API_PORT_80_TCP_ADDR",
                "PAPERHOOK_API_PORT",
            ] {
                assert!(!unknown.contains(&fine.to_owned()), "{fine}: {unknown:?}");
            }
            let config = load()?;
            assert_eq!(config.s3_secret_access_key.expose_secret(), "0012345678");
            assert_eq!(config.s3_access_key_id, "true");
            assert_eq!(config.webhook_retry_schedule, "30");
            assert_eq!(config.worker_concurrency, 3);
            config.validate().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn zeros_that_would_break_a_feature_and_misspelt_levels_are_refused() {
        let check = |pairs: &[(&str, u64)]| numbers(pairs).validate();
        for key in [
            "db_acquire_timeout_secs",
            "worker_poll_ms",
            "session_ttl_secs",
            "max_json_bytes",
            "zip_max_total_bytes",
            "zip_max_entry_bytes",
            "s3_connect_timeout_secs",
            "s3_read_timeout_secs",
        ] {
            let err = check(&[(key, 0)]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        // No overflow adding the two, and batches within what is held.
        let err = check(&[("submission_batch_statements", u64::from(u32::MAX))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_max_connections"), "{err}");
        check(&[("auth_batch_max_keys", u64::from(MAX_BATCH))]).unwrap();
        let err = check(&[("auth_batch_max_keys", u64::from(MAX_BATCH) + 1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth_batch_max_keys"), "{err}");
        let level = |l: &str| {
            let mut c = numbers(&[]);
            c.log_level = l.into();
            c.validate()
        };
        for ok in [
            "info",
            "WARN",
            "info,sqlx=warn,hyper=off",
            "paperhook_worker=debug, info",
            "paperhook_api::routes=debug,3,",
        ] {
            level(ok).unwrap();
        }
        // The spaces tracing would read as part of a target are dropped.
        assert_eq!(
            log_directives(" paperhook_worker=debug , info,"),
            ["paperhook_worker=debug", "info"]
        );
        for bad in ["warning", "", " , ", "info,paperhook_worker"] {
            let err = level(bad).unwrap_err().to_string();
            assert!(err.contains("log_level"), "{bad}: {err}");
        }
        let mut sealing = numbers(&[]);
        sealing.secret_sealing = "yes".into();
        let err = sealing.validate().unwrap_err().to_string();
        assert!(err.contains("secret_sealing"), "{err}");
    }

    /// The webhook schedule's sends (retries + 1) must fit in a task's
    /// claims, or deliveries would be cut short without a word; a task
    /// needs a claim and a retry wait.
    #[test]
    fn the_webhook_schedule_fits_in_task_max_attempts() {
        let check = |pairs: &[(&str, u64)]| numbers(pairs).validate().map_err(|e| e.to_string());
        let defaults = numbers(&[]);
        assert_eq!(
            (
                defaults.task_max_attempts,
                defaults.task_retry_max_delay_secs
            ),
            (25, 600)
        );
        // The default schedule lists 7 retries: 8 sends.
        check(&[("task_max_attempts", 8)]).unwrap();
        let err = check(&[("task_max_attempts", 7)]).unwrap_err();
        assert!(
            err.contains("webhook_retry_schedule") && err.contains("task_max_attempts"),
            "{err}"
        );
        for (key, value, says) in [
            ("task_max_attempts", 0, "greater than 0"),
            ("task_max_attempts", u64::from(u32::MAX), "at most"),
            ("task_max_attempts", 1, "at least 2"),
            ("max_result_bytes", MAX_RESULT_BYTES + 1, "jsonb"),
            ("task_retry_max_delay_secs", 0, "greater than 0"),
            (
                "task_retry_max_delay_secs",
                MAX_DURATION_SECS + 1,
                "100 years",
            ),
        ] {
            let err = check(&[(key, value)]).unwrap_err();
            assert!(
                err.contains(key) && err.contains(says),
                "{key}={value}: {err}"
            );
        }
    }

    /// Limits that no request could meet, or that the API could not
    /// count, are refused with the bounds they must be within.
    #[test]
    fn static_values_preview_and_memory_limits_are_bounded() {
        let check = |pairs: &[(&str, u64)]| numbers(pairs).validate();
        check(&[
            ("max_static_values_depth", 1),
            ("max_static_values_bytes", 2),
        ])
        .unwrap();
        check(&[(
            "max_static_values_depth",
            u64::from(STATIC_VALUES_MAX_DEPTH),
        )])
        .unwrap();
        for (key, value, says) in [
            ("max_static_values_depth", 0, "between 1 and 126"),
            ("max_static_values_depth", 127, "between 1 and 126"),
            ("max_static_values_bytes", 1, "at least 2"),
            ("max_static_values_bytes", 0, "at least 2"),
            (
                "submission_memory_bytes",
                SUBMISSION_MEMORY_MAX + 1,
                "less than 4 TiB",
            ),
            ("preview_dpi", 71, "between 72 and 600"),
            ("preview_dpi", 601, "between 72 and 600"),
            ("preview_max_pages", 0, "greater than 0"),
            ("max_api_keys_per_account", 0, "greater than 0"),
            (
                "api_shutdown_grace_secs",
                MAX_DURATION_SECS + 1,
                "100 years",
            ),
        ] {
            let err = check(&[(key, value)]).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(says),
                "{key}={value}: {err}"
            );
        }
        let mut config = numbers(&[
            ("submission_memory_bytes", SUBMISSION_MEMORY_MAX),
            ("preview_dpi", 600),
            ("api_shutdown_grace_secs", 0),
        ]);
        config.validate().unwrap();
        config.preview_dpi = 72;
        config.validate().unwrap();
        let defaults = numbers(&[]);
        assert_eq!(
            (
                defaults.preview_max_pages,
                defaults.preview_dpi,
                defaults.max_api_keys_per_account,
                defaults.api_shutdown_grace(),
            ),
            (20, 100, 50, Duration::from_secs(30))
        );
    }

    #[test]
    fn defaults_parse_and_need_a_key() {
        let config = with(&[]).unwrap();
        assert_eq!(config.api_addr, "127.0.0.1:8080");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("encryption_keys"), "{err}");
    }

    /// The batching statements must leave the pool a connection, and an
    /// inline document is at most 16 MiB.
    #[test]
    fn database_settings_are_checked_together() {
        let check = |pairs: &[(&str, u64)]| numbers(pairs).validate();
        check(&[]).unwrap();
        check(&[("db_max_connections", 9)]).unwrap();
        let err = check(&[("db_max_connections", 8)]).unwrap_err().to_string();
        assert!(err.contains("db_max_connections"), "{err}");
        let batch = ("submission_batch_max_rows", 16);
        check(&[("inline_document_max_bytes", INLINE_DOCUMENT_MAX), batch]).unwrap();
        let err = check(&[
            ("inline_document_max_bytes", INLINE_DOCUMENT_MAX + 1),
            batch,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("inline_document_max_bytes"), "{err}");
        // 64 documents of 16 MiB in one statement: 1 GiB.
        let err = check(&[("inline_document_max_bytes", INLINE_DOCUMENT_MAX)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("submission_batch_max_rows (64)"), "{err}");
        // "For ever" as the largest number would overflow timestamps.
        check(&[("result_retention_secs", MAX_DURATION_SECS)]).unwrap();
        let err = check(&[("result_retention_secs", u64::MAX)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("result_retention_secs"), "{err}");
        // Not so short that a submission's file goes before its job commits.
        check(&[("orphan_file_grace_secs", 10)]).unwrap();
        let err = check(&[("orphan_file_grace_secs", 9)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("orphan_file_grace_secs"), "{err}");
        // The server takes these in milliseconds, in 32 bits.
        check(&[("db_keepalive_secs", 2_147_483)]).unwrap();
        let err = check(&[("db_keepalive_secs", 2_147_484)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_keepalive_secs"), "{err}");
        let err = check(&[("db_idle_in_transaction_timeout_secs", 3_000_000)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_idle_in_transaction_timeout_secs"), "{err}");
        // A task may work for as long as its document or webhook may, and
        // as long again for its storage and database.
        check(&[("worker_task_time_limit_secs", 3720)]).unwrap();
        let err = check(&[("worker_task_time_limit_secs", 3719)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("(3720 s), not 3719"), "{err}");
        // 0 follows the document limit up, for ever.
        assert_eq!(
            numbers(&[]).worker_task_time_limit(),
            Duration::from_secs(3720)
        );
        let long = [("document_time_limit_secs", 7200)];
        check(&long).unwrap();
        assert_eq!(
            numbers(&long).worker_task_time_limit(),
            Duration::from_secs(14520)
        );
        let err = check(&[("webhook_timeout_secs", 0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook_timeout_secs"), "{err}");
        for name in ["result_retention_secs", "janitor_interval_secs"] {
            let err = check(&[(name, 0)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        // No overflow on the way to the century check.
        let err = check(&[("document_time_limit_secs", u64::MAX)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("document_time_limit_secs"), "{err}");
    }

    #[test]
    fn storage_urls() {
        let mut config = with(&[]).unwrap();
        assert_eq!(
            config.storage_location().unwrap(),
            StorageLocation::File(".paperhook/storage".into())
        );
        config.storage_url = "s3://bucket/some/prefix/".into();
        assert_eq!(
            config.storage_location().unwrap(),
            StorageLocation::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        config.storage_url = "ftp://x".into();
        assert!(
            config
                .storage_location()
                .unwrap_err()
                .to_string()
                .contains("ftp://x")
        );
    }

    #[test]
    fn extraction_limits_are_settings() {
        let config = numbers(&[
            ("max_pages", 7),
            ("max_pixels_per_page", 1000),
            ("max_image_side", 40),
            ("max_page_overdraw", 30),
            ("max_text_glyphs", 5000),
            ("max_drawing_operations", 6000),
            ("max_text_bytes", 7000),
            ("max_pdf_stream_bytes", 8000),
            ("max_pdf_objects", 8500),
            ("max_result_bytes", 9000),
            ("max_field_matches", 11),
            ("max_replace_growth_bytes", 12),
            ("max_render_dpi", 200),
            ("render_dpi", 150),
            ("page_time_limit_secs", 9),
            ("document_time_limit_secs", 90),
        ]);
        config.validate().unwrap();
        let opts = config.extract_options();
        assert_eq!(
            (
                opts.max_pages,
                opts.max_pixels_per_page,
                opts.max_side,
                opts.dpi
            ),
            (7, 1000, 40, 150)
        );
        assert_eq!(
            (
                opts.max_page_overdraw,
                opts.max_text_glyphs,
                opts.max_drawing_operations
            ),
            (30, 5000, 6000)
        );
        assert_eq!(
            (
                opts.max_text_bytes,
                opts.max_pdf_stream_bytes,
                opts.max_result_bytes
            ),
            (7000, 8000, 9000)
        );
        assert_eq!(
            (
                opts.max_field_matches,
                opts.max_replace_growth_bytes,
                opts.max_render_dpi
            ),
            (11, 12, 200)
        );
        assert_eq!(opts.max_pdf_objects, 8500);
        assert_eq!(opts.page_time_limit, Duration::from_secs(9));
        assert_eq!(opts.document_time_limit, Duration::from_secs(90));
        // The defaults are the engine's own.
        let defaults = with(&[KEY]).unwrap().extract_options();
        let engine = paperhook_extract::Options::default();
        assert_eq!(
            (
                defaults.max_pixels_per_page,
                defaults.max_side,
                defaults.dpi
            ),
            (engine.max_pixels_per_page, engine.max_side, engine.dpi)
        );
        assert_eq!(
            (
                defaults.max_page_overdraw,
                defaults.max_text_glyphs,
                defaults.max_drawing_operations
            ),
            (
                engine.max_page_overdraw,
                engine.max_text_glyphs,
                engine.max_drawing_operations
            )
        );
        assert_eq!(
            (
                defaults.max_text_bytes,
                defaults.max_pdf_stream_bytes,
                defaults.max_result_bytes
            ),
            (
                engine.max_text_bytes,
                engine.max_pdf_stream_bytes,
                engine.max_result_bytes
            )
        );
        assert_eq!(
            (
                defaults.max_field_matches,
                defaults.max_replace_growth_bytes,
                defaults.max_render_dpi
            ),
            (
                engine.max_field_matches,
                engine.max_replace_growth_bytes,
                engine.max_render_dpi
            )
        );
        assert_eq!(defaults.page_time_limit, engine.page_time_limit);
        assert_eq!(defaults.document_time_limit, engine.document_time_limit);
        assert_eq!(defaults.max_pdf_objects, engine.max_pdf_objects);
        for (name, bad) in [
            ("max_pixels_per_page", 0),
            ("max_image_side", 0),
            ("max_page_overdraw", 0),
            ("max_text_glyphs", 0),
            ("max_drawing_operations", 0),
            ("page_time_limit_secs", 0),
            ("document_time_limit_secs", 0),
            ("preview_max_concurrent", 0),
            ("webhook_test_max_concurrent", 0),
            ("render_dpi", 71),
            ("render_dpi", 601),
            ("max_text_bytes", 0),
            ("max_pdf_stream_bytes", 0),
            ("max_pdf_objects", 0),
            ("max_result_bytes", 0),
            ("max_field_matches", 0),
            ("max_render_dpi", 71),
            ("max_render_dpi", 601),
            // Below render_dpi (300).
            ("max_render_dpi", 299),
        ] {
            let err = numbers(&[(name, bad)]).validate().unwrap_err().to_string();
            assert!(err.contains(name), "{name}={bad}: {err}");
        }
    }
}
