//! Decoding a caught email's MIME body: its parts, quoted-printable and base64.

/// Decodes quoted-printable text (soft line breaks and `=XX`).
fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of a caught message as (content type, decoded body): the one part of a single-part
/// message, or each part of a multipart one (one level deep).
pub fn mime_parts(m: &clinicea_notifier::kit::catcher::CaughtMessage) -> Vec<(String, String)> {
    use base64::Engine as _;
    fn decode(head: &str, body: &str) -> (String, String) {
        let find = |name: &str| {
            head.split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let ct = find("Content-Type");
        let cte = find("Content-Transfer-Encoding").to_ascii_lowercase();
        let text = match cte.as_str() {
            "quoted-printable" => decode_qp(body),
            "base64" => String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(body.replace("\r\n", ""))
                    .unwrap(),
            )
            .into_owned(),
            _ => body.to_string(),
        };
        (ct, text)
    }
    let (head, body) = m.data.split_once("\r\n\r\n").unwrap();
    let ct = m.header("Content-Type").unwrap_or_default();
    match ct.split("boundary=").nth(1) {
        None => vec![decode(head, body)],
        Some(b) => {
            let boundary = format!("--{}", b.trim_matches('"'));
            body.split(boundary.as_str())
                .skip(1)
                .filter(|p| !p.starts_with("--"))
                .filter_map(|p| {
                    let p = p.strip_prefix("\r\n").unwrap_or(p);
                    let (h, b) = p.split_once("\r\n\r\n")?;
                    Some(decode(h, b.strip_suffix("\r\n").unwrap_or(b)))
                })
                .collect()
        }
    }
}
