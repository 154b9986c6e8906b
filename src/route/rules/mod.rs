//! Rules: which changes go to which destinations.
//!
//! A rule is written in the config file ([`RuleSpec`], parsed with it by [`crate::config::raw`]), compiled once at start by [`compile`] (every
//! regex, number, timestamp and field path is parsed then, and every problem in every rule is
//! reported at once), and matched against each [`Change`] by [`RuleSet::route`]. `docs/rules.md`
//! is the user-facing reference for the condition language and its value semantics.

mod value;

#[cfg(test)]
mod tests;

use crate::config::{line_of, Problem};
use crate::model::{Change, ChangeKind};
use chrono_tz::Tz;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use value::{Bound, Lit, Ord4, Time};

use crate::config::raw::{Node, RuleSpec};

// ---------------------------------------------------------------------------------------------
// The compiled form
// ---------------------------------------------------------------------------------------------

/// What [`compile`] needs to know about the rest of the config.
#[derive(Debug, Clone, Copy)]
pub struct CompileContext<'a> {
    /// The names under `destinations:`.
    pub destinations: &'a [String],
    /// The keys under `resources:`.
    pub resources: &'a [String],
    /// The clinics' names ([`crate::model::DEFAULT_CLINIC`] alone for a config without
    /// `clinics:`): what a rule's `clinic` may name.
    pub clinics: &'a [String],
    /// The default zone (`clinicea.timezone`): a rule's timestamp without an offset is read in it,
    /// unless the rule names exactly one clinic.
    pub timezone: Tz,
    /// Each clinic's zone: a record's timestamp without an offset is read in its clinic's zone,
    /// and so is the literal of a rule that names exactly one clinic. A clinic missing here is UTC.
    pub timezones: &'a BTreeMap<String, Tz>,
}

/// The zone of `clinic` in `zones`, UTC for a clinic it does not hold (the zone Clinicea's
/// timestamps are in when nothing says otherwise).
pub(crate) fn zone_of(zones: &BTreeMap<String, Tz>, clinic: &str) -> Tz {
    zones.get(clinic).copied().unwrap_or(Tz::UTC)
}

/// One delivery a change gets: each destination once, however many rules name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination's name.
    pub destination: String,
    /// The first matching rule (in file order) that notifies this destination.
    pub rule: String,
    /// Every matching rule, in file order; the same for every route of one change.
    pub rules: Vec<String>,
}

/// Why a rule did or did not match a change, for `test-rule`.
///
/// `failed` quotes record values: show it to the operator, never log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The rule's name.
    pub(crate) rule: String,
    /// Whether it matched.
    pub matched: bool,
    /// The first thing that did not hold, e.g. `where[1]: Source is "Referral", not in [Website, Facebook]`.
    pub failed: Option<String>,
}

/// All rules, compiled.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    destinations: Vec<String>,
    /// The clinics the rules were checked against.
    clinics: Vec<String>,
    /// Each clinic's zone, for the record's offset-less timestamps ([`zone_of`]).
    zones: BTreeMap<String, Tz>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    enabled: bool,
    /// `None` for `*`.
    resource: Option<String>,
    /// The clinics the rule is for, each once; `None` for every clinic.
    clinics: Option<Box<[String]>>,
    /// Bit per [`ChangeKind`].
    kinds: u8,
    changed: Option<Changed>,
    conditions: Vec<Cond>,
    /// Indexes into [`RuleSet::destinations`], each once.
    notify: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Changed {
    /// Any of these holds.
    fields: Vec<FieldChange>,
}

#[derive(Debug, Clone)]
struct FieldChange {
    path: Path,
    /// The previous value equals one of these (empty: anything).
    from: Vec<Lit>,
    /// The current value equals one of these (empty: anything).
    to: Vec<Lit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Record,
    Previous,
}

#[derive(Debug, Clone)]
struct Seg {
    key: Box<str>,
    index: Option<usize>,
}

/// A dotted field path, split once.
#[derive(Debug, Clone)]
struct Path {
    root: Root,
    segs: Box<[Seg]>,
    /// As written, for explanations.
    text: Box<str>,
}

impl Path {
    fn parse(text: &str) -> Result<Path, String> {
        let (root, rest) = if let Some(rest) = text.strip_prefix("previous.") {
            (Root::Previous, rest)
        } else if let Some(rest) = text.strip_prefix("record.") {
            (Root::Record, rest)
        } else {
            (Root::Record, text)
        };
        if rest.is_empty() {
            return Err("the field is empty".into());
        }
        let mut segs = Vec::new();
        for seg in rest.split('.') {
            if seg.is_empty() {
                return Err(format!("the field path {text:?} has an empty part"));
            }
            segs.push(Seg {
                key: seg.into(),
                index: seg.parse().ok(),
            });
        }
        Ok(Path {
            root,
            segs: segs.into(),
            text: text.into(),
        })
    }

    fn in_value<'a>(&self, mut cur: &'a Value) -> Option<&'a Value> {
        for seg in self.segs.iter() {
            cur = match cur {
                Value::Object(map) => map.get(&*seg.key)?,
                Value::Array(items) => items.get(seg.index?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    #[inline]
    fn get<'a>(&self, change: &'a Change) -> Option<&'a Value> {
        match self.root {
            Root::Record => self.in_value(&change.record),
            Root::Previous => self.in_value(change.previous.as_ref()?),
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Field { path: Path, test: Test },
    Any(Vec<Cond>),
    All(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone)]
enum Test {
    Equals(Lit),
    NotEquals(Lit),
    In(Vec<Lit>),
    NotIn(Vec<Lit>),
    Matches(regex::Regex),
    Exists(bool),
    Contains(Lit),
    Cmp(Ord4, Bound, Box<str>),
}

impl Test {
    #[inline]
    fn holds(&self, v: Option<&Value>, tz: Tz) -> bool {
        match self {
            Test::Exists(want) => value::present(v) == *want,
            Test::NotEquals(lit) => !v.is_some_and(|v| value::equals(v, lit)),
            Test::NotIn(lits) => !v.is_some_and(|v| lits.iter().any(|l| value::equals(v, l))),
            _ => {
                let Some(v) = v else { return false };
                match self {
                    Test::Equals(lit) => value::equals(v, lit),
                    Test::In(lits) => lits.iter().any(|l| value::equals(v, l)),
                    Test::Matches(re) => value::matches(v, re),
                    Test::Contains(lit) => value::contains(v, lit),
                    Test::Cmp(op, bound, _) => value::compare(v, *op, bound, tz),
                    Test::Exists(_) | Test::NotEquals(_) | Test::NotIn(_) => unreachable!(),
                }
            }
        }
    }

    /// What the test asks for, e.g. `in [Website, Facebook]`.
    fn describe(&self) -> String {
        match self {
            Test::Equals(l) => format!("equals {l}"),
            Test::NotEquals(l) => format!("not_equals {l}"),
            Test::In(ls) => format!("in {}", list(ls)),
            Test::NotIn(ls) => format!("not_in {}", list(ls)),
            Test::Matches(re) => format!("matches {}", re.as_str()),
            Test::Exists(b) => format!("exists: {b}"),
            Test::Contains(l) => format!("contains {l}"),
            Test::Cmp(op, _, text) => format!("{} {text}", op.key()),
        }
    }

    /// Why the test does not hold for `v` (which it does not).
    fn why_not(&self, field: &str, v: Option<&Value>) -> String {
        let shown = value::show(v);
        let is = format!("{field} is {shown}");
        match self {
            Test::Equals(l) => format!("{is}, not {l}"),
            Test::NotEquals(l) => format!("{is}, which must not equal {l}"),
            Test::In(ls) => format!("{is}, not in {}", list(ls)),
            Test::NotIn(ls) => format!("{is}, which is in {}", list(ls)),
            Test::Matches(re) => format!("{is}, which does not match {}", re.as_str()),
            Test::Exists(true) => match v {
                Some(Value::String(s)) if value::is_unset_date(s) => {
                    format!("{field} is the unset date {s:?}, which counts as missing")
                }
                _ => format!("{is}, so it does not exist"),
            },
            Test::Exists(false) => format!("{is}, expected no value"),
            Test::Contains(l) => format!("{is}, which does not contain {l}"),
            Test::Cmp(op, bound, text) => {
                let kind = match bound {
                    Bound::Num(_) => "a number",
                    Bound::Time(_) => "a timestamp",
                };
                match v {
                    Some(Value::String(s)) if value::is_unset_date(s) => format!(
                        "{field} is the unset date {s:?}, which is never {} anything",
                        op.words()
                    ),
                    Some(Value::String(s))
                        if matches!(bound, Bound::Time(_))
                            && value::parse_time(s, Tz::UTC) == Time::Invalid =>
                    {
                        format!("{is}, which is not {kind}")
                    }
                    Some(Value::String(s))
                        if matches!(bound, Bound::Num(_)) && value::parse_num_str(s).is_none() =>
                    {
                        format!("{is}, which is not {kind}")
                    }
                    Some(Value::String(_) | Value::Number(_)) | None => {
                        format!("{is}, not {} {text}", op.words())
                    }
                    Some(_) => format!("{is}, which is not {kind}"),
                }
            }
        }
    }
}

fn list(ls: &[Lit]) -> String {
    let items: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
    format!("[{}]", items.join(", "))
}

impl Cond {
    #[inline]
    fn holds(&self, change: &Change, tz: Tz) -> bool {
        match self {
            Cond::Field { path, test } => test.holds(path.get(change), tz),
            Cond::Any(cs) => cs.iter().any(|c| c.holds(change, tz)),
            Cond::All(cs) => cs.iter().all(|c| c.holds(change, tz)),
            Cond::Not(c) => !c.holds(change, tz),
        }
    }

    /// Why the condition does not hold (it does not).
    fn why_not(&self, change: &Change, tz: Tz) -> String {
        match self {
            Cond::Field { path, test } => test.why_not(&path.text, path.get(change)),
            Cond::Any(cs) => {
                let parts: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("any[{i}]: {}", c.why_not(change, tz)))
                    .collect();
                format!("none of any held ({})", parts.join("; "))
            }
            Cond::All(cs) => {
                let (i, c) = cs
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !c.holds(change, tz))
                    .expect("a failing all has a failing member");
                format!("all[{i}]: {}", c.why_not(change, tz))
            }
            Cond::Not(c) => format!("not: {} held", c.why_holds(change, tz)),
        }
    }

    /// Why the condition holds (it does), for a failing `not`.
    fn why_holds(&self, change: &Change, tz: Tz) -> String {
        match self {
            Cond::Field { path, test } => format!(
                "{} is {}, which {}",
                path.text,
                value::show(path.get(change)),
                test.describe()
            ),
            Cond::Any(cs) => {
                let (i, c) = cs
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.holds(change, tz))
                    .expect("a holding any has a holding member");
                format!("any[{i}]: {}", c.why_holds(change, tz))
            }
            Cond::All(cs) => {
                let parts: Vec<String> = cs.iter().map(|c| c.why_holds(change, tz)).collect();
                format!("all of ({})", parts.join("; "))
            }
            Cond::Not(c) => format!("not: {}", c.why_not(change, tz)),
        }
    }
}

impl Changed {
    #[inline]
    fn holds(&self, change: &Change) -> bool {
        let Some(prev) = change.previous.as_ref() else {
            return false;
        };
        self.fields.iter().any(|f| f.holds(change, prev))
    }

    fn why_not(&self, change: &Change) -> String {
        if change.previous.is_none() {
            return "changed: there is no previous version to compare with".into();
        }
        let parts: Vec<String> = self.fields.iter().map(|f| f.why_not(change)).collect();
        format!("changed: {}", parts.join("; "))
    }
}

impl FieldChange {
    fn did_change(&self, change: &Change, prev: &Value) -> bool {
        if self.path.segs.len() == 1 {
            let name = &*self.path.segs[0].key;
            change.changed_fields.iter().any(|f| f == name)
        } else {
            self.path.in_value(prev) != self.path.in_value(&change.record)
        }
    }

    #[inline]
    fn holds(&self, change: &Change, prev: &Value) -> bool {
        self.did_change(change, prev)
            && (self.from.is_empty()
                || self
                    .path
                    .in_value(prev)
                    .is_some_and(|v| self.from.iter().any(|l| value::equals(v, l))))
            && (self.to.is_empty()
                || self
                    .path
                    .in_value(&change.record)
                    .is_some_and(|v| self.to.iter().any(|l| value::equals(v, l))))
    }

    fn why_not(&self, change: &Change) -> String {
        let Some(prev) = change.previous.as_ref() else {
            return format!("{} has no previous version", self.path.text);
        };
        let field = &self.path.text;
        if !self.did_change(change, prev) {
            return format!("{field} did not change");
        }
        let before = self.path.in_value(prev);
        let after = self.path.in_value(&change.record);
        let shown = format!(
            "{field} changed from {} to {}",
            value::show(before),
            value::show(after)
        );
        let from_ok = self.from.is_empty()
            || before.is_some_and(|v| self.from.iter().any(|l| value::equals(v, l)));
        if !from_ok {
            return format!("{shown}, not from {}", one_or_list(&self.from));
        }
        format!("{shown}, not to {}", one_or_list(&self.to))
    }
}

fn one_or_list(ls: &[Lit]) -> String {
    match ls {
        [one] => one.to_string(),
        _ => list(ls),
    }
}

fn kind_bit(k: ChangeKind) -> u8 {
    match k {
        ChangeKind::Added => 1,
        ChangeKind::Modified => 2,
        ChangeKind::Deleted => 4,
    }
}

impl Rule {
    /// The first thing that fails, or `None` when the rule matches. Cheap checks first.
    #[inline]
    fn matches(&self, change: &Change, tz: Tz) -> bool {
        self.enabled
            && self.kinds & kind_bit(change.kind) != 0
            && self
                .resource
                .as_deref()
                .is_none_or(|r| r == change.resource)
            && self
                .clinics
                .as_deref()
                .is_none_or(|cs| cs.contains(&change.clinic))
            && self.changed.as_ref().is_none_or(|c| c.holds(change))
            && self.conditions.iter().all(|c| c.holds(change, tz))
    }

    fn explain(&self, change: &Change, tz: Tz) -> Option<String> {
        if !self.enabled {
            return Some("the rule is disabled (enabled: false)".into());
        }
        if self.kinds & kind_bit(change.kind) == 0 {
            let on: Vec<&str> = ChangeKind::ALL
                .iter()
                .filter(|k| self.kinds & kind_bit(**k) != 0)
                .map(|k| k.as_str())
                .collect();
            return Some(format!(
                "on: the change is {}, the rule is on [{}]",
                change.kind,
                on.join(", ")
            ));
        }
        if let Some(r) = &self.resource {
            if *r != change.resource {
                return Some(format!(
                    "resource: the change is to {}, the rule is for {r}",
                    change.resource
                ));
            }
        }
        if let Some(cs) = &self.clinics {
            if !cs.contains(&change.clinic) {
                return Some(format!(
                    "clinic: the change is from {}, the rule is for {}",
                    change.clinic,
                    clinic_list(cs)
                ));
            }
        }
        if let Some(c) = &self.changed {
            if !c.holds(change) {
                return Some(c.why_not(change));
            }
        }
        for (i, c) in self.conditions.iter().enumerate() {
            if !c.holds(change, tz) {
                return Some(format!("where[{i}]: {}", c.why_not(change, tz)));
            }
        }
        None
    }
}

impl RuleSet {
    /// Every (resource, destination) pair a rule connects, `*` for any resource; `check` renders
    /// each destination's templates against a sample record of that resource.
    pub(crate) fn resource_destinations(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in self.rules.iter().filter(|r| r.enabled) {
            for &d in &r.notify {
                let pair = (
                    r.resource.clone().unwrap_or_else(|| "*".to_string()),
                    self.destinations[d].clone(),
                );
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out
    }

    /// One line per rule for `check`: name, resource, the clinics when it names some, kinds and
    /// destinations.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let kinds: Vec<&str> = ChangeKind::ALL
                    .iter()
                    .filter(|k| r.kinds & kind_bit(**k) != 0)
                    .map(|k| k.as_str())
                    .collect();
                let dests: Vec<&str> = r
                    .notify
                    .iter()
                    .map(|&d| self.destinations[d].as_str())
                    .collect();
                format!(
                    "{:<28} {}{} on [{}]{}{} -> {}{}",
                    r.name,
                    r.resource.as_deref().unwrap_or("*"),
                    r.clinics
                        .as_deref()
                        .map(|cs| format!(" from {}", clinic_list(cs)))
                        .unwrap_or_default(),
                    kinds.join(", "),
                    if r.conditions.is_empty() {
                        String::new()
                    } else {
                        format!(", {} condition(s)", r.conditions.len())
                    },
                    if r.changed.is_some() {
                        ", on field changes"
                    } else {
                        ""
                    },
                    dests.join(", "),
                    if r.enabled { "" } else { " (disabled)" }
                )
            })
            .collect()
    }

    /// The deliveries `change` gets: every matching rule fires, each destination once, in the
    /// order destinations first appear in the matching rules' `notify` lists.
    pub fn route(&self, change: &Change) -> Vec<Route> {
        // The common case (nothing matches) allocates nothing.
        let tz = self.zone(change);
        let mut first = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(change, tz) {
                first = Some(i);
                break;
            }
        }
        let Some(first) = first else {
            return Vec::new();
        };
        let mut matched = vec![first];
        matched.extend(
            self.rules[first + 1..]
                .iter()
                .enumerate()
                .filter(|(_, r)| r.matches(change, tz))
                .map(|(j, _)| first + 1 + j),
        );
        let names: Vec<String> = matched
            .iter()
            .map(|&i| self.rules[i].name.clone())
            .collect();
        let mut seen = vec![false; self.destinations.len()];
        let mut routes = Vec::new();
        for &i in &matched {
            for &d in &self.rules[i].notify {
                if !seen[d] {
                    seen[d] = true;
                    routes.push(Route {
                        destination: self.destinations[d].clone(),
                        rule: self.rules[i].name.clone(),
                        rules: names.clone(),
                    });
                }
            }
        }
        routes
    }

    /// Whether any rule matches `change`; allocates nothing.
    pub fn matches_any(&self, change: &Change) -> bool {
        let tz = self.zone(change);
        self.rules.iter().any(|r| r.matches(change, tz))
    }

    /// The zone the record's offset-less timestamps are read in: its clinic's.
    fn zone(&self, change: &Change) -> Tz {
        zone_of(&self.zones, &change.clinic)
    }

    /// The clinics the rules were checked against, in the order given.
    pub(crate) fn clinics(&self) -> &[String] {
        &self.clinics
    }

    /// For each rule in file order: did it match, and if not, the first thing that failed.
    ///
    /// The `failed` text quotes record values: for the operator's eyes (`test-rule`), never logs.
    pub fn explain(&self, change: &Change) -> Vec<Explanation> {
        let tz = self.zone(change);
        self.rules
            .iter()
            .map(|r| {
                let failed = r.explain(change, tz);
                Explanation {
                    rule: r.name.clone(),
                    matched: failed.is_none(),
                    failed,
                }
            })
            .collect()
    }

    /// Every rule's name in file order, disabled rules included.
    #[cfg(test)]
    pub(crate) fn rule_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Whether the named rule exists and is enabled.
    #[cfg(test)]
    pub(crate) fn is_enabled(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.name == name && r.enabled)
    }

    /// The number of rules, disabled ones included.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Compiling
// ---------------------------------------------------------------------------------------------

const OPERATORS: [&str; 11] = [
    "equals",
    "not_equals",
    "in",
    "not_in",
    "matches",
    "exists",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
];
const COMBINATORS: [&str; 3] = ["any", "all", "not"];

/// Checks and compiles every rule. On failure returns every problem found, each with its line, a
/// key such as `rules[new-lead-email].where[1].matches`, and a message naming the rule.
pub fn compile(specs: &[Spanned<RuleSpec>], ctx: &CompileContext) -> Result<RuleSet, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    let mut names: HashMap<&str, Option<u64>> = HashMap::new();
    for (index, spec) in specs.iter().enumerate() {
        let name = spec.value.name.value.as_str();
        let key = if name.is_empty() {
            format!("rules[{index}]")
        } else {
            format!("rules[{name}]")
        };
        let mut c = Compiler {
            rule: if name.is_empty() {
                format!("#{index}")
            } else {
                name.to_string()
            },
            ctx,
            tz: ctx.timezone,
            problems: &mut problems,
        };
        if name.is_empty() {
            c.problem(
                line_of(&spec.value.name),
                &format!("{key}.name"),
                "is empty",
            );
        } else if let Some(first) = names.get(name) {
            let at = first
                .map(|l| format!(" (first on line {l})"))
                .unwrap_or_default();
            c.problem(
                line_of(&spec.value.name),
                &format!("{key}.name"),
                &format!("the name is used by an earlier rule{at}; rule names must be unique"),
            );
        } else {
            names.insert(name, line_of(&spec.value.name));
        }
        if let Some(rule) = c.rule(spec, &key) {
            rules.push(rule);
        }
    }
    if problems.is_empty() {
        Ok(RuleSet {
            rules,
            destinations: ctx.destinations.to_vec(),
            clinics: ctx.clinics.to_vec(),
            zones: ctx.timezones.clone(),
        })
    } else {
        Err(problems)
    }
}

struct Compiler<'a, 'p> {
    rule: String,
    ctx: &'a CompileContext<'a>,
    /// The zone this rule's offset-less timestamps are read in: its clinic's when it names exactly
    /// one, else the default zone.
    tz: Tz,
    problems: &'p mut Vec<Problem>,
}

impl Compiler<'_, '_> {
    fn problem(&mut self, line: Option<u64>, key: &str, message: &str) {
        self.problems.push(Problem::at(
            line,
            key,
            format!("rule `{}`: {message}", self.rule),
        ));
    }

    fn rule(&mut self, spec: &Spanned<RuleSpec>, key: &str) -> Option<Rule> {
        let before = self.problems.len();
        let s = &spec.value;
        let rule_line = line_of(&spec.value.name).or(line_of(spec));

        let resource = match &s.resource {
            None => None,
            Some(r) if r.value.as_str() == "*" => None,
            Some(r) => {
                if !self.ctx.resources.iter().any(|k| k == r.value.as_str()) {
                    let known = known(self.ctx.resources);
                    self.problem(
                        line_of(r),
                        &format!("{key}.resource"),
                        &format!(
                            "resource `{}` is not defined under `resources:` ({known}); use one of them or \"*\"",
                            r.value.as_str()
                        ),
                    );
                }
                Some(r.value.to_string())
            }
        };

        let clinics = s
            .clinic
            .as_ref()
            .and_then(|c| self.clinics(c, &format!("{key}.clinic")));
        if let Some([one]) = clinics.as_deref() {
            self.tz = zone_of(self.ctx.timezones, one);
        }

        let mut kinds = 0u8;
        match &s.on {
            None => kinds = 7,
            Some(on) => {
                for k in &on.value {
                    kinds |= kind_bit(*k);
                }
                if on.value.is_empty() {
                    self.problem(
                        line_of(on),
                        &format!("{key}.on"),
                        "`on: []` lists no kind of change, so the rule can never fire; leave `on` out for all three",
                    );
                }
            }
        }

        let changed = s.changed.as_ref().and_then(|ch| {
            let ckey = format!("{key}.changed");
            if kinds == kind_bit(ChangeKind::Added) {
                self.problem(
                    line_of(ch),
                    &ckey,
                    "`changed` compares with the previous version, which an added record does not have, so with `on: [added]` the rule can never fire; use `where` for added records, or add `modified` to `on`",
                );
            }
            self.changed(ch, &ckey)
        });

        let mut conditions = Vec::new();
        for (i, c) in s.conditions.iter().enumerate() {
            if let Some(c) = self.cond(c, &format!("{key}.where[{i}]")) {
                conditions.push(c);
            }
        }

        let mut notify = Vec::new();
        match &s.notify {
            None => self.problem(
                rule_line,
                &format!("{key}.notify"),
                "has no `notify`; list the destinations that get its changes",
            ),
            Some(n) if n.value.is_empty() => self.problem(
                line_of(n),
                &format!("{key}.notify"),
                "`notify` is empty; list the destinations that get its changes",
            ),
            Some(n) => {
                for (i, d) in n.value.iter().enumerate() {
                    match self
                        .ctx
                        .destinations
                        .iter()
                        .position(|x| x == d.value.as_str())
                    {
                        Some(pos) => {
                            if !notify.contains(&pos) {
                                notify.push(pos);
                            }
                        }
                        None => {
                            let known = known(self.ctx.destinations);
                            self.problem(
                                line_of(d),
                                &format!("{key}.notify[{i}]"),
                                &format!(
                                    "destination `{}` is not defined under `destinations:` ({known})",
                                    d.value.as_str()
                                ),
                            );
                        }
                    }
                }
            }
        }

        (self.problems.len() == before).then(|| Rule {
            name: self.rule.clone(),
            enabled: s.enabled.unwrap_or(true),
            resource,
            clinics,
            kinds,
            changed,
            conditions,
            notify,
        })
    }

    /// The clinics of `clinic: north` or `clinic: [north, south]`, each once; `None` (and a
    /// problem) when one is not a clinic or the list is empty.
    fn clinics(&mut self, node: &Spanned<Node>, key: &str) -> Option<Box<[String]>> {
        let items: Vec<(&Spanned<Node>, String)> = match &node.value {
            Node::Seq(items) => {
                if items.is_empty() {
                    self.problem(
                        line_of(node),
                        key,
                        "`clinic: []` names no clinic, so the rule can never fire; leave `clinic` out for every clinic",
                    );
                    return None;
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, format!("{key}[{i}]")))
                    .collect()
            }
            _ => vec![(node, key.to_string())],
        };
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (item, ikey) in items {
            let name = match &item.value {
                Node::Str(s) => s.clone(),
                // A branch numbered `12` is a clinic named "12".
                Node::Int(i) => i.to_string(),
                other => {
                    self.problem(
                        line_of(item),
                        &ikey,
                        &format!(
                            "expected a clinic name or a list of them, found {}",
                            other.type_name()
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            if !self.ctx.clinics.contains(&name) {
                let only_default =
                    matches!(self.ctx.clinics, [d] if d == crate::model::DEFAULT_CLINIC);
                self.problem(
                    line_of(item),
                    &ikey,
                    &format!(
                        "clinic `{name}` is not defined under `clinics:` ({}{}); leave `clinic` out for every clinic",
                        known(self.ctx.clinics),
                        if only_default {
                            "; without `clinics:` the one clinic is `default`"
                        } else {
                            ""
                        }
                    ),
                );
                ok = false;
                continue;
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        ok.then(|| names.into_boxed_slice())
    }

    fn changed(&mut self, ch: &Spanned<Node>, key: &str) -> Option<Changed> {
        let mut fields = Vec::new();
        let mut ok = true;
        match &ch.value {
            Node::Seq(items) => {
                if items.is_empty() {
                    self.problem(
                        line_of(ch),
                        key,
                        "`changed: []` names no field, so the rule can never fire",
                    );
                    return None;
                }
                for (i, item) in items.iter().enumerate() {
                    let ikey = format!("{key}[{i}]");
                    match self.change_path(item, &ikey) {
                        Some(path) => fields.push(FieldChange {
                            path,
                            from: vec![],
                            to: vec![],
                        }),
                        None => ok = false,
                    }
                }
            }
            Node::Map(entries) => {
                if entries.is_empty() {
                    self.problem(
                        line_of(ch),
                        key,
                        "`changed: {}` names no field, so the rule can never fire",
                    );
                    return None;
                }
                for (k, v) in entries {
                    let fkey = format!("{key}.{}", k.value);
                    let path = match self.change_path(
                        &Spanned::new(Node::Str(k.value.clone()), k.referenced, k.defined),
                        &fkey,
                    ) {
                        Some(p) => p,
                        None => {
                            ok = false;
                            continue;
                        }
                    };
                    let mut fc = FieldChange {
                        path,
                        from: vec![],
                        to: vec![],
                    };
                    match &v.value {
                        Node::Null => {}
                        Node::Map(inner) => {
                            for (ik, iv) in inner {
                                let vkey = format!("{fkey}.{}", ik.value);
                                let target = match ik.value.as_str() {
                                    "from" => &mut fc.from,
                                    "to" => &mut fc.to,
                                    other => {
                                        self.problem(
                                            line_of(ik),
                                            &vkey,
                                            &format!("unknown key `{other}` under `changed`; use `from` and/or `to`"),
                                        );
                                        ok = false;
                                        continue;
                                    }
                                };
                                match &iv.value {
                                    Node::Seq(items) => {
                                        if items.is_empty() {
                                            self.problem(line_of(iv), &vkey, "an empty list can never match, so the rule can never fire");
                                            ok = false;
                                        }
                                        for (i, item) in items.iter().enumerate() {
                                            match self.scalar(item, &format!("{vkey}[{i}]")) {
                                                Some(l) => target.push(l),
                                                None => ok = false,
                                            }
                                        }
                                    }
                                    _ => match self.scalar(iv, &vkey) {
                                        Some(l) => target.push(l),
                                        None => ok = false,
                                    },
                                }
                            }
                        }
                        other => {
                            self.problem(
                                line_of(v),
                                &fkey,
                                &format!("expected `{{from: X, to: Y}}` (either may be left out), found {}", other.type_name()),
                            );
                            ok = false;
                        }
                    }
                    fields.push(fc);
                }
            }
            other => {
                self.problem(
                    line_of(ch),
                    key,
                    &format!(
                        "expected a list of field names or a map `{{Field: {{from: X, to: Y}}}}`, found {}",
                        other.type_name()
                    ),
                );
                return None;
            }
        }
        ok.then_some(Changed { fields })
    }

    fn change_path(&mut self, node: &Spanned<Node>, key: &str) -> Option<Path> {
        let Node::Str(s) = &node.value else {
            self.problem(
                line_of(node),
                key,
                &format!("expected a field name, found {}", node.value.type_name()),
            );
            return None;
        };
        if s.starts_with("previous.") {
            self.problem(
                line_of(node),
                key,
                "`changed` already compares the previous and current versions; name the field without `previous.`",
            );
            return None;
        }
        match Path::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                self.problem(line_of(node), key, &e);
                None
            }
        }
    }

    fn cond(&mut self, node: &Spanned<Node>, key: &str) -> Option<Cond> {
        let Node::Map(entries) = &node.value else {
            self.problem(
                line_of(node),
                key,
                &format!(
                    "a condition is a map such as `{{field: Source, equals: Website}}`, found {}",
                    node.value.type_name()
                ),
            );
            return None;
        };
        let mut field = None;
        let mut ops = Vec::new();
        let mut combs = Vec::new();
        let mut ok = true;
        for (k, v) in entries {
            let name = k.value.as_str();
            if name == "field" {
                field = Some((k, v));
            } else if OPERATORS.contains(&name) {
                ops.push((k, v));
            } else if COMBINATORS.contains(&name) {
                combs.push((k, v));
            } else {
                let hint = suggest(name)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.problem(
                    line_of(k).or(line_of(v)),
                    &format!("{key}.{name}"),
                    &format!(
                        "unknown operator `{name}`{hint}; a condition is `field` plus one of {}, or one of any, all, not",
                        OPERATORS.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let line = line_of(node);
        if let Some((k, v)) = combs.first() {
            if combs.len() + ops.len() + usize::from(field.is_some()) > 1 {
                let others: Vec<String> = entries
                    .iter()
                    .map(|(o, _)| o.value.as_str())
                    .filter(|o| *o != k.value.as_str())
                    .map(|o| format!("`{o}`"))
                    .collect();
                self.problem(
                    line,
                    key,
                    &format!(
                        "`{}` must stand alone in its condition, but it is written with {}; put the other keys in their own condition",
                        k.value,
                        others.join(", ")
                    ),
                );
                return None;
            }
            let ckey = format!("{key}.{}", k.value);
            return match k.value.as_str() {
                "not" => self.cond(v, &ckey).map(|c| Cond::Not(Box::new(c))),
                comb => {
                    let Node::Seq(items) = &v.value else {
                        self.problem(
                            line_of(v),
                            &ckey,
                            &format!(
                                "`{comb}` takes a list of conditions, found {}",
                                v.value.type_name()
                            ),
                        );
                        return None;
                    };
                    if items.is_empty() {
                        self.problem(
                            line_of(v),
                            &ckey,
                            &format!(
                                "`{comb}: []` has no conditions; {}",
                                if comb == "any" {
                                    "it can never hold, so the rule can never fire"
                                } else {
                                    "leave it out"
                                }
                            ),
                        );
                        return None;
                    }
                    let mut cs = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match self.cond(item, &format!("{ckey}[{i}]")) {
                            Some(c) => cs.push(c),
                            None => ok = false,
                        }
                    }
                    if !ok {
                        return None;
                    }
                    Some(if comb == "any" {
                        Cond::Any(cs)
                    } else {
                        Cond::All(cs)
                    })
                }
            };
        }
        let path = match field {
            None => {
                self.problem(
                    line,
                    &format!("{key}.field"),
                    "the condition has no `field`; write e.g. `{field: Source, equals: Website}`",
                );
                None
            }
            Some((k, v)) => match &v.value {
                Node::Str(s) => match Path::parse(s) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.problem(line_of(v).or(line_of(k)), &format!("{key}.field"), &e);
                        None
                    }
                },
                other => {
                    self.problem(
                        line_of(v),
                        &format!("{key}.field"),
                        &format!("expected a field name, found {}", other.type_name()),
                    );
                    None
                }
            },
        };
        let what = path
            .as_ref()
            .map(|p| format!("the condition on `{}`", p.text))
            .unwrap_or_else(|| "the condition".into());
        let op = match ops.as_slice() {
            [] => {
                if ok {
                    self.problem(
                        line,
                        key,
                        &format!(
                            "{what} has no operator; add one of {}",
                            OPERATORS.join(", ")
                        ),
                    );
                }
                return None;
            }
            [one] => *one,
            many => {
                let names: Vec<String> =
                    many.iter().map(|(k, _)| format!("`{}`", k.value)).collect();
                self.problem(
                    line,
                    key,
                    &format!(
                        "{what} has {} operators ({}); write one operator per condition, each its own list item",
                        many.len(),
                        names.join(", ")
                    ),
                );
                return None;
            }
        };
        let test = self.test(op.0, op.1, &format!("{key}.{}", op.0.value));
        match (path, test, ok) {
            (Some(path), Some(test), true) => Some(Cond::Field { path, test }),
            _ => None,
        }
    }

    fn test(&mut self, k: &Spanned<String>, v: &Spanned<Node>, key: &str) -> Option<Test> {
        let line = line_of(v).or(line_of(k));
        match k.value.as_str() {
            "equals" => self.scalar(v, key).map(Test::Equals),
            "not_equals" => self.scalar(v, key).map(Test::NotEquals),
            "contains" => self.scalar(v, key).map(Test::Contains),
            op @ ("in" | "not_in") => {
                let Node::Seq(items) = &v.value else {
                    self.problem(
                        line,
                        key,
                        &format!(
                            "`{op}` takes a list, e.g. `{op}: [Website, Facebook]`; found {}",
                            v.value.type_name()
                        ),
                    );
                    return None;
                };
                if items.is_empty() && op == "in" {
                    self.problem(
                        line,
                        key,
                        "`in: []` can never hold, so the rule can never fire",
                    );
                    return None;
                }
                let mut lits = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.scalar(item, &format!("{key}[{i}]")) {
                        Some(l) => lits.push(l),
                        None => ok = false,
                    }
                }
                ok.then(|| {
                    if op == "in" {
                        Test::In(lits)
                    } else {
                        Test::NotIn(lits)
                    }
                })
            }
            "matches" => {
                let Node::Str(pattern) = &v.value else {
                    self.problem(
                        line,
                        key,
                        &format!(
                            "`matches` takes a regular expression written as a string, found {}",
                            v.value.type_name()
                        ),
                    );
                    return None;
                };
                match regex::Regex::new(pattern) {
                    Ok(re) => Some(Test::Matches(re)),
                    Err(e) => {
                        let text = e.to_string();
                        let last = text.lines().last().unwrap_or_default().trim();
                        let detail = last.strip_prefix("error: ").unwrap_or(last);
                        self.problem(
                            line,
                            key,
                            &format!("invalid regular expression {pattern:?}: {detail}"),
                        );
                        None
                    }
                }
            }
            "exists" => match v.value {
                Node::Bool(b) => Some(Test::Exists(b)),
                _ => {
                    self.problem(
                        line,
                        key,
                        &format!(
                            "`exists` takes true or false, found {}",
                            v.value.type_name()
                        ),
                    );
                    None
                }
            },
            op => {
                let ord = match op {
                    "gt" => Ord4::Gt,
                    "gte" => Ord4::Gte,
                    "lt" => Ord4::Lt,
                    _ => Ord4::Lte,
                };
                let bound = match &v.value {
                    Node::Int(i) => Some((Bound::Num(*i as f64), i.to_string())),
                    Node::Float(f) => Some((Bound::Num(*f), f.to_string())),
                    Node::Str(s) => {
                        if let Some(f) = value::parse_num_str(s) {
                            Some((Bound::Num(f), s.clone()))
                        } else {
                            match value::parse_time(s, self.tz) {
                                Time::At(t) => Some((Bound::Time(t), s.clone())),
                                Time::Unset => {
                                    self.problem(
                                        line,
                                        key,
                                        &format!(
                                            "{s:?} is the unset date, which no value is ever {}",
                                            ord.words()
                                        ),
                                    );
                                    return None;
                                }
                                Time::Invalid => None,
                            }
                        }
                    }
                    _ => None,
                };
                match bound {
                    Some((b, text)) => Some(Test::Cmp(ord, b, text.into())),
                    None => {
                        let shown = match &v.value {
                            Node::Str(s) => format!("{s:?}"),
                            other => other.type_name().to_string(),
                        };
                        self.problem(
                            line,
                            key,
                            &format!("`{op}` compares numbers and timestamps, but {shown} is neither; write a number (e.g. 10) or an RFC 3339 time (e.g. 2026-11-30T09:00:00+05:00)"),
                        );
                        None
                    }
                }
            }
        }
    }

    fn scalar(&mut self, v: &Spanned<Node>, key: &str) -> Option<Lit> {
        match &v.value {
            Node::Null => Some(Lit::null()),
            Node::Bool(b) => Some(Lit::bool(*b)),
            Node::Int(i) => Some(Lit::int(*i)),
            Node::Float(f) => Some(Lit::float(*f)),
            Node::Str(s) => Some(Lit::str(s)),
            other => {
                self.problem(
                    line_of(v),
                    key,
                    &format!("expected a single value (string, number, true/false or null), found {}; for a list of values use `in`", other.type_name()),
                );
                None
            }
        }
    }
}

/// `north`, or `[north, south]` for several.
fn clinic_list(cs: &[String]) -> String {
    match cs {
        [one] => one.clone(),
        _ => format!("[{}]", cs.join(", ")),
    }
}

fn known(names: &[String]) -> String {
    if names.is_empty() {
        "none are defined".into()
    } else {
        format!("defined: {}", names.join(", "))
    }
}

/// The operator or combinator closest to a misspelt key, if one is close.
fn suggest(name: &str) -> Option<&'static str> {
    OPERATORS
        .iter()
        .chain(COMBINATORS.iter())
        .map(|op| (edit_distance(name, op), *op))
        .filter(|(d, op)| *d <= 2 && *d < op.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, op)| op)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
