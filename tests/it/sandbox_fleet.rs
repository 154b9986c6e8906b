//! The `sandbox` command serving a fleet (`--clinics N`) as the fleet benchmark and a user meet it:
//! each organization answers its own key, a key of none gets 401, `/admin/fleet` counts them, and
//! neither the keys nor the records reach its output.

use crate::support::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The key given to the sandbox; organization i's is this followed by `-i`.
const FLEET_KEY: &str = "fleet-key-that-must-not-show";

async fn get_with_key(url: &str, key: &str) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .header("api", key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_thousand_clinics_each_answer_their_own_key_and_no_key_is_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Notifier::command(
        dir.path(),
        &[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--clinics",
            "1000",
            "--leads",
            "5",
            "--patients",
            "5",
            "--appointments",
            "5",
            "--churn-every",
            "0s",
            "--api-key",
            FLEET_KEY,
        ],
    )
    .spawn();
    let first = child
        .stdout_line(Duration::from_secs(60), |_| true)
        .await
        .unwrap_or_else(|| panic!("no first line; stderr:\n{}", child.stderr_text()));
    let port: u16 = first
        .strip_prefix("Clinicea sandbox on http://127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    assert!(first.contains("1000 organizations"), "{first}");
    let scheme = child
        .stdout_line(Duration::from_secs(10), |l| l.contains("followed by -i"))
        .await;
    assert!(
        scheme.is_some(),
        "the key scheme is printed:\n{}",
        child.stdout_text()
    );
    let base = format!("http://127.0.0.1:{port}");

    let (status, body) = get_with_key(
        &format!("{base}/api/v1/leads"),
        &format!("{FLEET_KEY}-1000"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    let (status, admin) = get_text(&format!("{base}/clinics/1000/admin/leads")).await;
    assert_eq!(status, 200);
    let admin: Value = serde_json::from_str(&admin).unwrap();
    assert_eq!(ids(&served), ids(&admin));
    assert_eq!(ids(&served).len(), 5);
    let (_, first_org) = get_text(&format!("{base}/admin/leads")).await;
    let first_org: Value = serde_json::from_str(&first_org).unwrap();
    assert_ne!(
        ids(&first_org),
        ids(&served),
        "organization 1 holds other records"
    );

    let (status, body) = get_with_key(&format!("{base}/api/v1/leads"), FLEET_KEY).await;
    assert_eq!((status, body.as_str()), (401, "Invalid API key"));

    let (status, fleet) = get_text(&format!("{base}/admin/fleet")).await;
    assert_eq!(status, 200);
    let fleet: Value = serde_json::from_str(&fleet).unwrap();
    assert_eq!(fleet["clinics"], 1000);
    assert_eq!(fleet["unrouted"], 1);
    assert_eq!(fleet["requests"]["leads"], 1);
    assert_eq!(fleet["organizations"][999]["requests"]["leads"], 1);
    assert_eq!(fleet["organizations"][0]["requests"], serde_json::json!({}));

    let stdout = child.stdout_text();
    let stderr = child.stderr_text();
    child.kill9().await;
    let email = served[0]["Email"].as_str().unwrap();
    for out in [&stdout, &stderr] {
        assert!(!out.contains(FLEET_KEY), "a key was echoed:\n{out}");
        assert!(!out.contains(email), "a record reached the output:\n{out}");
    }
}

#[test]
fn the_sandbox_refuses_a_clinic_count_out_of_range() {
    for n in ["0", "10001", "many"] {
        let out = Command::new(BIN)
            .args(["sandbox", "--listen", "127.0.0.1:0", "--clinics", n])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--clinics {n}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("from 1 to 10000"), "{stderr}");
    }
}
