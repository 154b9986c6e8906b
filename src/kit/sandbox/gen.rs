//! Made-up records in the shapes of the fixtures: Pakistani-clinic names, no real people.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

/// The offset-less timestamp format the API serves.
pub(super) const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
/// How the API writes a date that was never set.
pub(super) const UNSET_DATE: &str = "0001-01-01T00:00:00";

const FIRST_NAMES: &[&str] = &[
    "Ayesha", "Fatima", "Hina", "Mehwish", "Sana", "Zainab", "Maryam", "Amna", "Iqra", "Nimra",
    "Rabia", "Sadia", "Kiran", "Saba", "Usman", "Bilal", "Hamza", "Farhan", "Saad", "Daniyal",
    "Ali", "Ahmed", "Imran", "Zeeshan", "Asad", "Faisal", "Kamran", "Waqas", "Omer", "Haris",
];
const LAST_NAMES: &[&str] = &[
    "Khan", "Butt", "Malik", "Qureshi", "Sheikh", "Siddiqui", "Chaudhry", "Raza", "Hussain",
    "Javed", "Iqbal", "Akhtar", "Mirza", "Abbasi", "Rana", "Baig", "Hashmi", "Awan", "Gill",
];
const LEAD_SOURCES: &[&str] = &[
    "Website",
    "Facebook",
    "Instagram",
    "Referral",
    "Google Ads",
    "Walk-in",
];
const LEAD_STATUSES: &[&str] = &["HOT", "WARM", "COLD"];
const LEAD_NOTES: &[&str] = &[
    "",
    "",
    "Follow-up needed",
    "Price enquiry: Hydrafacial",
    "Price enquiry: Laser Hair Removal",
    "Asked for a weekend slot",
    "Wants a female doctor",
    "Call back after 5pm",
];
const CITIES: &[(&str, &str)] = &[
    ("Karachi", "74200"),
    ("Lahore", "54000"),
    ("Islamabad", "44000"),
    ("Rawalpindi", "46000"),
    ("Faisalabad", "38000"),
    ("Multan", "60000"),
    ("Peshawar", "25000"),
];
const SERVICES: &[(&str, &str)] = &[
    ("Hydrafacial", "Skin"),
    ("Chemical Peel", "Skin"),
    ("Acne Consultation", "Skin"),
    ("Laser Hair Removal", "Laser"),
    ("Laser Skin Rejuvenation", "Laser"),
    ("Botox", "Aesthetics"),
    ("Dermal Fillers", "Aesthetics"),
    ("PRP Hair Treatment", "Hair"),
    ("General Consultation", "Consultation"),
];
const STAFF: &[(&str, &str, &str)] = &[
    ("Dr.", "Sana", "Hussain"),
    ("Dr.", "Fatima", "Javed"),
    ("Dr.", "Fatima", "Sheikh"),
    ("Dr.", "Amna", "Javed"),
    ("Dr.", "Kamran", "Mirza"),
    ("Ms.", "Hina", "Abbasi"),
];
const DESK_STAFF: &[&str] = &["Front Desk", "Reception", "Call Centre"];

/// A GUID-shaped id.
pub(super) fn guid(rng: &mut StdRng) -> String {
    let h = format!("{:032x}", rng.gen::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

fn digits(rng: &mut StdRng, n: u32) -> String {
    format!(
        "{:0width$}",
        rng.gen_range(0..10u64.pow(n)),
        width = n as usize
    )
}

/// A lead; `serial` keeps e-mail addresses unique.
pub(super) fn lead(
    rng: &mut StdRng,
    id: &str,
    serial: u64,
    created: &str,
    modified: &str,
    status: &str,
) -> Value {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let mobile = format!("+92300{}", digits(rng, 7));
    let email = format!(
        "{}.{}{serial}@example.com",
        first.to_lowercase(),
        last.to_lowercase()
    );
    json!({
        "ID": id,
        "FirstName": first,
        "LastName": last,
        "Mobile": mobile,
        "Email": email,
        "LeadStatus": pick(rng, LEAD_STATUSES),
        "Source": pick(rng, LEAD_SOURCES),
        "Notes": pick(rng, LEAD_NOTES),
        "CreatedDatetime": created,
        "ModifiedDatetime": modified,
        "DataStatusStr": status,
    })
}

/// A patient; `serial` numbers the file and keeps e-mail addresses unique.
pub(super) fn patient(
    rng: &mut StdRng,
    id: &str,
    serial: u64,
    created: &str,
    modified: &str,
    status: &str,
) -> Value {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let (city, postal) = *CITIES.choose(rng).unwrap_or(&CITIES[0]);
    json!({
        "ID": id,
        "FullName": format!("{first} {last}"),
        "FirstName": first,
        "LastName": last,
        "FileNo": format!("F{}", 1000 + serial),
        "PatientUniqueIDNumber": "",
        "Mobile": format!("3{}", digits(rng, 9)),
        "MobileCountryCode": "+92",
        "Email": format!("{}{serial}@example.com", first.to_lowercase()),
        "Gender": if rng.gen_bool(0.5) { "F" } else { "M" },
        "Address1": address(rng),
        "City": city,
        "PostalCode": postal,
        "CreatedDatetime": created,
        "ModifiedDatetime": modified,
        "DataStatusStr": status,
    })
}

/// A made-up street address.
pub(super) fn address(rng: &mut StdRng) -> String {
    format!(
        "House {}, Street {}",
        rng.gen_range(1..400),
        rng.gen_range(1..60)
    )
}

/// A made-up mobile number in the lead style.
pub(super) fn lead_mobile(rng: &mut StdRng) -> String {
    format!("+92300{}", digits(rng, 7))
}

/// A made-up patient-style mobile number (country code kept apart).
pub(super) fn patient_mobile(rng: &mut StdRng) -> String {
    format!("3{}", digits(rng, 9))
}

/// A different lead status from `current`.
pub(super) fn other_lead_status(rng: &mut StdRng, current: &str) -> &'static str {
    let others: Vec<&'static str> = LEAD_STATUSES
        .iter()
        .copied()
        .filter(|s| *s != current)
        .collect();
    pick(rng, &others)
}

/// A note for an edited lead.
pub(super) fn lead_note(rng: &mut StdRng) -> &'static str {
    pick(rng, &LEAD_NOTES[2..])
}

/// A random city and its postal code.
pub(super) fn city(rng: &mut StdRng) -> (&'static str, &'static str) {
    *CITIES.choose(rng).unwrap_or(&CITIES[0])
}

/// A desk staff name for `ModifiedStaffName`.
pub(super) fn desk_staff(rng: &mut StdRng) -> &'static str {
    pick(rng, DESK_STAFF)
}

/// Who an appointment is for.
pub(super) struct PatientRef {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mobile: String,
}

impl PatientRef {
    /// Reads the reference out of a patient record.
    pub(crate) fn from_patient(p: &Value) -> Option<PatientRef> {
        let code = p["MobileCountryCode"].as_str().unwrap_or("");
        Some(PatientRef {
            id: p["ID"].as_str()?.to_string(),
            name: p["FullName"].as_str().unwrap_or("").to_string(),
            mobile: format!("{code}{}", p["Mobile"].as_str().unwrap_or("")),
        })
    }

    /// A made-up walk-in patient that is not in the patients list.
    pub(crate) fn made_up(rng: &mut StdRng) -> PatientRef {
        let id = guid(rng);
        let name = format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES));
        PatientRef {
            id,
            name,
            mobile: lead_mobile(rng),
        }
    }
}

/// A status that suits an appointment on `day`, relative to `today`.
pub(super) fn initial_status(rng: &mut StdRng, day: NaiveDate, today: NaiveDate) -> &'static str {
    let choices: &[&str] = if day < today {
        &[
            "Completed",
            "Completed",
            "Completed",
            "Cancelled",
            "No Show",
        ]
    } else if day == today {
        &[
            "Scheduled",
            "Confirmed",
            "Arrived",
            "Engaged",
            "Check Out",
            "Completed",
            "Cancelled",
        ]
    } else {
        &[
            "Scheduled",
            "Scheduled",
            "Confirmed",
            "Confirmed",
            "Cancelled",
        ]
    };
    pick(rng, choices)
}

/// A slot between 09:00 and 17:30 on a day around `today` (two days back to five ahead).
pub(super) fn appointment_start(rng: &mut StdRng, today: NaiveDate) -> NaiveDateTime {
    let day = today + TimeDelta::days(rng.gen_range(-2..=5));
    let half_hours = rng.gen_range(18..=35u32);
    let time =
        NaiveTime::from_hms_opt(half_hours / 2, (half_hours % 2) * 30, 0).unwrap_or_default();
    day.and_time(time)
}

/// An appointment record.
pub(super) fn appointment(
    rng: &mut StdRng,
    id: &str,
    patient: &PatientRef,
    start: NaiveDateTime,
    status: &str,
    data_status: &str,
) -> Value {
    let (service, category) = *SERVICES.choose(rng).unwrap_or(&SERVICES[0]);
    let (title, staff_first, staff_last) = *STAFF.choose(rng).unwrap_or(&STAFF[0]);
    let duration: i64 = *[15i64, 30, 30, 30, 45, 60].choose(rng).unwrap_or(&30);
    let end = start + TimeDelta::minutes(duration);
    let created_staff = desk_staff(rng);
    let created_staff_id = guid(rng);
    json!({
        "ID": id,
        "PatientID": patient.id,
        "StartDateTime": start.format(TS_FORMAT).to_string(),
        "EndDateTime": end.format(TS_FORMAT).to_string(),
        "ServiceName": service,
        "ServiceCategory": category,
        "StaffTitle": title,
        "StaffFirstName": staff_first,
        "StaffLastName": staff_last,
        "CreatedStaffName": created_staff,
        "CreatedStaffID": created_staff_id,
        "ModifiedStaffName": created_staff,
        "PatientName": patient.name,
        "PatientMobile": patient.mobile,
        "AppointmentStatus": status,
        "Notes": "",
        "Duration": duration,
        "IsDeleted": data_status == "Deleted",
        "DataStatusValue": data_status,
    })
}

/// The next status of an appointment, or `None` when it has reached an end state.
pub(super) fn next_appointment_status(rng: &mut StdRng, current: &str) -> Option<&'static str> {
    let roll: f64 = rng.gen();
    Some(match current {
        "Scheduled" if roll < 0.15 => "Cancelled",
        "Scheduled" if roll < 0.2 => "No Show",
        "Scheduled" => "Confirmed",
        "Confirmed" if roll < 0.1 => "Cancelled",
        "Confirmed" if roll < 0.2 => "No Show",
        "Confirmed" => "Arrived",
        "Arrived" => "Engaged",
        "Engaged" => "Check Out",
        "Check Out" => "Completed",
        _ => return None,
    })
}
