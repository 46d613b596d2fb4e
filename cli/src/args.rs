//! The command line: every command, its options and its examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const MAIN_EXAMPLES: &str = "\
Examples:
  paperhook login --url http://127.0.0.1:8080 --key ph_...
  paperhook templates create -f examples/template.json
  paperhook submit --template TEMPLATE_ID invoices/ --wait --output results.csv
  paperhook webhooks listen --port 8787 --secret whsec_...

Credentials come from `paperhook login` (a 0600 file in your config directory);
PAPERHOOK_URL and PAPERHOOK_API_KEY override it. Colour is off when the output
is not a terminal or NO_COLOR is set.

Exit codes: 0 ok, 1 error, 2 usage error, 3 some documents failed, 130 interrupted.";

#[derive(Debug, Parser)]
#[command(
    name = "paperhook",
    version,
    about = "Extract data from documents with Paperhook, from your terminal",
    after_help = MAIN_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save the API URL and key (checked against the API) for later commands.
    #[command(after_help = "\
Examples:
  paperhook login --url http://127.0.0.1:8080 --key ph_...
  echo \"$KEY\" | paperhook login --url https://paperhook.example.com
  paperhook login --url http://127.0.0.1:8080 --key ph_... --no-verify

The file is config.toml in paperhook's config directory (for example
~/.config/paperhook/config.toml), readable only by you (mode 0600);
PAPERHOOK_CLI_CONFIG names another file. PAPERHOOK_URL and PAPERHOOK_API_KEY
override what it holds.")]
    Login(LoginArgs),

    /// Forget the saved credentials.
    #[command(after_help = "Examples:\n  paperhook logout")]
    Logout,

    /// Show the account of the API key and its credits.
    #[command(after_help = "\
Examples:
  paperhook whoami
  paperhook whoami --json | jq .credits
  PAPERHOOK_API_KEY=ph_... paperhook whoami")]
    Whoami,

    /// List, show, create, update and delete templates.
    Templates(TemplatesArgs),

    /// Submit files, folders and ZIP batches; optionally wait for the results.
    #[command(after_help = "\
Examples:
  paperhook submit --template TEMPLATE_ID invoice.pdf
  paperhook submit --template TEMPLATE_ID invoices/ --wait --output results.csv
  paperhook submit --template TEMPLATE_ID scans/ --static company=Acme --static batch:=7 \\
      --wait --output results.jsonl
  paperhook submit --template TEMPLATE_ID invoices/ --zip --wait

Every file (or --zip bundle) is sent with an Idempotency-Key made from the
template, the file's SHA-256 and the static values: running the same command
again (after Ctrl-C, a crash or a lost connection) returns the jobs already
created instead of submitting them twice, for the server's idempotency_ttl_secs
(24 hours by default). Files with identical
content are submitted once. 429 and 5xx answers are retried, honouring
Retry-After.

With --wait, the exit code is 3 when any document failed, and a summary of
the reasons is printed.")]
    Submit(SubmitArgs),

    /// Show a job's status and each of its documents.
    #[command(after_help = "\
Examples:
  paperhook status 0190a6e4-...
  paperhook status 0190a6e4-... --wait
  paperhook status 0190a6e4-... --json | jq -r .status")]
    Status(StatusArgs),

    /// Fetch a finished job's results as JSON or CSV.
    #[command(after_help = "\
Examples:
  paperhook results 0190a6e4-...
  paperhook results 0190a6e4-... --format csv > job.csv
  paperhook results 0190a6e4-... --format csv --output job.csv")]
    Results(ResultsArgs),

    /// Receive webhooks locally, verify saved ones, and send failed ones again.
    Webhooks(WebhooksArgs),

    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  paperhook completions bash > ~/.local/share/bash-completion/completions/paperhook
  paperhook completions zsh > \"${fpath[1]}/_paperhook\"
  paperhook completions fish > ~/.config/fish/completions/paperhook.fish")]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// The API key (ph_...). Read from standard input when left out.
    #[arg(long)]
    pub key: Option<String>,
    /// Save without checking the key against the API.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct TemplatesArgs {
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the account's templates.
    #[command(after_help = "\
Examples:
  paperhook templates list
  paperhook templates list --json | jq -r '.templates[].id'")]
    List,
    /// Show one template (its fields, keywords and webhook).
    #[command(after_help = "\
Examples:
  paperhook templates show TEMPLATE_ID
  paperhook templates show TEMPLATE_ID --json > template.json")]
    Show {
        /// The template's id.
        id: String,
    },
    /// Create a template from a JSON file (see examples/template.json).
    #[command(after_help = "\
Examples:
  paperhook templates create -f examples/template.json
  TEMPLATE=$(paperhook templates create -f template.json --json | jq -r .id)
  cat template.json | paperhook templates create -f -")]
    Create {
        /// The template as JSON: name, fields, keywords, languages, webhook. `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Replace a template with the content of a JSON file.
    #[command(after_help = "\
Examples:
  paperhook templates show TEMPLATE_ID --json > t.json   # edit t.json, then:
  paperhook templates update TEMPLATE_ID -f t.json

Masked webhook header values (****1234) sent back keep the stored values.")]
    Update {
        /// The template's id.
        id: String,
        /// The whole template as JSON. `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a template.
    #[command(after_help = "\
Examples:
  paperhook templates delete TEMPLATE_ID
  paperhook templates delete TEMPLATE_ID --yes   # no question (needed when stdin is not a terminal)")]
    Delete {
        /// The template's id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Print the whsec_ secret that signs the template's webhooks.
    #[command(after_help = "\
Examples:
  paperhook templates secret TEMPLATE_ID
  paperhook webhooks listen --secret \"$(paperhook templates secret TEMPLATE_ID)\"
  paperhook templates secret TEMPLATE_ID --rotate
  paperhook templates secret TEMPLATE_ID --rotate --previous-valid 0   # the old one leaked

After --rotate, webhooks carry a signature made with each secret for a day
(--previous-valid, in seconds, at most 604800), so receivers still verifying
with the old secret keep working while they switch.")]
    Secret {
        /// The template's id.
        id: String,
        /// Replace the secret with a new one first.
        #[arg(long)]
        rotate: bool,
        /// With --rotate: seconds the old secret keeps signing too (0: it stops at once).
        #[arg(long, value_name = "SECS", requires = "rotate")]
        previous_valid: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The template to extract with.
    #[arg(long, short = 't')]
    pub template: String,
    /// Files and folders (searched recursively; files that are not PDF, PNG, JPEG, TIFF or ZIP are skipped).
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// A static value returned with every result: key=value (a string) or key:=JSON. Repeatable.
    #[arg(long = "static", value_name = "KEY=VALUE")]
    pub statics: Vec<String>,
    /// Send the files as ZIP batches (one job per batch of up to --zip-max-files files) instead of one job per file.
    #[arg(long)]
    pub zip: bool,
    /// Files per ZIP batch with --zip.
    #[arg(long, default_value_t = 500, value_name = "N", requires = "zip")]
    pub zip_max_files: usize,
    /// Bytes per ZIP batch with --zip: the sizes of its files added up, kept under the server's max_upload_bytes (50 MiB by default). A larger file is a batch of its own.
    #[arg(long, default_value_t = 40 * 1024 * 1024, value_name = "BYTES", requires = "zip", value_parser = clap::value_parser!(u64).range(1..))]
    pub zip_max_bytes: u64,
    /// Requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Follow the jobs until every document is done, then write the results.
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// With --wait: write every document's result here (.csv, or .jsonl one JSON object per line).
    #[arg(long, short = 'o', requires = "wait", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The format of --output (default: from its extension).
    #[arg(long, value_enum, requires = "output")]
    pub format: Option<OutputFormat>,
    /// When a re-run finds an earlier job that failed, submit that file again (once per run).
    /// Not with --zip: a batch fails when any of its files does, and sending it again would
    /// process and charge the others again; submit the failed files without --zip instead.
    #[arg(long, conflicts_with = "zip")]
    pub retry_failed: bool,
    /// Give up on a request after this many retries (429, 5xx, connection errors).
    #[arg(long, default_value_t = crate::client::LONG_RETRIES, value_name = "N")]
    pub retries: u32,
    /// With --wait: stop waiting after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id (from `paperhook submit`).
    pub job_id: String,
    /// Poll until the job is SUCCESS or FAILED (exit code 3 when FAILED).
    #[arg(long, short = 'w')]
    pub wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The job's id.
    pub job_id: String,
    /// JSON (the job and every document's result) or CSV (one row per document).
    #[arg(long, short = 'f', value_enum, default_value_t = ResultsFormat::Json)]
    pub format: ResultsFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Run a local receiver that verifies and prints every delivery.
    #[command(after_help = "\
Examples:
  paperhook webhooks listen --port 8787 --secret whsec_...
  paperhook webhooks listen --template TEMPLATE_ID          # fetches the template's secret
  paperhook webhooks listen --secret whsec_... --status 503  # try the retries
  paperhook webhooks listen --secret whsec_... --save requests/ --json

Point the template's webhook at http://HOST:8787/ (the API refuses loopback
and private addresses unless PAPERHOOK_WEBHOOK_ALLOW_CIDRS lists them).
Requests whose Standard Webhooks signature or timestamp does not verify are
answered 401; the others get --status (200 unless told).")]
    Listen(ListenArgs),

    /// Verify a saved request's signature (headers file + body file).
    #[command(after_help = "\
Examples:
  paperhook webhooks verify --secret whsec_... --headers req.headers --body req.body
  paperhook webhooks verify --secret whsec_... --headers h.json --body b.json --ignore-timestamp

The headers file is either JSON ({\"webhook-id\": \"...\", ...}) or lines of
`Name: value` (an HTTP dump such as `curl -D`, or what `listen --save` writes).
Exit code 0 when it verifies, 3 when it does not.")]
    Verify(VerifyArgs),

    /// Send again the webhooks that failed (their retries spent), for example once the receiver is fixed.
    #[command(after_help = "\
Examples:
  paperhook webhooks resend                          # every failed webhook of the account
  paperhook webhooks resend --template TEMPLATE_ID   # those of one template
  paperhook webhooks resend --gone                   # those the receiver refused with 410

Each is sent with its own webhook-id (receivers de-duplicate on it) and a
fresh retry schedule, and is not charged again. Jobs whose results expired
(result_retention_secs after they finished, 24 hours by default) are left out. Find them first with the
dashboard's jobs list (Webhook filter) or GET /v1/jobs?delivery=failed.")]
    Resend(ResendArgs),
}

#[derive(Debug, Args)]
pub struct ResendArgs {
    /// Those the receiver refused with 410 Gone, instead of those that failed.
    #[arg(long)]
    pub gone: bool,
    /// Only the webhooks of this template's jobs.
    #[arg(long, short = 't', value_name = "TEMPLATE_ID")]
    pub template: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The port to listen on (0 picks a free one).
    #[arg(long, short = 'p', default_value_t = 8787)]
    pub port: u16,
    /// The address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The whsec_ signing secret to verify with (or PAPERHOOK_WEBHOOK_SECRET).
    #[arg(long, env = "PAPERHOOK_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Fetch the signing secret of this template from the API.
    #[arg(long, conflicts_with = "secret")]
    pub template: Option<String>,
    /// The status to answer verified deliveries with (e.g. 500 or 503 to see retries, 410 to stop them).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub status: u16,
    /// How far webhook-timestamp may be from now, in seconds.
    #[arg(long, default_value_t = 300)]
    pub tolerance: u64,
    /// Save each request as N.headers and N.body in this folder (for `webhooks verify`).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The whsec_ signing secret (or PAPERHOOK_WEBHOOK_SECRET).
    #[arg(long, env = "PAPERHOOK_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The request's headers: JSON object, or `Name: value` lines.
    #[arg(long, value_name = "FILE")]
    pub headers: PathBuf,
    /// The request's body, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub body: PathBuf,
    /// How far webhook-timestamp may be from now, in seconds.
    #[arg(long, default_value_t = 300)]
    pub tolerance: u64,
    /// Check only the signature, not the timestamp (for old saved requests).
    #[arg(long)]
    pub ignore_timestamp: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_subcommands().next().is_none() {
                let help = cmd
                    .get_after_help()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(help.contains("Examples:"), "{path} has no examples");
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path);
                }
            }
        }
        walk(&Cli::command(), "");
    }
}
