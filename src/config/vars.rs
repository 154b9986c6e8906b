//! `${VAR}` substitution, as one explicit pass over the parsed config: [`substitute`] visits every
//! [`Text`] (and so every [`Dur`]) and every string of the rules' YAML nodes, with the variables
//! passed in. Nothing is read from the process environment here and nothing is kept between
//! calls, so tests pass their own map.
//!
//! A value is substituted after the YAML is parsed, never in the YAML text, so a variable's value
//! is always one string: it cannot add keys or change the file's structure.

use crate::config::alerts::RawAlerts;
use crate::config::problem::{line_of, Problem};
use crate::config::raw::{
    Dur, Node, OneOrMany, RawAmqp, RawBaseline, RawChat, RawClinicea, RawConfig, RawConsole,
    RawDestination, RawDigest, RawEmail, RawLogin, RawNats, RawQuietHours, RawResource, RawRetry,
    RawSmtp, RawStore, RawWatchdog, RawWebhook, RuleSpec, Text,
};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};

/// Replaces every `${NAME}` in `s` from `vars`; `$${` writes a literal `${`.
pub(crate) fn expand_vars(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name ${{{name}}}"));
            }
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Substitutes `${VAR}` in every string of `raw` (parsed from `text`) from `vars`. Returns
/// every string that could not be substituted (an unset variable, a malformed `${`), each at its
/// key path and line, all of them in one pass. The line is the text's own where serde kept it;
/// where it did not (values inside a destination, whose `type:` serde reads first, and the
/// rules' free-form nodes), it is the first line of `text` at or after the enclosing section's
/// that holds the value as written, else the section's line.
pub(crate) fn substitute(
    raw: &mut RawConfig,
    text: &str,
    vars: &HashMap<String, String>,
) -> Vec<Problem> {
    let mut pass = Pass {
        vars,
        lines: text.lines().collect(),
        claimed: Vec::new(),
        problems: Vec::new(),
    };
    raw.walk(&mut pass, &At::root());
    pass.problems
}

/// The variables, the file's lines and what went wrong so far.
struct Pass<'a> {
    vars: &'a HashMap<String, String>,
    /// The config's text, line by line, to place values serde kept no line for.
    lines: Vec<&'a str>,
    /// Lines already given to a value, so a value written twice is placed at each.
    claimed: Vec<(u64, String)>,
    problems: Vec<Problem>,
}

impl Pass<'_> {
    /// The substituted `s`, or `None` (and a problem) when it cannot be substituted.
    fn expand(&mut self, s: &str, line: Option<u64>, at: &At) -> Option<String> {
        if !s.contains('$') {
            return None;
        }
        match expand_vars(s, self.vars) {
            Ok(v) => Some(v),
            Err(message) => {
                let line = line.or_else(|| self.find_line(s, at.line)).or(at.line);
                self.problems
                    .push(Problem::at(line, at.key.clone(), message));
                None
            }
        }
    }

    /// The first line not yet claimed, at or after `from` (1-based), that holds `value` as
    /// written.
    fn find_line(&mut self, value: &str, from: Option<u64>) -> Option<u64> {
        if value.contains('\n') {
            return None;
        }
        let start = from.unwrap_or(1).max(1);
        let found = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l))
            .skip(start as usize - 1)
            .find(|(n, l)| {
                l.contains(value) && !self.claimed.iter().any(|(c, v)| c == n && v == value)
            })
            .map(|(n, _)| n)?;
        self.claimed.push((found, value.to_string()));
        Some(found)
    }
}

/// Where in the file the walk is: the key path and the nearest line serde kept.
#[derive(Clone)]
struct At {
    key: String,
    line: Option<u64>,
}

impl At {
    fn root() -> At {
        At {
            key: String::new(),
            line: None,
        }
    }

    /// A key below this one.
    fn key(&self, k: &str) -> At {
        At {
            key: if self.key.is_empty() {
                k.to_string()
            } else {
                format!("{}.{k}", self.key)
            },
            line: self.line,
        }
    }

    /// A list item below this one.
    fn index(&self, i: usize) -> At {
        At {
            key: format!("{}[{i}]", self.key),
            line: self.line,
        }
    }
}

/// A part of the raw config that may hold `${VAR}` text.
trait Walk {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At);
}

impl Walk for Text {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        if let Some(v) = pass.expand(self.as_str(), self.line(), at) {
            self.set(v);
        }
    }
}

impl Walk for Dur {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        self.text_mut().walk(pass, at);
    }
}

impl<T: Walk> Walk for Option<T> {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        if let Some(v) = self {
            v.walk(pass, at);
        }
    }
}

impl<T: Walk> Walk for Vec<T> {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        for (i, v) in self.iter_mut().enumerate() {
            v.walk(pass, &at.index(i));
        }
    }
}

impl<T: Walk> Walk for BTreeMap<String, T> {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        for (k, v) in self.iter_mut() {
            v.walk(pass, &at.key(k));
        }
    }
}

impl<T: Walk> Walk for Spanned<T> {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        let at = At {
            key: at.key.clone(),
            line: line_of(self).or(at.line),
        };
        self.value.walk(pass, &at);
    }
}

impl Walk for OneOrMany {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        for (i, t) in self.as_mut_slice().iter_mut().enumerate() {
            t.walk(pass, &at.index(i));
        }
    }
}

impl Walk for Node {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        match self {
            Node::Str(s) => {
                if let Some(v) = pass.expand(s, None, at) {
                    *s = v;
                }
            }
            Node::Seq(items) => items.walk(pass, at),
            Node::Map(entries) => {
                for (k, v) in entries {
                    v.walk(pass, &at.key(&k.value));
                }
            }
            Node::Null | Node::Bool(_) | Node::Int(_) | Node::Float(_) => {}
        }
    }
}

/// `impl Walk` for structs whose fields are walked each at its own key. Every field is named,
/// either as walked or as holding no text (the pattern has no `..`), so a new field does not
/// compile until it is placed.
macro_rules! walk_structs {
    ($($ty:ident { $($field:ident),* } no text in { $($plain:ident),* };)*) => {$(
        impl Walk for $ty {
            fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
                let $ty { $($field,)* $($plain: _,)* } = self;
                $( $field.walk(pass, &at.key(stringify!($field))); )*
            }
        }
    )*};
}

walk_structs! {
    RawConfig {
        clinicea, clinics, resources, store, templates, listen, metrics_token, console, smtp,
        destinations, rules, retry, watchdog, alerts
    } no text in { fleet };
    RawAlerts { notify, destination_failing_for } no text in { stale_resource, api_unauthorized };
    RawConsole { token } no text in {};
    RawClinicea {
        base_url, api_key, login, poll_interval, poll_interval_min, overlap, start_from, timezone,
        since_timezone, timeout, page_delay, baseline, resources, trigger_token
    } no text in { auth, allow_insecure_http, allow_private, max_concurrent_requests };
    RawLogin { username, password, path } no text in {};
    RawBaseline { since } no text in { enabled };
    RawResource {
        path, since_param, since_format, page_param, page_size_param, id_field, status_field,
        poll_interval, poll_interval_min, params
    } no text in { first_page, page_size };
    RawStore { backend, url, lease, path, journal_retention, dead_letter_retention } no text in { cache_mb };
    RawSmtp {
        host, username, password, from, timeout, ca_file
    } no text in { port, tls, allow_private, allow_cleartext };
    RawRetry { schedule } no text in { jitter };
    RawWatchdog { stale_after } no text in {};
    RawWebhook {
        url, secret, headers, timeout, retry, fields, exclude_fields, body_template, quiet_hours,
        digest, digest_template
    } no text in { allow_insecure_http, allow_private, concurrency, include_previous };
    RawNats {
        url, subject, creds_file, user, password, timeout, retry, fields, exclude_fields,
        body_template, quiet_hours, digest, digest_template
    } no text in { allow_private, allow_cleartext, concurrency, include_previous };
    RawAmqp {
        url, exchange, routing_key, timeout, retry, fields, exclude_fields, body_template,
        quiet_hours, digest, digest_template
    } no text in { allow_private, allow_cleartext, concurrency, include_previous };
    RawEmail {
        to, subject, template, from, reply_to, retry, quiet_hours, digest, digest_template
    } no text in { concurrency };
    RawChat {
        url, template, timeout, retry, quiet_hours, digest, digest_template
    } no text in { allow_insecure_http, allow_private };
    RawQuietHours { from, to, days } no text in {};
    RawDigest { every, at, subject } no text in { max };
}

impl Walk for RawDestination {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        match self {
            RawDestination::Webhook(w) => w.walk(pass, at),
            RawDestination::Email(e) => e.walk(pass, at),
            RawDestination::Slack(c)
            | RawDestination::Teams(c)
            | RawDestination::Discord(c)
            | RawDestination::GoogleChat(c) => c.walk(pass, at),
            RawDestination::Nats(n) => n.walk(pass, at),
            RawDestination::Amqp(a) => a.walk(pass, at),
        }
    }
}

impl Walk for RuleSpec {
    fn walk(&mut self, pass: &mut Pass<'_>, at: &At) {
        let RuleSpec {
            name,
            resource,
            clinic,
            on: _,
            conditions,
            changed,
            notify,
            enabled: _,
        } = self;
        name.walk(pass, &at.key("name"));
        resource.walk(pass, &at.key("resource"));
        clinic.walk(pass, &at.key("clinic"));
        changed.walk(pass, &at.key("changed"));
        notify.walk(pass, &at.key("notify"));
        // Written `where:` in the file.
        conditions.walk(pass, &at.key("where"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand_vars("a${A}b", &vars).unwrap(), "axb");
        assert_eq!(expand_vars("$${A}", &vars).unwrap(), "${A}");
        assert_eq!(expand_vars("cost $5", &vars).unwrap(), "cost $5");
        let err = expand_vars("${MISSING}", &vars).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
    }

    #[test]
    fn a_rule_s_clinic_is_substituted_and_an_unset_one_named_by_its_key() {
        let y = "clinicea: {base_url: x, api_key: k}\nrules:\n  - name: r\n    clinic: ${CLINIC}\n    notify: [hook]\n  - name: s\n    clinic: [north, \"${MISSING}\"]\n    notify: [hook]\n";
        let mut raw = crate::config::raw::parse(y).unwrap();
        let vars = HashMap::from([("CLINIC".to_string(), "north".to_string())]);
        let problems = substitute(&mut raw, y, &vars);
        let clinic = |i: usize| raw.rules[i].value.clinic.as_ref().unwrap().value.clone();
        assert_eq!(clinic(0), Node::Str("north".into()));
        let got: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(got, ["rules[1].clinic[1]"], "{problems:?}");
    }

    #[test]
    fn the_pass_substitutes_every_text_and_names_each_one_it_cannot() {
        let y = "clinicea:\n  base_url: ${URL}\n  api_key: ${KEY}\n  poll_interval: ${EVERY}\nresources:\n  leads: { path: /api/v1/leads, params: { clinic: \"${CLINIC}\" } }\ndestinations:\n  hook:\n    type: webhook\n    url: ${HOOK_URL}\n    secret: [whsec_a, \"${SECRET}\"]\nrules:\n  - name: r\n    where:\n      - { field: Source, equals: \"${SOURCE}\" }\n    notify: [hook]\n";
        let mut raw = crate::config::raw::parse(y).unwrap();
        let vars: HashMap<String, String> = [
            ("URL", "https://api.example"),
            ("EVERY", "5m"),
            ("CLINIC", "7"),
            ("HOOK_URL", "https://hooks.example/x"),
            ("SOURCE", "Website"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let problems = substitute(&mut raw, y, &vars);
        let c = &raw.clinicea.as_ref().unwrap().value;
        assert_eq!(c.base_url.as_ref().unwrap().as_str(), "https://api.example");
        assert_eq!(c.poll_interval.as_ref().unwrap().text().as_str(), "5m");
        assert_eq!(raw.resources["leads"].value.params["clinic"].as_str(), "7");
        let RawDestination::Webhook(w) = &raw.destinations["hook"].value else {
            panic!()
        };
        assert_eq!(w.url.as_str(), "https://hooks.example/x");
        let Node::Map(cond) = &raw.rules[0].value.conditions[0].value else {
            panic!()
        };
        assert_eq!(cond[1].1.value, Node::Str("Website".into()));
        // Two unset: each named by its key, at its own line (found in the text where serde kept
        // none, as inside a destination).
        let got: Vec<(Option<u64>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(3), "clinicea.api_key"),
                (Some(11), "destinations.hook.secret[1]")
            ],
            "{problems:?}"
        );
        assert!(problems
            .iter()
            .all(|p| p.message.contains("is not set") && !p.message.contains("whsec")));
    }
}
