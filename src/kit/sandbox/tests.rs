//! Tests of the sandbox, in process and over HTTP.

use super::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};

const KEY: &str = "sandbox-api-key";

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn opts() -> SandboxOptions {
    SandboxOptions {
        start: Some(start_time()),
        ..SandboxOptions::default()
    }
}

async fn spawn(opts: SandboxOptions) -> SandboxHandle {
    Sandbox::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `GET base + path_and_query` with the key in the `api` header (when given).
async fn get(h: &SandboxHandle, path_and_query: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path_and_query}", h.base_url()));
    if let Some(key) = key {
        req = req.header("api", key);
    }
    req.send().await.unwrap()
}

async fn get_list(h: &SandboxHandle, path_and_query: &str) -> Vec<Value> {
    let resp = get(h, path_and_query, Some(KEY)).await;
    assert_eq!(resp.status(), 200, "{path_and_query}");
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    resp.json().await.unwrap()
}

async fn assert_400(h: &SandboxHandle, path_and_query: &str) -> String {
    let resp = get(h, path_and_query, Some(KEY)).await;
    assert_eq!(resp.status(), 400, "{path_and_query}");
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let body = resp.text().await.unwrap();
    assert!(!body.is_empty());
    body
}

async fn assert_204(h: &SandboxHandle, path_and_query: &str) {
    let resp = get(h, path_and_query, Some(KEY)).await;
    assert_eq!(resp.status(), 204, "{path_and_query}");
    assert!(resp.bytes().await.unwrap().is_empty());
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn fixture_keys(json: &str) -> Vec<String> {
    let list: Vec<Value> = serde_json::from_str(json).unwrap();
    keys(&list[0])
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|r| r["ID"].as_str().unwrap().to_string())
        .collect()
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn without_times(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove("CreatedDatetime");
        map.remove("ModifiedDatetime");
    }
    v
}

#[tokio::test]
async fn v1_full_sync_is_two_pages_then_204() {
    let h = spawn(opts()).await;
    let page0 = get_list(&h, "/api/v1/leads?intPageNo=0").await;
    let page1 = get_list(&h, "/api/v1/leads?intPageNo=1").await;
    assert_eq!((page0.len(), page1.len()), (100, 37));
    assert_204(&h, "/api/v1/leads?intPageNo=2").await;
    assert_204(&h, "/api/v1/leads?intPageNo=9999999999").await;
    // No page parameter means page 0.
    assert_eq!(get_list(&h, "/api/v1/leads").await, page0);

    let all: Vec<Value> = page0.into_iter().chain(page1).collect();
    let all_ids = ids(&all);
    assert_eq!(all_ids.iter().collect::<HashSet<_>>().len(), 137);
    assert!(all_ids.iter().all(|id| is_guid(id)));
    let lead_keys = fixture_keys(include_str!("../../../tests/fixtures/leads-v1-page0.json"));
    for lead in &all {
        assert_eq!(keys(lead), lead_keys);
        let status = lead["DataStatusStr"].as_str().unwrap();
        assert!(["Added", "Modified"].contains(&status), "{status}");
        let modified = lead["ModifiedDatetime"].as_str().unwrap();
        assert_eq!(modified.len(), 19);
        assert!(lead["CreatedDatetime"].as_str().unwrap() <= modified);
    }
    // In change order; with a history of one hour before 10:00 UTC.
    let times: Vec<&str> = all
        .iter()
        .map(|l| l["ModifiedDatetime"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(times[0] >= "2026-11-29T09:00:00" && times[136] < "2026-11-29T10:00:00");
    // The same order the in-process view gives.
    assert_eq!(ids(&h.sandbox.records("leads")), all_ids);

    let patients = get_list(&h, "/api/v1/patients?intPageNo=0").await;
    assert_eq!(patients.len(), 12);
    let patient_keys = fixture_keys(include_str!("../../../tests/fixtures/patients-v1.json"));
    assert!(patients.iter().all(|p| keys(p) == patient_keys));
    assert_204(&h, "/api/v1/patients?intPageNo=1").await;
    assert_400(&h, "/api/v1/patients?intPageNo=-1").await;
    assert_400(&h, "/api/v1/patients?intPageNo=first").await;
    h.stop().await;
}

#[tokio::test]
async fn v3_paging_from_one_with_page_size() {
    let h = spawn(opts()).await;
    let all = get_list(&h, "/api/v3/appointments/getChanges").await;
    assert_eq!(all.len(), 42);
    let appt_keys = fixture_keys(include_str!(
        "../../../tests/fixtures/appointments-v3-getChanges.json"
    ));
    let patient_ids: HashSet<String> = ids(&h.sandbox.records("patients")).into_iter().collect();
    for a in &all {
        assert_eq!(keys(a), appt_keys);
        assert!(patient_ids.contains(a["PatientID"].as_str().unwrap()));
        let deleted = a["DataStatusValue"] == "Deleted";
        assert_eq!(a["IsDeleted"], json!(deleted));
    }
    let mut paged = Vec::new();
    for page in 1..=5 {
        let list = get_list(
            &h,
            &format!("/api/v3/appointments/getChanges?pageNo={page}&pageSize=10"),
        )
        .await;
        assert_eq!(list.len(), if page < 5 { 10 } else { 2 });
        paged.extend(list);
    }
    assert_eq!(ids(&paged), ids(&all));
    assert_204(&h, "/api/v3/appointments/getChanges?pageNo=6&pageSize=10").await;
    assert_204(&h, "/api/v3/appointments/getChanges?pageNo=2").await;
    assert_400(&h, "/api/v3/appointments/getChanges?pageNo=0").await;
    assert_400(&h, "/api/v3/appointments/getChanges?pageNo=-3").await;
    assert_400(&h, "/api/v3/appointments/getChanges?pageNo=1&pageSize=9").await;
    assert_400(&h, "/api/v3/appointments/getChanges?pageNo=1&pageSize=ten").await;
    h.stop().await;
}

#[tokio::test]
async fn since_filters_in_every_accepted_form() {
    let h = spawn(opts()).await;
    let expected: Vec<String> = h
        .sandbox
        .records("leads")
        .into_iter()
        .filter(|l| l["ModifiedDatetime"].as_str().unwrap() >= "2026-11-29T09:30:00")
        .map(|l| l["ID"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected.is_empty() && expected.len() < 137);
    for since in [
        "lastSyncTimestamp=2026-11-29T09:30:00",
        "lastSyncTimestamp=2026-11-29T14:30:00+05:00",
        "lastSyncTimestamp=2026-11-29T14:30:00%2B05:00",
        "lastSyncTimestamp=2026-11-29T14:30:00+0500",
        "lastSyncTimestamp=2026-11-29T09:30:00+0:00",
        "lastSyncTimestamp=2026-11-29T04:30:00-05:00",
        "lastSyncDate=2026-11-29T09:30:00",
        "lastsynctimestamp=2026-11-29T09:30:00",
    ] {
        let mut got = Vec::new();
        for page in 0..2 {
            let resp = get(
                &h,
                &format!("/api/v1/leads?{since}&intPageNo={page}"),
                Some(KEY),
            )
            .await;
            if resp.status() == 204 {
                break;
            }
            assert_eq!(resp.status(), 200, "{since}");
            got.extend(ids(&resp.json::<Vec<Value>>().await.unwrap()));
        }
        assert_eq!(got, expected, "{since}");
    }
    // Nothing changed after the start: an empty result is a 204.
    assert_204(&h, "/api/v1/leads?lastSyncTimestamp=2026-11-29T10:00:00").await;
    // The appointments feed reads its own parameter name.
    let appts = h.sandbox.records("appointments");
    let last = appts.last().unwrap()["ID"].as_str().unwrap().to_string();
    assert!(h.sandbox.delete("appointments", &last));
    let since = Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let fresh = h
        .sandbox
        .insert("appointments", json!({"AppointmentStatus": "Scheduled"}));
    let list = get_list(
        &h,
        &format!("/api/v3/appointments/getChanges?lastSyncDTime={since}&pageNo=1&pageSize=10"),
    )
    .await;
    assert_eq!(
        ids(&list),
        vec![last, fresh["ID"].as_str().unwrap().to_string()]
    );
    assert_eq!(list[0]["DataStatusValue"], "Deleted");
    assert_eq!(list[0]["IsDeleted"], true);
    assert_eq!(list[1]["DataStatusValue"], "Added");
    assert_eq!(list[1]["IsDeleted"], false);
    h.stop().await;
}

#[tokio::test]
async fn offsetless_timestamps_use_the_sandbox_zone() {
    let h = spawn(SandboxOptions {
        timezone: "Asia/Karachi".parse().unwrap(),
        ..opts()
    })
    .await;
    let leads = h.sandbox.records("leads");
    // 09:00-10:00 UTC is 14:00-15:00 in Karachi.
    assert!(leads
        .iter()
        .all(|l| l["ModifiedDatetime"].as_str().unwrap() >= "2026-11-29T14:00:00"));
    let expected: Vec<String> = leads
        .iter()
        .filter(|l| l["ModifiedDatetime"].as_str().unwrap() >= "2026-11-29T14:30:00")
        .map(|l| l["ID"].as_str().unwrap().to_string())
        .collect();
    let local = get(
        &h,
        "/api/v1/leads?lastSyncTimestamp=2026-11-29T14:30:00",
        Some(KEY),
    )
    .await;
    let utc = get(
        &h,
        "/api/v1/leads?lastSyncTimestamp=2026-11-29T09:30:00+00:00",
        Some(KEY),
    )
    .await;
    let local = ids(&local.json::<Vec<Value>>().await.unwrap());
    let utc = ids(&utc.json::<Vec<Value>>().await.unwrap());
    assert_eq!(local, expected[..expected.len().min(100)].to_vec());
    assert_eq!(local, utc);
    h.stop().await;
}

#[tokio::test]
async fn bad_since_values_get_400() {
    let h = spawn(opts()).await;
    let body = assert_400(
        &h,
        "/api/v1/leads?lastSyncTimestamp=2026-11-29T09:30:00.000",
    )
    .await;
    assert!(body.contains("milliseconds"), "{body}");
    let body = assert_400(&h, "/api/v1/leads?lastSyncTimestamp=2026-11-29T09:30:00Z").await;
    assert!(body.contains('Z'), "{body}");
    let body = assert_400(
        &h,
        "/api/v1/leads?lastSyncTimestamp=2026-11-29T09%3A30%3A00",
    )
    .await;
    assert!(body.contains("%3A"), "{body}");
    assert_400(
        &h,
        "/api/v1/patients?lastSyncDate=2026-11-29T09%3a30%3a00%2B05%3A00",
    )
    .await;
    assert_400(
        &h,
        "/api/v3/appointments/getChanges?lastSyncDTime=2026-11-29T09%3A30%3A00&pageNo=1",
    )
    .await;
    assert_400(&h, "/api/v1/leads?lastSyncTimestamp=29/11/2026").await;
    assert_400(
        &h,
        "/api/v3/appointments/getChanges?lastSyncDTime=2026-11-29T09:30:00.5",
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn auth_accepts_three_forms_and_refuses_the_rest() {
    let h = spawn(opts()).await;
    for resp in [
        get(&h, "/api/v1/leads", None).await,
        get(&h, "/api/v1/leads", Some("wrong")).await,
        get(&h, "/api/v1/leads?api_key=wrong", None).await,
        get(&h, "/api/v3/appointments/getChanges", Some("")).await,
    ] {
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(resp.text().await.unwrap(), INVALID_KEY);
    }
    let c = client();
    let url = format!("{}/api/v1/patients", h.base_url());
    let by_header = c.get(&url).header("api", KEY).send().await.unwrap();
    let by_api_key_header = c.get(&url).header("api_key", KEY).send().await.unwrap();
    let by_query = c.get(format!("{url}?api_key={KEY}")).send().await.unwrap();
    for resp in [by_header, by_api_key_header, by_query] {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 12);
    }
    let stats = h.sandbox.stats();
    assert_eq!(stats.unauthorized, 4);
    assert_eq!(stats.requests["leads"], 3);
    assert_eq!(stats.requests["patients"], 3);
    assert_eq!(stats.requests["appointments"], 1);
    h.stop().await;
}

async fn login(h: &SandboxHandle, key: &str, user: &str, pwd: &str) -> reqwest::Response {
    get(
        h,
        &format!("{LOGIN_PATH}?apiKey={key}&loginUserName={user}&pwd={pwd}"),
        None,
    )
    .await
}

#[tokio::test]
async fn login_tokens_replace_each_other_and_expire() {
    let h = spawn(SandboxOptions {
        token_ttl: Duration::from_millis(400),
        ..opts()
    })
    .await;
    let bad_key = login(&h, "nope", "sandbox", "sandbox").await;
    assert_eq!(bad_key.status(), 401);
    assert_eq!(bad_key.text().await.unwrap(), INVALID_KEY);
    assert_eq!(login(&h, KEY, "sandbox", "wrong").await.status(), 401);
    assert_eq!(login(&h, KEY, "someone", "sandbox").await.status(), 401);

    let resp = login(&h, KEY, "sandbox", "sandbox").await;
    assert_eq!(resp.status(), 200);
    let first: String = resp.json().await.unwrap();
    assert!(first.len() >= 32 && first != KEY);
    assert_eq!(get(&h, "/api/v1/leads", Some(&first)).await.status(), 200);
    let by_query = get(&h, &format!("/api/v1/leads?api_key={first}"), None).await;
    assert_eq!(by_query.status(), 200);

    let second: String = login(&h, KEY, "sandbox", "sandbox")
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(get(&h, "/api/v1/leads", Some(&first)).await.status(), 401);
    assert_eq!(get(&h, "/api/v1/leads", Some(&second)).await.status(), 200);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let expired = get(&h, "/api/v1/leads", Some(&second)).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(expired.text().await.unwrap(), INVALID_KEY);
    // The key itself never expires.
    assert_eq!(get(&h, "/api/v1/leads", Some(KEY)).await.status(), 200);
    assert_eq!(h.sandbox.stats().logins, 2);
    h.stop().await;
}

#[tokio::test]
async fn status_faults_hit_the_next_requests_before_auth() {
    let h = spawn(opts()).await;
    let resp = client()
        .post(format!("{}/admin/faults", h.base_url()))
        .json(&json!({"count": 2, "status": 429, "retry_after": 1, "resource": "leads"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Other resources are not affected.
    assert_eq!(get(&h, "/api/v1/patients", Some(KEY)).await.status(), 200);
    for key in [Some(KEY), None] {
        let resp = get(&h, "/api/v1/leads", key).await;
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "1");
        assert_eq!(resp.text().await.unwrap(), "Too Many Requests");
    }
    assert_eq!(get(&h, "/api/v1/leads", Some(KEY)).await.status(), 200);

    h.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 503,
            retry_after: None,
            body: "down for maintenance".into(),
        })
        .times(1),
    );
    let resp = get(&h, "/api/v3/appointments/getChanges", Some(KEY)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get(RETRY_AFTER).is_none());
    assert_eq!(resp.text().await.unwrap(), "down for maintenance");
    let stats = h.sandbox.stats();
    assert_eq!(stats.faults_served, 3);
    assert_eq!(stats.pending_faults, 0);
    assert_eq!(stats.unauthorized, 0);
    h.stop().await;
}

#[tokio::test]
async fn body_and_stall_faults() {
    let h = spawn(opts()).await;
    let c = client();
    let faults = format!("{}/admin/faults", h.base_url());
    for spec in [
        json!({"count": 1, "malformed": true}),
        json!({"count": 1, "object": true}),
        json!({"count": 1, "stall_ms": 300}),
    ] {
        let resp = c.post(&faults).json(&spec).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{spec}");
    }
    assert_eq!(h.sandbox.stats().pending_faults, 3);

    let malformed = get(&h, "/api/v1/leads", Some(KEY)).await;
    assert_eq!(malformed.status(), 200);
    let body = malformed.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    let object = get(&h, "/api/v1/leads", Some(KEY)).await;
    assert_eq!(object.status(), 200);
    assert!(object.json::<Value>().await.unwrap().is_object());

    let started = Instant::now();
    let stalled = get(&h, "/api/v1/leads", Some(KEY)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(stalled.status(), 200);
    assert_eq!(stalled.json::<Vec<Value>>().await.unwrap().len(), 100);

    h.sandbox
        .inject_faults(Fault::new(FaultKind::ResetConnection).on("appointments"));
    let err = client()
        .get(format!("{}/api/v3/appointments/getChanges", h.base_url()))
        .header("api", KEY)
        .send()
        .await
        .expect_err("the connection is dropped without a response");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let resp = c
        .post(&faults)
        .json(&json!({"reset": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dropped = client()
        .get(format!("{}/api/v1/patients", h.base_url()))
        .header("api", KEY)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    // The next request is served normally.
    assert_eq!(get(&h, "/api/v1/patients", Some(KEY)).await.status(), 200);

    for bad in [
        json!({"count": 1}),
        json!({"reset": true, "object": true}),
        json!({"count": 1, "status": 429, "malformed": true}),
        json!({"count": 1, "status": 42}),
        json!({"count": 0, "status": 500}),
        json!({"count": 1, "status": 500, "resource": "bills"}),
        json!({"count": 1, "stall_ms": 10, "retry_after": 3}),
        json!({"count": 1, "statuss": 500}),
    ] {
        let resp = c.post(&faults).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(h.sandbox.stats().faults_served, 5);
    h.stop().await;
}

#[tokio::test]
async fn a_stall_ends_when_the_sandbox_stops() {
    let h = spawn(opts()).await;
    h.sandbox
        .inject_faults(Fault::new(FaultKind::Stall(Duration::from_secs(30))).on("patients"));
    let url = format!("{}/api/v1/patients", h.base_url());
    let pending = tokio::spawn(async move { client().get(url).header("api", KEY).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), h.stop())
        .await
        .expect("stop waits for no stall");
    assert!(started.elapsed() < Duration::from_secs(5));
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn admin_endpoints_change_records() {
    let h = spawn(opts()).await;
    let c = client();
    let base = h.base_url();
    let since = Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();

    let resp = c
        .post(format!("{base}/admin/leads"))
        .json(&json!({"FirstName": "Hira", "LastName": "Naqvi", "Email": "hira.naqvi@example.com", "Source": "Website"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let added: Value = resp.json().await.unwrap();
    let id = added["ID"].as_str().unwrap().to_string();
    assert!(is_guid(&id));
    assert_eq!(added["DataStatusStr"], "Added");
    assert_eq!(added["FirstName"], "Hira");
    assert_eq!(added["CreatedDatetime"], added["ModifiedDatetime"]);

    let changes = get_list(&h, &format!("/api/v1/leads?lastSyncTimestamp={since}")).await;
    assert_eq!(changes, vec![added.clone()]);

    let resp = c
        .patch(format!("{base}/admin/leads/{id}"))
        .json(&json!({"LeadStatus": "HOT", "ID": "ignored", "DataStatusStr": "None"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let modified: Value = resp.json().await.unwrap();
    assert_eq!(modified["ID"], id.as_str());
    assert_eq!(modified["LeadStatus"], "HOT");
    assert_eq!(modified["FirstName"], "Hira");
    assert_eq!(modified["DataStatusStr"], "Modified");
    assert!(modified["ModifiedDatetime"].as_str() >= added["ModifiedDatetime"].as_str());
    // Created and edited before a poll: it arrives once, as Modified.
    let changes = get_list(&h, &format!("/api/v1/leads?lastSyncTimestamp={since}")).await;
    assert_eq!(changes, vec![modified.clone()]);

    let resp = c
        .delete(format!("{base}/admin/leads/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let changes = get_list(&h, &format!("/api/v1/leads?lastSyncTimestamp={since}")).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["DataStatusStr"], "Deleted");
    assert_eq!(changes[0]["LeadStatus"], "HOT");
    assert_eq!(h.sandbox.records("leads").len(), 138);
    // Deleted records can be neither deleted nor edited again.
    let again = c
        .delete(format!("{base}/admin/leads/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let patch = c
        .patch(format!("{base}/admin/leads/{id}"))
        .json(&json!({"Notes": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404);

    // Errors.
    let unknown = c
        .post(format!("{base}/admin/bills"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let not_object = c
        .post(format!("{base}/admin/patients"))
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(not_object.status(), 400);
    let not_json = c
        .post(format!("{base}/admin/patients"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let missing = c
        .patch(format!(
            "{base}/admin/patients/00000000-0000-0000-0000-000000000000"
        ))
        .json(&json!({"City": "Lahore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // An appointment with its own id, deleted through HTTP.
    let appt_id = "11111111-2222-3333-4444-555555555555";
    let resp = c
        .post(format!("{base}/admin/appointments"))
        .json(&json!({"ID": appt_id, "AppointmentStatus": "Scheduled", "IsDeleted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let appt: Value = resp.json().await.unwrap();
    assert_eq!(appt["IsDeleted"], false);
    assert_eq!(appt["DataStatusValue"], "Added");
    assert!(appt.get("ModifiedDatetime").is_none());
    let resp = c
        .delete(format!("{base}/admin/appointments/{appt_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let listed = get_list(
        &h,
        &format!("/api/v3/appointments/getChanges?lastSyncDTime={since}&pageNo=1"),
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["IsDeleted"], true);
    assert_eq!(listed[0]["DataStatusValue"], "Deleted");

    // The admin read endpoints and stats.
    let one: Value = c
        .get(format!("{base}/admin/appointments/{appt_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one, listed[0]);
    let all: Vec<Value> = c
        .get(format!("{base}/admin/patients"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 12);
    let stats: Value = c
        .get(format!("{base}/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"]["leads"], 3);
    assert_eq!(stats["requests"]["appointments"], 1);
    assert_eq!(stats["records"]["appointments"], 43);
    h.stop().await;
}

#[tokio::test]
async fn admin_churn_endpoint_reports_its_changes() {
    let h = spawn(opts()).await;
    let resp = client()
        .post(format!("{}/admin/churn", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let changes: Vec<Value> = resp.json().await.unwrap();
    let added_leads = changes
        .iter()
        .filter(|c| c["resource"] == "leads" && c["op"] == "added")
        .count();
    assert!((1..=3).contains(&added_leads));
    assert_eq!(h.sandbox.records("leads").len(), 137 + added_leads);
    for c in &changes {
        let record = h
            .sandbox
            .record(c["resource"].as_str().unwrap(), c["id"].as_str().unwrap())
            .unwrap();
        let flag = record
            .get("DataStatusStr")
            .or(record.get("DataStatusValue"))
            .and_then(Value::as_str)
            .unwrap();
        // A later change in the same round may have overtaken an earlier one.
        let possible: &[&str] = match c["op"].as_str().unwrap() {
            "added" => &["Added", "Modified", "Deleted"],
            "modified" => &["Modified", "Deleted"],
            "deleted" => &["Deleted"],
            other => panic!("unknown op {other}"),
        };
        assert!(possible.contains(&flag), "{flag} after {c}");
    }
    h.stop().await;
}

#[test]
fn same_seed_same_records_and_churn() {
    let a = Sandbox::new(opts());
    let b = Sandbox::new(opts());
    let c = Sandbox::new(SandboxOptions { seed: 7, ..opts() });
    for r in ["leads", "patients", "appointments"] {
        assert_eq!(a.records(r), b.records(r), "{r}");
        assert_ne!(ids(&a.records(r)), ids(&c.records(r)), "{r}");
    }
    let mut ops_seen = HashSet::new();
    for _ in 0..40 {
        let ca = a.churn_once();
        let cb = b.churn_once();
        assert_eq!(ca, cb);
        ops_seen.extend(ca.iter().map(|(_, _, op)| *op));
        // Insertions through the admin API draw ids from the same seeded generator.
        let ia = a.insert("patients", json!({"FirstName": "Zara"}));
        let ib = b.insert("patients", json!({"FirstName": "Zara"}));
        assert_eq!(ia["ID"], ib["ID"]);
    }
    assert_eq!(
        ops_seen,
        HashSet::from(["added", "modified", "deleted"]),
        "40 rounds show every kind of change"
    );
    for r in ["leads", "patients", "appointments"] {
        let ra: Vec<Value> = a.records(r).into_iter().map(without_times).collect();
        let rb: Vec<Value> = b.records(r).into_iter().map(without_times).collect();
        assert_eq!(ra, rb, "{r}");
    }
}

#[test]
fn churn_moves_appointments_along_the_flow() {
    let sb = Sandbox::new(opts());
    let allowed: HashSet<(&str, &str)> = HashSet::from([
        ("Scheduled", "Confirmed"),
        ("Scheduled", "Cancelled"),
        ("Scheduled", "No Show"),
        ("Confirmed", "Arrived"),
        ("Confirmed", "Cancelled"),
        ("Confirmed", "No Show"),
        ("Arrived", "Engaged"),
        ("Engaged", "Check Out"),
        ("Check Out", "Completed"),
    ]);
    let mut moved = 0;
    for _ in 0..10 {
        let snapshot: HashMap<String, String> = sb
            .records("appointments")
            .into_iter()
            .map(|a| {
                (
                    a["ID"].as_str().unwrap().to_string(),
                    a["AppointmentStatus"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let changes = sb.churn_once();
        let mut touched: HashMap<&str, usize> = HashMap::new();
        for (resource, id, _) in &changes {
            if resource == "appointments" {
                *touched.entry(id.as_str()).or_default() += 1;
            }
        }
        for (resource, id, op) in &changes {
            if resource != "appointments" || *op != "modified" || touched[id.as_str()] != 1 {
                continue;
            }
            let now = sb.record("appointments", id).unwrap();
            let from = snapshot[id].as_str();
            let to = now["AppointmentStatus"].as_str().unwrap();
            assert!(allowed.contains(&(from, to)), "{from} -> {to}");
            assert_eq!(now["DataStatusValue"], "Modified");
            moved += 1;
        }
    }
    assert!(moved >= 5, "only {moved} appointments moved");
}

#[test]
fn insert_and_modify_in_process() {
    let sb = Sandbox::new(opts());
    let rec = sb.insert("patients", json!({"ID": "p-1", "FullName": "Nida Farooq"}));
    assert_eq!(rec["DataStatusStr"], "Added");
    assert_eq!(keys(&rec)[0], "ID");
    assert_eq!(keys(&rec).last().unwrap(), "DataStatusStr");
    let again = sb.insert("patients", json!({"ID": "p-1", "FullName": "Nida F."}));
    assert_eq!(again["DataStatusStr"], "Modified");
    assert_eq!(again["CreatedDatetime"], rec["CreatedDatetime"]);
    let explicit = sb
        .modify(
            "patients",
            "p-1",
            json!({"City": "Multan", "ModifiedDatetime": "2026-01-01T00:00:00"}),
        )
        .unwrap();
    assert_eq!(explicit["ModifiedDatetime"], "2026-01-01T00:00:00");
    assert_eq!(sb.records("patients").last().unwrap(), &explicit);
    assert!(sb
        .modify("patients", "p-1", json!("not an object"))
        .is_none());
    assert!(sb.modify("bills", "p-1", json!({})).is_none());
    assert!(!sb.delete("bills", "p-1"));
    assert!(sb.records("bills").is_empty());
    assert_eq!(
        sb.try_insert("bills", json!({})),
        Err(SandboxError::UnknownResource("bills".into()))
    );
    assert!(matches!(
        sb.try_insert("leads", json!({"ID": 5})),
        Err(SandboxError::BadRecord(_))
    ));
    assert!(sb.delete("patients", "p-1"));
    assert!(!sb.delete("patients", "p-1"));
    assert_eq!(sb.stats().records["patients"], 13);
}

#[tokio::test]
async fn churn_runs_on_a_timer_while_serving() {
    let h = spawn(SandboxOptions {
        churn_every: Some(Duration::from_millis(40)),
        ..opts()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.sandbox.records("leads").len() >= 137 + 3);
    let addr = h.addr;
    h.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn deep_pages_of_a_large_feed_are_fast() {
    let h = spawn(SandboxOptions {
        leads: 100_000,
        patients: 0,
        appointments: 0,
        ..opts()
    })
    .await;
    // Edits spread through the feed so the index has superseded slots to skip.
    let edited: Vec<String> = ids(&h.sandbox.records("leads"))
        .into_iter()
        .step_by(1000)
        .collect();
    for id in &edited {
        h.sandbox
            .modify("leads", id, json!({"Notes": "edited"}))
            .unwrap();
    }
    let started = Instant::now();
    for page in [0, 500, 998, 999] {
        let list = get_list(&h, &format!("/api/v1/leads?intPageNo={page}")).await;
        assert_eq!(list.len(), 100);
    }
    let last = get_list(&h, "/api/v1/leads?intPageNo=999").await;
    assert_eq!(ids(&last), edited);
    assert_204(&h, "/api/v1/leads?intPageNo=1000").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
}

#[test]
fn debug_output_hides_secrets_and_records() {
    let o = SandboxOptions {
        api_key: "key-that-must-not-show".into(),
        password: "pw-that-must-not-show".into(),
        ..opts()
    };
    let shown = format!("{o:?}");
    assert!(!shown.contains("must-not-show"), "{shown}");
    let sb = Sandbox::new(o);
    let first = sb.records("leads")[0]["Email"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = format!("{sb:?}");
    assert!(
        !shown.contains(&first) && !shown.contains("must-not-show"),
        "{shown}"
    );
    assert!(shown.contains("137"), "{shown}");
}

#[tokio::test]
async fn feeds_order_by_id_or_reshuffle_for_every_request() {
    let h = spawn(SandboxOptions {
        order: Order::Id,
        ..opts()
    })
    .await;
    let page0 = ids(&get_list(&h, "/api/v1/leads?intPageNo=0").await);
    let page1 = ids(&get_list(&h, "/api/v1/leads?intPageNo=1").await);
    let all: Vec<String> = page0.iter().chain(&page1).cloned().collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "by id");
    assert_eq!(all.len(), 137);

    h.sandbox.set_order(Order::Unordered);
    let a = ids(&get_list(&h, "/api/v1/leads?intPageNo=0").await);
    let b = ids(&get_list(&h, "/api/v1/leads?intPageNo=0").await);
    assert_eq!(a.len(), 100);
    assert_ne!(a, b, "a new shuffle for every request");
    h.stop().await;

    // The same seed and the same requests give the same shuffles.
    let again = spawn(SandboxOptions {
        order: Order::Unordered,
        ..opts()
    })
    .await;
    let first = |h: SandboxHandle| async move {
        let v = ids(&get_list(&h, "/api/v1/leads?intPageNo=0").await);
        h.stop().await;
        v
    };
    let twin = spawn(SandboxOptions {
        order: Order::Unordered,
        ..opts()
    })
    .await;
    assert_eq!(first(again).await, first(twin).await);
}

#[tokio::test]
async fn page_edits_land_after_each_page_request() {
    let h = spawn(SandboxOptions {
        page_edits: 3,
        ..opts()
    })
    .await;
    let before = h.sandbox.records("leads");
    let page0 = get_list(&h, "/api/v1/leads?intPageNo=0").await;
    assert_eq!(
        page0,
        before[..100].to_vec(),
        "the page is served as it was"
    );
    let after = h.sandbox.records("leads");
    let new_versions = after.iter().filter(|r| !before.contains(r)).count();
    assert!(
        (1..=3).contains(&new_versions),
        "{new_versions} records changed"
    );
    // Admin requests are no page requests: nothing moves.
    let stats = client()
        .get(format!("{}/admin/stats", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    assert_eq!(after, h.sandbox.records("leads"));
    h.stop().await;
}

#[tokio::test]
async fn the_clock_offset_moves_the_date_header_and_the_change_times() {
    let h = spawn(SandboxOptions {
        clock_offset: TimeDelta::minutes(-10),
        ..SandboxOptions::default()
    })
    .await;
    let resp = get(&h, "/api/v1/leads?intPageNo=0", Some(KEY)).await;
    let date = resp.headers()["date"].to_str().unwrap().to_string();
    let date = DateTime::parse_from_rfc2822(&date)
        .unwrap()
        .with_timezone(&Utc);
    let expected = Utc::now() - TimeDelta::minutes(10);
    assert!(
        (date - expected).num_seconds().abs() <= 2,
        "{date} vs {expected}"
    );
    let id = h.sandbox.records("leads")[0]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let edited = h
        .sandbox
        .modify("leads", &id, json!({"Notes": "x"}))
        .unwrap();
    let modified = edited["ModifiedDatetime"].as_str().unwrap();
    let modified = chrono::NaiveDateTime::parse_from_str(modified, gen::TS_FORMAT)
        .unwrap()
        .and_utc();
    assert!((modified - expected).num_seconds().abs() <= 2, "{modified}");
    // Errors and admin answers carry it too.
    let resp = get(&h, "/api/v1/leads", Some("wrong")).await;
    assert_eq!(resp.status(), 401);
    let date = resp.headers()["date"].to_str().unwrap().to_string();
    let date = DateTime::parse_from_rfc2822(&date)
        .unwrap()
        .with_timezone(&Utc);
    assert!((date - expected).num_seconds().abs() <= 2);

    // The admin API reads and changes the mode.
    let c = client();
    let url = format!("{}/admin/mode", h.base_url());
    let mode: Mode = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        mode,
        Mode {
            order: Order::Modified,
            page_edits: 0,
            clock_offset_secs: -600
        }
    );
    let resp = c
        .post(&url)
        .json(&json!({"order": "unordered", "page_edits": 2, "clock_offset_secs": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        h.sandbox.mode(),
        Mode {
            order: Order::Unordered,
            page_edits: 2,
            clock_offset_secs: 300
        }
    );
    for bad in [
        json!({"order": "random"}),
        json!({"speed": 1}),
        json!({"clock_offset_secs": 9_000_000_000i64}),
    ] {
        let resp = c.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(resp.text().await.unwrap().starts_with("Invalid mode"));
    }
    h.stop().await;
}

/// Options for a small fleet of `n` organizations.
fn fleet_opts(n: usize) -> SandboxOptions {
    SandboxOptions {
        clinics: n,
        leads: 5,
        patients: 5,
        appointments: 5,
        ..opts()
    }
}

/// `GET` with `key`, expecting a JSON list.
async fn list_as(h: &SandboxHandle, path_and_query: &str, key: &str) -> Vec<Value> {
    let resp = get(h, path_and_query, Some(key)).await;
    assert_eq!(resp.status(), 200, "{path_and_query}");
    resp.json().await.unwrap()
}

async fn admin_json(h: &SandboxHandle, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{path}", h.base_url()))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn one_clinic_is_the_single_sandbox_as_before() {
    let h = spawn(opts()).await;
    assert_eq!(h.api_key(1), KEY);
    assert_eq!(h.clinic(1).records("leads"), h.sandbox.records("leads"));
    assert_eq!(
        h.sandbox.records("leads"),
        Sandbox::new(opts()).records("leads")
    );
    // The fleet scheme's keys are nobody's here; the refusal is the organization's own.
    let resp = get(&h, "/api/v1/leads", Some("sandbox-api-key-1")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), INVALID_KEY);
    assert_eq!(get(&h, "/api/v1/leads", Some(KEY)).await.status(), 200);
    let stats = h.sandbox.stats();
    assert_eq!((stats.unauthorized, stats.requests["leads"]), (1, 2));

    let (status, admin) = admin_json(&h, "/admin/stats").await;
    assert_eq!(status, 200);
    assert_eq!(admin, admin_json(&h, "/clinics/1/admin/stats").await.1);
    assert_eq!(admin_json(&h, "/clinics/2/admin/stats").await.0, 404);
    let fleet = h.fleet_stats();
    assert_eq!((fleet.clinics, fleet.unrouted), (1, 0));
    assert_eq!(fleet.organizations, vec![h.sandbox.stats()]);
    h.stop().await;
}

#[tokio::test]
async fn each_clinic_answers_its_own_key_with_its_own_records() {
    let h = spawn(fleet_opts(3)).await;
    assert_eq!(h.api_key(2), "sandbox-api-key-2");
    let mut seen = HashSet::new();
    for i in 1..=3 {
        for r in ["leads", "patients", "appointments"] {
            let path = Resource::from_name(r).unwrap().path();
            let served = ids(&list_as(&h, path, h.api_key(i)).await);
            assert_eq!(served, ids(&h.clinic(i).records(r)), "clinic {i} {r}");
            assert_eq!(served.len(), 5);
            assert!(
                seen.insert(served),
                "clinic {i} {r} repeats another's records"
            );
        }
    }
    // Organization 1 of a fleet holds what a lone sandbox with the same seed holds.
    assert_eq!(
        h.clinic(1).records("leads"),
        Sandbox::new(SandboxOptions {
            clinics: 1,
            ..fleet_opts(3)
        })
        .records("leads")
    );
    // The key picks the organization in each of its three places.
    let c = client();
    let url = format!("{}/api/v1/patients", h.base_url());
    let key3 = h.api_key(3);
    let expected = ids(&h.clinic(3).records("patients"));
    for req in [
        c.get(&url).header("api_key", key3),
        c.get(format!("{url}?api_key={key3}")),
        c.get(&url).header("api", "wrong").header("api_key", key3),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(ids(&resp.json::<Vec<Value>>().await.unwrap()), expected);
    }
    // A key of no organization, the bare key included, gets the usual 401 and reaches none.
    let before: Vec<Stats> = (1..=3).map(|i| h.clinic(i).stats()).collect();
    for key in [
        KEY,
        "sandbox-api-key-0",
        "sandbox-api-key-4",
        "sandbox-api-key-02",
        "",
    ] {
        let resp = get(&h, "/api/v1/leads", Some(key)).await;
        assert_eq!(resp.status(), 401, "{key}");
        assert_eq!(resp.text().await.unwrap(), INVALID_KEY);
    }
    assert_eq!(get(&h, "/api/v1/leads", None).await.status(), 401);
    let after: Vec<Stats> = (1..=3).map(|i| h.clinic(i).stats()).collect();
    assert_eq!(before, after);
    assert_eq!(h.fleet_stats().unrouted, 6);
    // Neither the handle nor the options show a key.
    let shown = format!("{h:?} {:?}", fleet_opts(3));
    assert!(!shown.contains("sandbox-api-key"), "{shown}");
    h.stop().await;
}

#[tokio::test]
async fn the_same_record_id_lives_apart_in_two_clinics() {
    let h = spawn(fleet_opts(3)).await;
    let c = client();
    let base = h.base_url();
    let id = "0e0e0e0e-1111-2222-3333-444444444444";
    for (path, name) in [("/admin/leads", "Hira"), ("/clinics/2/admin/leads", "Sara")] {
        let resp = c
            .post(format!("{base}{path}"))
            .json(&json!({"ID": id, "FirstName": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{path}");
        let rec: Value = resp.json().await.unwrap();
        assert_eq!(rec["DataStatusStr"], "Added", "new in each organization");
    }
    let name_in = |i: usize| {
        h.clinic(i)
            .record("leads", id)
            .map(|r| r["FirstName"].clone())
    };
    assert_eq!(name_in(1), Some(json!("Hira")));
    assert_eq!(name_in(2), Some(json!("Sara")));
    assert_eq!(name_in(3), None);
    let (status, rec) = admin_json(&h, &format!("/clinics/2/admin/leads/{id}")).await;
    assert_eq!((status, &rec["FirstName"]), (200, &json!("Sara")));
    assert_eq!(
        admin_json(&h, &format!("/clinics/3/admin/leads/{id}"))
            .await
            .0,
        404
    );
    let served = list_as(&h, "/api/v1/leads", h.api_key(2)).await;
    assert_eq!(served.last().unwrap()["FirstName"], "Sara");
    // Churn is each organization's own.
    let org1 = h.clinic(1).records("leads");
    assert!(!h.clinic(2).churn_once().is_empty());
    assert_eq!(h.clinic(1).records("leads"), org1);
    h.stop().await;
}

#[tokio::test]
async fn admin_endpoints_act_on_their_clinic() {
    let h = spawn(fleet_opts(3)).await;
    let c = client();
    let base = h.base_url();
    let resp = c
        .post(format!("{base}/clinics/2/admin/faults"))
        .json(&json!({"count": 1, "status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        get(&h, "/api/v1/leads", Some(h.api_key(1))).await.status(),
        200
    );
    assert_eq!(
        get(&h, "/api/v1/leads", Some(h.api_key(3))).await.status(),
        200
    );
    assert_eq!(
        get(&h, "/api/v1/leads", Some(h.api_key(2))).await.status(),
        503
    );
    assert_eq!(
        get(&h, "/api/v1/leads", Some(h.api_key(2))).await.status(),
        200
    );
    assert_eq!(h.clinic(2).stats().faults_served, 1);
    assert_eq!(h.clinic(1).stats().faults_served, 0);

    // Organization 3's clock runs a day ahead; its answers say so, the others' do not.
    let resp = c
        .post(format!("{base}/clinics/3/admin/mode"))
        .json(&json!({"clock_offset_secs": 86_400}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.clinic(3).mode().clock_offset_secs, 86_400);
    assert_eq!(h.clinic(1).mode().clock_offset_secs, 0);
    let date_of = |resp: &reqwest::Response| {
        DateTime::parse_from_rfc2822(resp.headers()["date"].to_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let ahead = date_of(&get(&h, "/api/v1/leads", Some(h.api_key(3))).await);
    let home = date_of(&get(&h, "/api/v1/leads", Some(h.api_key(1))).await);
    assert!(
        (ahead - home - TimeDelta::days(1)).num_seconds().abs() <= 2,
        "{ahead} {home}"
    );
    let admin_date = date_of(
        &c.get(format!("{base}/clinics/3/admin/stats"))
            .send()
            .await
            .unwrap(),
    );
    assert!((admin_date - ahead).num_seconds().abs() <= 2);

    let (status, stats) = admin_json(&h, "/clinics/2/admin/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["requests"]["leads"], 2);
    assert_eq!(
        admin_json(&h, "/admin/stats").await.1["requests"]["leads"],
        2
    );
    for bad in [
        "/clinics/0/admin/stats",
        "/clinics/4/admin/stats",
        "/clinics/x/admin/stats",
    ] {
        let (status, body) = admin_json(&h, bad).await;
        assert_eq!(status, 404, "{bad}");
        assert!(body.as_str().unwrap().contains("1 to 3"), "{body}");
    }
    h.stop().await;
}

#[tokio::test]
async fn each_clinic_logs_in_with_its_own_user_and_its_token_finds_it() {
    let h = spawn(fleet_opts(3)).await;
    let key2 = h.api_key(2).to_string();
    assert_eq!(login(&h, &key2, "sandbox-1", "sandbox").await.status(), 401);
    assert_eq!(login(&h, &key2, "sandbox", "sandbox").await.status(), 401);
    assert_eq!(login(&h, KEY, "sandbox-2", "sandbox").await.status(), 401);
    let resp = login(&h, &key2, "sandbox-2", "sandbox").await;
    assert_eq!(resp.status(), 200);
    let first: String = resp.json().await.unwrap();
    let served = ids(&list_as(&h, "/api/v1/leads", &first).await);
    assert_eq!(served, ids(&h.clinic(2).records("leads")));
    let by_query = get(&h, &format!("/api/v1/leads?api_key={first}"), None).await;
    assert_eq!(by_query.status(), 200);

    let second: String = login(&h, &key2, "sandbox-2", "sandbox")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(get(&h, "/api/v1/leads", Some(&first)).await.status(), 401);
    assert_eq!(get(&h, "/api/v1/leads", Some(&second)).await.status(), 200);
    assert_eq!(h.clinic(2).stats().logins, 2);
    assert_eq!(h.clinic(1).stats().logins, 0);
    h.stop().await;
}

#[tokio::test]
async fn the_fleet_endpoint_counts_requests_per_clinic_and_arrivals_per_second() {
    let h = spawn(fleet_opts(3)).await;
    for _ in 0..2 {
        list_as(&h, "/api/v1/leads", h.api_key(2)).await;
    }
    list_as(&h, "/api/v3/appointments/getChanges", h.api_key(3)).await;
    assert_eq!(
        get(&h, "/api/v1/patients", Some("nobody")).await.status(),
        401
    );

    let (status, fleet) = admin_json(&h, "/admin/fleet").await;
    assert_eq!(status, 200);
    assert_eq!(fleet["clinics"], 3);
    assert_eq!(fleet["unrouted"], 1);
    assert_eq!(fleet["requests"], json!({"appointments": 1, "leads": 2}));
    let orgs = fleet["organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 3);
    assert_eq!(orgs[0]["requests"], json!({}));
    assert_eq!(orgs[1]["requests"], json!({"leads": 2}));
    assert_eq!(orgs[2]["requests"], json!({"appointments": 1}));
    assert_eq!(orgs[2]["records"]["appointments"], 5);
    let arrivals: u64 = fleet["arrivals"]["per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(arrivals, 4, "every feed request, the refused one too");
    assert!(fleet["started_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);

    let in_process = h.fleet_stats();
    assert_eq!(in_process.organizations[1], h.clinic(2).stats());
    assert_eq!(in_process.requests["leads"], 2);
    h.stop().await;
}

#[tokio::test]
async fn each_clinic_says_when_its_latest_request_to_each_feed_arrived() {
    let h = spawn(fleet_opts(2)).await;
    assert!(h.clinic(2).stats().last_request_unix_ms.is_empty());
    let before = unix_ms_now();
    list_as(&h, "/api/v1/leads", h.api_key(2)).await;
    let first = h.clinic(2).stats().last_request_unix_ms["leads"];
    assert!(
        (before..=unix_ms_now()).contains(&first),
        "{before} {first}"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    list_as(&h, "/api/v1/leads", h.api_key(2)).await;
    let stats = h.clinic(2).stats();
    let latest = stats.last_request_unix_ms["leads"];
    assert!(latest >= first + 30, "the later request: {first} {latest}");
    assert_eq!(
        stats.last_request_unix_ms.keys().collect::<Vec<_>>(),
        ["leads"]
    );
    assert!(
        h.clinic(1).stats().last_request_unix_ms.is_empty(),
        "organization 1 was not asked"
    );
    let (_, fleet) = admin_json(&h, "/admin/fleet").await;
    assert_eq!(
        fleet["organizations"][1]["last_request_unix_ms"]["leads"],
        latest
    );
    h.stop().await;
}

#[tokio::test]
async fn a_thousand_small_clinics_start_and_answer_by_key() {
    let h = spawn(fleet_opts(1000)).await;
    assert_eq!(h.api_key(1000), "sandbox-api-key-1000");
    let served = ids(&list_as(&h, "/api/v1/leads", h.api_key(1000)).await);
    assert_eq!(served, ids(&h.clinic(1000).records("leads")));
    assert_ne!(served, ids(&h.clinic(999).records("leads")));
    let fleet = h.fleet_stats();
    assert_eq!(fleet.clinics, 1000);
    assert_eq!(fleet.organizations[999].requests["leads"], 1);
    assert_eq!(fleet.requests["leads"], 1);
    h.stop().await;
}
