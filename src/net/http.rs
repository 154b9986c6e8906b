//! HTTP helpers shared by the API client and the sinks.

/// Percent-encodes a query value, leaving unreserved characters and `:` as they are (the live
/// Clinicea API rejects `%3A`); `+` becomes `%2B` so an offset is not read as a space.
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colons_stay_plus_is_encoded() {
        assert_eq!(
            encode_query_value("2026-11-29T10:00:00+05:00"),
            "2026-11-29T10:00:00%2B05:00"
        );
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }
}
