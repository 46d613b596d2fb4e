//! Tenant isolation, systematically: every operation in /openapi.json is
//! called by another account with the first account's ids. Each one that
//! takes an id answers 404; none leaks the first account's data.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn another_accounts_ids_answer_404_on_every_endpoint() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let mut t = example_template();
    t["name"] = json!("Alice's secret template");
    let (_, created) = send(app.req(Method::POST, "/v1/templates", &alice).json(&t)).await;
    let template = created["id"].as_str().unwrap().to_owned();
    let body = json!({"template_id": template, "actual_image": base64::engine::general_purpose::STANDARD.encode(example_pdf())});
    let (_, job) = send(app.req(Method::POST, "/process-job", &alice).json(&body)).await;
    let job = job["job_id"].as_str().unwrap().to_owned();
    let prefix = alice[..10].to_owned();
    let secrets = [
        template.as_str(),
        job.as_str(),
        prefix.as_str(),
        "Alice's secret template",
    ];

    let (_, doc) = send(app.client.get(format!("{}/openapi.json", app.url))).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let takes_id = path.contains('{')
                || op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "job_id"))
                || ["/v1/job-results", "/process-job", "/v1/jobs/redeliver"]
                    .contains(&path.as_str());
            let url = path
                .replace("{id}", &template)
                .replace("{job_id}", &job)
                .replace("{prefix}", &prefix);
            let url = if path == "/job-status" || (path == "/v1/jobs" && method == Method::GET) {
                format!("{url}?job_id={job}")
            } else {
                url
            };
            let mut req = app.req(method.clone(), &url, &bob);
            req = match path.as_str() {
                "/v1/job-results" => req.json(&json!({"job_id": job, "result_format": "json"})),
                "/process-job" => req.json(&body),
                "/v1/jobs/redeliver" => {
                    req.json(&json!({"delivery": "failed", "template_id": template}))
                }
                "/v1/templates/{id}" if method == Method::PUT => req.json(&example_template()),
                _ => req,
            };
            let res = req.send().await.unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{method} {path} leaks {secret:?}: {text}"
                );
            }
            if takes_id && path != "/v1/jobs" {
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
                let body: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    body["error"]["code"]
                        .as_str()
                        .unwrap()
                        .ends_with("not_found"),
                    "{method} {path}: {text}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 14,
        "only {checked} id-taking operations were checked"
    );
    // Alice still sees all of it.
    let (s, _) = send(app.req(Method::GET, &format!("/job-status?job_id={job}"), &alice)).await;
    assert_eq!(s, StatusCode::OK);
}
