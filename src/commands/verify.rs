//! `verify`: check a Standard Webhooks signature, for people writing receivers.

use crate::config::Secret;
use anyhow::Context;
use chrono::Utc;
use std::path::PathBuf;
use std::process::ExitCode;

/// The environment variable `verify` reads the secret from when no flag gives it.
pub(crate) const VERIFY_SECRET_ENV: &str = "CLINICEA_WEBHOOK_SECRET";
/// The older name of [`VERIFY_SECRET_ENV`], still read after it.
pub(crate) const VERIFY_SECRET_ENV_OLD: &str = "WEBHOOK_SECRET";

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The endpoint's secret (`whsec_...`). Discouraged: a command line is visible to every user
    /// of the machine (`ps`) and stays in the shell history; use --secret-file or the
    /// CLINICEA_WEBHOOK_SECRET environment variable.
    #[arg(long, conflicts_with = "secret_file")]
    pub(crate) secret: Option<String>,
    /// A file holding the endpoint's secret (`whsec_...`; surrounding whitespace is ignored).
    /// Without this and --secret, CLINICEA_WEBHOOK_SECRET (or WEBHOOK_SECRET) is read.
    #[arg(long)]
    pub(crate) secret_file: Option<PathBuf>,
    /// The `webhook-id` header.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// The `webhook-timestamp` header.
    #[arg(long)]
    pub(crate) timestamp: Option<String>,
    /// The `webhook-signature` header.
    #[arg(long)]
    pub(crate) signature: Option<String>,
    /// A file of `name: value` header lines (as a receiver logged them) instead of the three flags.
    #[arg(long)]
    pub(crate) headers_file: Option<PathBuf>,
    /// The body, as received.
    #[arg(long, conflicts_with = "body_file")]
    pub(crate) body: Option<String>,
    /// A file with the body, as received.
    #[arg(long)]
    pub(crate) body_file: Option<PathBuf>,
    /// Accept any timestamp age (for checking a logged request later).
    #[arg(long)]
    pub(crate) ignore_time: bool,
}

/// The secret `verify` uses: `--secret-file`, else `--secret` (with a warning on stderr), else
/// `env(CLINICEA_WEBHOOK_SECRET)`, else `env(WEBHOOK_SECRET)`. Errors never contain the secret.
pub(crate) fn verify_secret(
    args: &VerifyArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Secret> {
    let (text, from) = if let Some(f) = &args.secret_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the secret file {}", f.display()))?;
        (text, format!("the secret file {}", f.display()))
    } else if let Some(s) = &args.secret {
        eprintln!(
            "warning: --secret puts the secret in the process list and the shell history; use --secret-file or {VERIFY_SECRET_ENV}"
        );
        (s.clone(), "--secret".to_string())
    } else if let Some(s) = env(VERIFY_SECRET_ENV).filter(|s| !s.trim().is_empty()) {
        (s, VERIFY_SECRET_ENV.to_string())
    } else if let Some(s) = env(VERIFY_SECRET_ENV_OLD).filter(|s| !s.trim().is_empty()) {
        (s, VERIFY_SECRET_ENV_OLD.to_string())
    } else {
        anyhow::bail!(
            "give the endpoint's secret with --secret-file PATH or the {VERIFY_SECRET_ENV} environment variable"
        );
    };
    Secret::parse(&text).with_context(|| format!("the secret from {from}"))
}

/// `verify`: check a Standard Webhooks signature; exits 1 when it does not match.
pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let secret = verify_secret(args, |name| std::env::var(name).ok())?;
    let (text, valid) = verify_text(args, &secret, Utc::now().timestamp())?;
    print!("{text}");
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks the message `args` name against `secret` at Unix time `now` (the message's own time
/// with `--ignore-time`): what `verify` prints, and whether the signature matched.
pub(crate) fn verify_text(
    args: &VerifyArgs,
    secret: &Secret,
    now: i64,
) -> anyhow::Result<(String, bool)> {
    let mut id = args.id.clone();
    let mut ts = args.timestamp.clone();
    let mut sig = args.signature.clone();
    if let Some(f) = &args.headers_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim().to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "webhook-id" => id = id.or(Some(v)),
                    "webhook-timestamp" => ts = ts.or(Some(v)),
                    "webhook-signature" => sig = sig.or(Some(v)),
                    _ => {}
                }
            }
        }
    }
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give the body with --body or --body-file"),
    };
    let (Some(id), Some(ts), Some(sig)) = (id, ts, sig) else {
        anyhow::bail!(
            "need webhook-id, webhook-timestamp and webhook-signature (flags or --headers-file)"
        );
    };
    let now = if args.ignore_time {
        ts.parse::<i64>().unwrap_or(0)
    } else {
        now
    };
    match crate::deliver::webhook::verify(
        secret,
        &id,
        &ts,
        &sig,
        &body,
        now,
        crate::deliver::webhook::DEFAULT_TOLERANCE,
    ) {
        Ok(()) => Ok((
            format!("valid: the signature matches (webhook-id {id})\n"),
            true,
        )),
        Err(e) => Ok((format!("INVALID: {e}\n"), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::webhook::sign;

    fn args(id: &str, ts: i64, sig: &str, body: &str) -> VerifyArgs {
        VerifyArgs {
            secret: None,
            secret_file: None,
            id: Some(id.to_string()),
            timestamp: Some(ts.to_string()),
            signature: Some(sig.to_string()),
            headers_file: None,
            body: Some(body.to_string()),
            body_file: None,
            ignore_time: false,
        }
    }

    #[test]
    fn the_text_says_valid_for_a_signed_body_and_invalid_for_a_changed_one_or_an_old_one() {
        let secret = Secret::generate();
        let (ts, body) = (1_700_000_000, r#"{"type":"leads.added"}"#);
        let sig = sign(std::slice::from_ref(&secret), "msg_1", ts, body.as_bytes());
        let (text, valid) = verify_text(&args("msg_1", ts, &sig, body), &secret, ts).unwrap();
        assert_eq!(text, "valid: the signature matches (webhook-id msg_1)\n");
        assert!(valid);

        let tampered = args("msg_1", ts, &sig, r#"{"type":"leads.deleted"}"#);
        let (text, valid) = verify_text(&tampered, &secret, ts).unwrap();
        assert!(text.starts_with("INVALID: "), "{text}");
        assert!(!valid);

        // A day later the timestamp is out of tolerance, unless the time is ignored.
        let later = ts + 86_400;
        let (text, valid) = verify_text(&args("msg_1", ts, &sig, body), &secret, later).unwrap();
        assert!(text.starts_with("INVALID: ") && !valid, "{text}");
        let mut ignoring = args("msg_1", ts, &sig, body);
        ignoring.ignore_time = true;
        assert!(verify_text(&ignoring, &secret, later).unwrap().1);
    }
}
