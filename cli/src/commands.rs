//! The small commands: login, whoami, templates, status and results.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::args::{LoginArgs, ResultsArgs, ResultsFormat, StatusArgs, TemplatesCommand};
use crate::client::{Api, Retry, decode};
use crate::config::{self, Saved};
use crate::output::{Out, plural};
use crate::{CliError, EXIT_FAILED_DOCUMENTS, Result};

fn api() -> Result<Api> {
    Api::new(&config::credentials()?)
}

/// Shows the start and end of a key, never the middle.
pub fn key_hint(key: &str) -> String {
    let prefix: String = key.chars().take(10).collect();
    if key.chars().count() > 10 {
        format!("{prefix}…")
    } else {
        "****".into()
    }
}

pub async fn login(args: LoginArgs, out: &Out) -> Result<u8> {
    let url = config::normalise_url(&args.url)?;
    let key = match args.key {
        Some(k) if k != "-" => k,
        _ => {
            if std::io::stdin().is_terminal() {
                out.note("Paste the API key (ph_…) and press Enter:");
            }
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(CliError::new("no API key given")
            .hint("pass --key ph_…, or pipe the key on standard input"));
    }
    let account = if args.no_verify {
        None
    } else {
        let api = Api::with(&url, &key)?;
        Some(api.get::<Value>("/v1/account").await?)
    };
    let path = config::path()?;
    config::save(
        &path,
        &Saved {
            url: Some(url.clone()),
            api_key: Some(key.clone()),
        },
    )?;
    if out.json {
        out.json_value(&json!({"url": url, "config": path, "account": account}));
    } else {
        match &account {
            Some(a) => out.line(format!(
                "Logged in to {url} as {} ({} credits).",
                out.out.bold(a["name"].as_str().unwrap_or("?")),
                a["credits"]
            )),
            None => out.line(format!("Saved the key for {url} (not checked).")),
        }
        out.note(format!(
            "Credentials saved in {} (mode 0600).",
            path.display()
        ));
    }
    Ok(0)
}

pub fn logout(out: &Out) -> Result<u8> {
    let path = config::path()?;
    let removed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(CliError::new(format!("removing {}: {e}", path.display()))),
    };
    if out.json {
        out.json_value(&json!({"removed": removed, "config": path}));
    } else if removed {
        out.line(format!("Removed {}.", path.display()));
    } else {
        out.line("Not logged in: nothing to remove.");
    }
    Ok(0)
}

pub async fn whoami(out: &Out) -> Result<u8> {
    let creds = config::credentials()?;
    if !creds.key_from_env
        && let Ok(path) = config::path()
        && let Some(w) = config::permission_warning(&path)
    {
        out.warn(w);
    }
    let api = Api::new(&creds)?;
    let account: Value = api.get("/v1/account").await?;
    if out.json {
        out.json_value(&json!({
            "url": creds.url,
            "account_id": account["account_id"],
            "name": account["name"],
            "credits": account["credits"],
            "key": key_hint(&creds.key),
        }));
        return Ok(0);
    }
    let s = &out.out;
    out.line(format!(
        "{} {}",
        s.bold(account["name"].as_str().unwrap_or("?")),
        s.dim(&format!(
            "(account {})",
            account["account_id"].as_str().unwrap_or("?")
        ))
    ));
    out.line(format!("credits  {}", account["credits"]));
    out.line(format!(
        "api      {}{}",
        creds.url,
        if creds.url_from_env {
            " (PAPERHOOK_URL)"
        } else {
            ""
        }
    ));
    out.line(format!(
        "key      {}{}",
        key_hint(&creds.key),
        if creds.key_from_env {
            " (PAPERHOOK_API_KEY)"
        } else {
            ""
        }
    ));
    Ok(0)
}

fn read_json_file(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::new(format!("reading {}: {e}", path.display())))?
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::new(format!("{} is not valid JSON: {e}", path.display()))
            .hint("see examples/template.json for the shape of a template")
    })
}

/// A template id, checked before any request.
pub fn uuid(id: &str, what: &str) -> Result<String> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.to_string())
        .map_err(|_| {
            CliError::new(format!("{id:?} is not a {what} id (a UUID)")).hint(match what {
                "template" => "list your templates with `paperhook templates list`",
                _ => "use a job id printed by `paperhook submit`",
            })
        })
}

pub async fn templates(cmd: TemplatesCommand, out: &Out) -> Result<u8> {
    let api = api()?;
    match cmd {
        TemplatesCommand::List => {
            let mut all = Vec::new();
            loop {
                let path = format!("/v1/templates?limit=200&offset={}", all.len());
                let page: Value = api.get(&path).await?;
                let items = page["templates"].as_array().cloned().unwrap_or_default();
                let n = items.len();
                all.extend(items);
                if n < 200 {
                    break;
                }
            }
            if out.json {
                out.json_value(&json!({ "templates": all }));
                return Ok(0);
            }
            if all.is_empty() {
                out.note("No templates yet: create one with `paperhook templates create -f template.json`.");
                return Ok(0);
            }
            let s = &out.out;
            out.line(s.bold(&format!(
                "{:<36}  {:<30}  {:>6}  WEBHOOK",
                "ID", "NAME", "FIELDS"
            )));
            for t in &all {
                out.line(format!(
                    "{:<36}  {:<30}  {:>6}  {}",
                    t["id"].as_str().unwrap_or(""),
                    truncate(t["name"].as_str().unwrap_or(""), 30),
                    t["fields"].as_array().map_or(0, Vec::len),
                    t["webhook"]["url"].as_str().unwrap_or("-"),
                ));
            }
            Ok(0)
        }
        TemplatesCommand::Show { id } => {
            let id = uuid(&id, "template")?;
            let t: Value = api.get(&format!("/v1/templates/{id}")).await?;
            if out.json {
                out.json_value(&t);
            } else {
                print_template(out, &t);
            }
            Ok(0)
        }
        TemplatesCommand::Create { file } => {
            let body = read_json_file(&file)?;
            let t: Value = api
                .json("create template", Retry::Unsafe, || {
                    api.request(Method::POST, "/v1/templates").json(&body)
                })
                .await
                .map_err(|f| api.explain(f))?;
            if out.json {
                out.json_value(&t);
            } else {
                out.line(t["id"].as_str().unwrap_or(""));
                out.note(format!(
                    "Created template {} ({}). Submit with: paperhook submit --template {} FILES…",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    t["id"].as_str().unwrap_or("")
                ));
            }
            Ok(0)
        }
        TemplatesCommand::Update { id, file } => {
            let id = uuid(&id, "template")?;
            let mut body = read_json_file(&file)?;
            // `templates show --json` output can be sent back as it is.
            if let Some(obj) = body.as_object_mut() {
                for k in ["id", "signing_secret_hint", "created_at", "updated_at"] {
                    obj.remove(k);
                }
            }
            let path = format!("/v1/templates/{id}");
            let t: Value = api
                .json("update template", Retry::Safe, || {
                    api.request(Method::PUT, &path).json(&body)
                })
                .await
                .map_err(|f| api.explain(f))?;
            if out.json {
                out.json_value(&t);
            } else {
                out.line(format!("Updated template {id}."));
            }
            Ok(0)
        }
        TemplatesCommand::Delete { id, yes } => {
            let id = uuid(&id, "template")?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::new("not deleting without confirmation")
                        .hint("pass --yes to delete without a question"));
                }
                out.note(format!("Delete template {id}? Type yes to confirm:"));
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "yes") {
                    out.note("Not deleted.");
                    return Ok(crate::EXIT_ERROR);
                }
            }
            let path = format!("/v1/templates/{id}");
            let res = api
                .send("delete template", Retry::Safe, || {
                    api.request(Method::DELETE, &path)
                })
                .await
                .map_err(|f| api.explain(f))?;
            decode::<Value>(res).await.map_err(|f| api.explain(f))?;
            if out.json {
                out.json_value(&json!({"deleted": id}));
            } else {
                out.line(format!("Deleted template {id}."));
            }
            Ok(0)
        }
        TemplatesCommand::Secret {
            id,
            rotate,
            previous_valid,
        } => {
            let id = uuid(&id, "template")?;
            let secret: Value = if rotate {
                let mut path = format!("/v1/templates/{id}/webhook-secret/rotate");
                if let Some(secs) = previous_valid {
                    path.push_str(&format!("?previous_valid_secs={secs}"));
                }
                api.json("rotate secret", Retry::Unsafe, || {
                    api.request(Method::POST, &path)
                })
                .await
                .map_err(|f| api.explain(f))?
            } else {
                api.get(&format!("/v1/templates/{id}/webhook-secret"))
                    .await?
            };
            if out.json {
                out.json_value(&secret);
            } else {
                out.line(secret["secret"].as_str().unwrap_or(""));
                if let Some(until) = secret["previous_secret_expires_at"].as_str() {
                    out.note(format!(
                        "The previous secret also signs webhooks until {until}."
                    ));
                }
            }
            Ok(0)
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn print_template(out: &Out, t: &Value) {
    let s = &out.out;
    out.line(format!(
        "{} {}",
        s.bold(t["name"].as_str().unwrap_or("")),
        s.dim(&format!("({})", t["id"].as_str().unwrap_or("")))
    ));
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    out.line(format!("keywords   {}", list(&t["keywords"])));
    out.line(format!("languages  {}", list(&t["languages"])));
    match t["webhook"]["url"].as_str() {
        Some(url) => {
            out.line(format!("webhook    {url}"));
            if let Some(h) = t["webhook"]["headers"].as_object() {
                for (k, v) in h {
                    out.line(format!("           {k}: {}", v.as_str().unwrap_or("")));
                }
            }
        }
        None => out.line("webhook    -"),
    }
    out.line(format!(
        "updated    {}",
        t["updated_at"].as_str().unwrap_or("")
    ));
    out.line(s.bold("fields"));
    for f in t["fields"].as_array().into_iter().flatten() {
        out.line(format!(
            "  {:<24} {:<8} {}{}",
            f["name"].as_str().unwrap_or(""),
            f["type"].as_str().unwrap_or("text"),
            f["locator"]["kind"].as_str().unwrap_or(""),
            if f["required"].as_bool() == Some(true) {
                "  (required)"
            } else {
                ""
            }
        ));
    }
    out.note(s.dim("The whole template: paperhook templates show ID --json"));
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "SUCCESS" | "FAILED")
}

pub async fn status(args: StatusArgs, out: &Out) -> Result<u8> {
    let mut api = api()?;
    if args.wait {
        // A wait outlives a restart of the API, as `submit` does.
        api.retries = crate::client::LONG_RETRIES;
    }
    let id = uuid(&args.job_id, "job")?;
    let path = format!("/job-status?job_id={id}");
    let mut delay = Duration::from_millis(500);
    let job: Value = loop {
        let job: Value = api.get(&path).await?;
        let status = job["status"].as_str().unwrap_or("");
        if !args.wait || is_final(status) {
            break job;
        }
        if out.stderr_is_terminal && !out.json {
            out.note(format!("{} … {}", id, status));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(5));
    };
    if out.json {
        out.json_value(&job);
    } else {
        print_status(out, &job);
    }
    let failed = job["status"] == "FAILED";
    Ok(if args.wait && failed {
        EXIT_FAILED_DOCUMENTS
    } else {
        0
    })
}

fn print_status(out: &Out, job: &Value) {
    let s = &out.out;
    let status = job["status"].as_str().unwrap_or("");
    out.line(format!(
        "{}  {}",
        s.bold(job["job_id"].as_str().unwrap_or("")),
        s.status(status)
    ));
    out.line(format!(
        "type {}  template {}",
        job["document_type"].as_str().unwrap_or("?"),
        job["template_id"].as_str().unwrap_or("?")
    ));
    out.line(format!(
        "created {}{}",
        job["created_at"].as_str().unwrap_or(""),
        job["finished_at"]
            .as_str()
            .map(|f| format!("  finished {f}"))
            .unwrap_or_default()
    ));
    if let Some(code) = job["error"]["code"].as_str() {
        out.line(format!(
            "{} {code}: {}",
            s.red("error"),
            job["error"]["message"].as_str().unwrap_or("")
        ));
    }
    let docs = job["documents"].as_array().cloned().unwrap_or_default();
    if !docs.is_empty() {
        out.line(s.bold(&plural(docs.len() as u64, "document", "documents")));
    }
    for d in &docs {
        let pages = d["pages"]
            .as_u64()
            .map(|p| plural(p, "page", "pages"))
            .unwrap_or_default();
        let mut line = format!(
            "  {:>4}  {:<32}  {}  {}",
            d["index"],
            d["file_name"].as_str().unwrap_or("-"),
            s.status(d["status"].as_str().unwrap_or("")),
            pages
        );
        if let Some(code) = d["error"]["code"].as_str() {
            line.push_str(&format!(
                "  {code}: {}",
                d["error"]["message"].as_str().unwrap_or("")
            ));
        }
        out.line(line);
    }
}

pub async fn results(args: ResultsArgs, out: &Out) -> Result<u8> {
    let api = api()?;
    let id = uuid(&args.job_id, "job")?;
    let format = match args.format {
        ResultsFormat::Json => "json",
        ResultsFormat::Csv => "csv",
    };
    let body = json!({"job_id": id, "result_format": format});
    let res = api
        .send("results", Retry::Safe, || {
            api.request(Method::POST, "/v1/job-results").json(&body)
        })
        .await
        .map_err(|f| api.explain(f))?;
    if !res.status().is_success() {
        return Err(api.explain(crate::client::failure(res).await));
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|e| CliError::new(format!("reading the results: {e}")))?;
    let text = if format == "json" {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::new(format!("the results are not JSON: {e}")))?;
        let pretty = args.output.is_some() || std::io::stdout().is_terminal();
        let mut t = if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        }
        .unwrap_or_default();
        t.push('\n');
        t
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| CliError::new(format!("writing {}: {e}", path.display())))?;
            out.note(format!("Wrote {}.", path.display()));
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hinted_not_shown() {
        assert_eq!(key_hint("ph_abcdefg_secretpart"), "ph_abcdefg…");
        assert_eq!(key_hint("short"), "****");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
