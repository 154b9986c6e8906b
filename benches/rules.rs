//! Rule matching throughput: 50 realistic rules against 100,000 changes built from the fixture
//! records (leads, appointments, patients; added, modified and deleted).
//!
//! Run with `cargo bench --bench rules`. One thread; prints changes/s and rule evaluations/s, where
//! one rule evaluation is one rule considered for one change (50 per change).

use clinicea_notifier::config::{yaml_options, RuleSpec};
use clinicea_notifier::model::{Change, ChangeKind, DEFAULT_CLINIC};
use clinicea_notifier::route::rules::{compile, CompileContext};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const CHANGES: usize = 100_000;

/// Counts allocations, to show that matching itself allocates nothing.
struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn rules_yaml() -> String {
    let mut y = String::from(
        r#"
- name: new-lead-email
  resource: leads
  on: [added]
  where:
    - { field: Email, exists: true }
    - { field: Source, in: [Website, Facebook, Instagram] }
  notify: [front-desk, sales-chat]
- name: hot-lead
  resource: leads
  where:
    - { field: LeadStatus, equals: HOT }
    - { field: Mobile, matches: '^\+92300' }
  notify: [sales-chat]
- name: lead-turned-hot
  resource: leads
  on: [modified]
  changed: { LeadStatus: { to: HOT } }
  notify: [sales-chat, automations]
- name: laser-enquiry
  resource: leads
  where:
    - { field: Notes, matches: '(?i)laser' }
    - { not: { field: Source, equals: Referral } }
  notify: [front-desk]
- name: lead-no-email
  resource: leads
  on: [added, modified]
  where:
    - { field: Email, exists: false }
  notify: [front-desk]
- name: recent-lead-change
  resource: leads
  where:
    - { field: ModifiedDatetime, gte: '2026-11-28T12:00:00+05:00' }
    - { any: [ { field: LeadStatus, in: [HOT, WARM] }, { field: Notes, contains: Price } ] }
  notify: [automations]
- name: appointment-cancelled
  resource: appointments
  on: [modified]
  changed: { AppointmentStatus: { to: Cancelled } }
  notify: [automations]
- name: confirmed-then-cancelled
  resource: appointments
  on: [modified]
  where:
    - { field: previous.AppointmentStatus, equals: Confirmed }
    - { field: AppointmentStatus, in: [Cancelled, No Show] }
  notify: [front-desk]
- name: no-show
  resource: appointments
  where:
    - { field: AppointmentStatus, equals: No Show }
  notify: [front-desk, clinic-chat]
- name: long-appointment
  resource: appointments
  where:
    - { field: Duration, gt: 45 }
  notify: [front-desk]
- name: morning-slots
  resource: appointments
  on: [added]
  where:
    - { field: StartDateTime, lt: '2026-11-30T12:00:00' }
    - { field: StartDateTime, gte: '2026-11-30T08:00:00' }
  notify: [clinic-chat]
- name: appointment-deleted
  resource: appointments
  on: [deleted]
  notify: [automations, clinic-chat]
- name: local-mobile
  resource: appointments
  where:
    - { field: PatientMobile, matches: '^\+923' }
    - { field: IsDeleted, equals: false }
    - { field: AppointmentStatus, not_in: [Cancelled, No Show] }
  notify: [sms-gateway]
- name: new-patient
  resource: patients
  on: [added]
  where:
    - { field: Email, exists: true }
  notify: [clinic-chat]
- name: patient-really-modified
  resource: patients
  on: [modified]
  where:
    - { field: ModifiedDatetime, exists: true }
    - { field: ModifiedDatetime, gt: '2026-11-01T00:00:00Z' }
  notify: [automations]
- name: patient-contact-changed
  resource: patients
  on: [modified]
  changed: [Mobile, Email, Address1, City]
  notify: [automations, front-desk]
- name: everything-to-automations
  resource: "*"
  notify: [automations]
- name: all-deletions
  resource: "*"
  on: [deleted]
  notify: [audit]
"#,
    );
    let services = [
        "Hydrafacial",
        "Laser Hair Removal",
        "Chemical Peel",
        "PRP",
        "Consultation",
    ];
    let statuses = [
        "Scheduled",
        "Confirmed",
        "Arrived",
        "Check Out",
        "Completed",
        "Cancelled",
    ];
    let mut n = 0;
    // Per-service and per-status routing, the way a clinic with several teams writes it.
    for s in services {
        for st in statuses.iter().take(3) {
            if n == 14 {
                break;
            }
            y.push_str(&format!(
                "- name: svc-{n}\n  resource: appointments\n  where:\n    - {{ field: ServiceName, equals: {s:?} }}\n    - {{ field: AppointmentStatus, equals: {st:?} }}\n    - {{ field: StartDateTime, gte: '2026-11-30T00:00:00' }}\n  notify: [clinic-chat]\n"
            ));
            n += 1;
        }
    }
    for (i, city) in ["Karachi", "Lahore", "Islamabad"].iter().enumerate() {
        y.push_str(&format!(
            "- name: city-{i}\n  resource: patients\n  where:\n    - {{ field: City, equals: {city} }}\n    - {{ field: Gender, in: [F, M] }}\n    - {{ field: Mobile, matches: '^3\\d{{9}}$' }}\n  notify: [front-desk]\n"
        ));
    }
    for (i, src) in [
        "Website",
        "Facebook",
        "Instagram",
        "Referral",
        "Google Ads",
        "Walk-in",
    ]
    .iter()
    .enumerate()
    {
        y.push_str(&format!(
            "- name: source-{i}\n  resource: leads\n  on: [added, modified]\n  where:\n    - {{ field: Source, equals: {src:?} }}\n    - {{ any: [ {{ field: LeadStatus, equals: HOT }}, {{ field: Notes, contains: 'Follow-up' }} ] }}\n  notify: [sales-chat]\n"
        ));
    }
    for (i, st) in [
        "Cancelled",
        "No Show",
        "Check Out",
        "Completed",
        "Arrived",
        "Engaged",
        "Confirmed",
        "Scheduled",
        "Scheduled",
    ]
    .iter()
    .enumerate()
    {
        y.push_str(&format!(
            "- name: status-to-{i}\n  resource: appointments\n  on: [modified]\n  changed: {{ AppointmentStatus: {{ to: {st:?} }} }}\n  where:\n    - {{ field: ServiceCategory, not_equals: General }}\n  notify: [automations]\n"
        ));
    }
    y
}

fn load(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn change(resource: &str, kind: ChangeKind, record: Value, previous: Option<Value>) -> Change {
    let changed_fields = match (&record, &previous) {
        (Value::Object(r), Some(Value::Object(p))) => r
            .iter()
            .filter(|(k, v)| p.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect(),
        (Value::Object(r), None) => r.keys().cloned().collect(),
        _ => vec![],
    };
    Change {
        clinic: DEFAULT_CLINIC.into(),
        resource: resource.into(),
        id: record["ID"].as_str().unwrap_or_default().into(),
        kind,
        record,
        previous,
        changed_fields,
        server_status: None,
        detected_at: chrono::Utc::now(),
    }
}

/// A pool of distinct changes in the fixture shapes: every record as added, as deleted, and as
/// modified from a plausible earlier version.
fn pool() -> Vec<Change> {
    let mut out = Vec::new();
    let mut leads = load("leads-v1-page0.json");
    leads.extend(load("leads-v1-page1.json"));
    let statuses = ["Scheduled", "Confirmed", "Arrived", "Cancelled", "No Show"];
    for (i, r) in leads.into_iter().enumerate() {
        let mut prev = r.clone();
        prev["LeadStatus"] = Value::from(["COLD", "WARM", "HOT"][i % 3]);
        prev["ModifiedDatetime"] = Value::from("2026-11-27T08:00:00");
        out.push(change(
            "leads",
            ChangeKind::Modified,
            r.clone(),
            Some(prev.clone()),
        ));
        out.push(change("leads", ChangeKind::Added, r.clone(), None));
        if i % 4 == 0 {
            out.push(change("leads", ChangeKind::Deleted, r, Some(prev)));
        }
    }
    for (i, r) in load("appointments-v3-getChanges.json")
        .into_iter()
        .enumerate()
    {
        for (j, st) in statuses.iter().enumerate() {
            let mut prev = r.clone();
            prev["AppointmentStatus"] = Value::from(*st);
            if j % 2 == 0 {
                prev["StartDateTime"] = Value::from("2026-11-29T09:00:00");
            }
            out.push(change(
                "appointments",
                ChangeKind::Modified,
                r.clone(),
                Some(prev),
            ));
        }
        out.push(change("appointments", ChangeKind::Added, r.clone(), None));
        if i % 3 == 0 {
            out.push(change("appointments", ChangeKind::Deleted, r, None));
        }
    }
    for (i, r) in load("patients-v1.json").into_iter().enumerate() {
        let mut prev = r.clone();
        if i % 2 == 0 {
            prev["City"] = Value::from("Multan");
        }
        prev["ModifiedDatetime"] = Value::from("0001-01-01T00:00:00");
        out.push(change(
            "patients",
            ChangeKind::Modified,
            r.clone(),
            Some(prev),
        ));
        out.push(change("patients", ChangeKind::Added, r, None));
    }
    out
}

fn main() {
    let yaml = rules_yaml();
    let specs: Vec<Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(&yaml, yaml_options()).expect("rules parse");
    let destinations: Vec<String> = [
        "front-desk",
        "sales-chat",
        "automations",
        "clinic-chat",
        "sms-gateway",
        "audit",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let resources: Vec<String> = ["leads", "appointments", "patients"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let t = Instant::now();
    let rules = compile(
        &specs,
        &CompileContext {
            destinations: &destinations,
            resources: &resources,
            clinics: &[DEFAULT_CLINIC.to_string()],
            timezone: chrono_tz::Asia::Karachi,
            timezones: &std::collections::BTreeMap::from([(
                DEFAULT_CLINIC.to_string(),
                chrono_tz::Asia::Karachi,
            )]),
        },
    )
    .unwrap_or_else(|p| panic!("{p:#?}"));
    let compile_time = t.elapsed();
    assert_eq!(rules.len(), 50, "the bench wants 50 rules");

    let pool = pool();
    let changes: Vec<&Change> = pool.iter().cycle().take(CHANGES).collect();

    // Warm up, then measure route() (what the daemon calls) and matches_any() (no allocation).
    for c in changes.iter().take(10_000) {
        black_box(rules.route(c));
    }
    let mut best = f64::MAX;
    let mut routes = 0usize;
    for _ in 0..3 {
        routes = 0;
        let t = Instant::now();
        for c in &changes {
            routes += black_box(rules.route(black_box(c))).len();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let evals = (CHANGES * rules.len()) as f64;
    // How many of those got past the cheap resource/kind filter and had `changed`/`where` tested.
    let deep: usize = changes
        .iter()
        .map(|c| {
            specs
                .iter()
                .filter(|s| {
                    let s = &s.value;
                    let res = s
                        .resource
                        .as_ref()
                        .is_none_or(|r| r.value.as_str() == "*" || r.value.as_str() == c.resource);
                    let kind = s.on.as_ref().is_none_or(|on| on.value.contains(&c.kind));
                    res && kind
                })
                .count()
        })
        .sum();
    println!(
        "rules: {} compiled in {:.2?}; {} distinct changes cycled to {CHANGES}",
        rules.len(),
        compile_time,
        pool.len()
    );
    println!(
        "route():       {:>10.0} changes/s  {:>12.0} rule evaluations/s  ({:.1} ms for {CHANGES} changes, {:.2} deliveries/change)",
        CHANGES as f64 / best,
        evals / best,
        best * 1e3,
        routes as f64 / CHANGES as f64
    );
    println!(
        "               of which {:.1} rules/change passed the resource/kind filter: {:>12.0} deep evaluations/s",
        deep as f64 / CHANGES as f64,
        deep as f64 / best
    );
    let before = ALLOCS.load(Ordering::Relaxed);
    for c in &changes {
        black_box(rules.route(black_box(c)));
    }
    let route_allocs = ALLOCS.load(Ordering::Relaxed) - before;
    println!(
        "               {:.2} allocations/change, building the returned Vec<Route> of owned Strings",
        route_allocs as f64 / CHANGES as f64
    );
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut best_any = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for c in &changes {
            black_box(rules.matches_any(black_box(c)));
        }
        best_any = best_any.min(t.elapsed().as_secs_f64());
    }
    let any_allocs = ALLOCS.load(Ordering::Relaxed) - before;
    println!(
        "matches_any(): {:>10.0} changes/s (stops at the first match), {any_allocs} allocations in total",
        CHANGES as f64 / best_any
    );
}
