//! A small, real SMTP server that keeps every message it receives in memory: the `demo` command's
//! mail catcher and the integration tests' SMTP peer.
//!
//! It speaks EHLO/HELO, STARTTLS (tokio-rustls, when a certificate is given), AUTH PLAIN and
//! LOGIN (when credentials are required), MAIL, RCPT, DATA (with dot-unstuffing), RSET, NOOP,
//! VRFY and QUIT. It can reject chosen recipients with 550 and answer 421 to the first N
//! transactions, to exercise a client's failure handling. It never logs message contents.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Notify;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// The largest message (and line) the catcher accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 25 * 1024 * 1024;

/// How the catcher behaves.
#[derive(Debug, Clone, Default)]
pub struct CatcherOptions {
    /// Recipients answered with `550 5.1.1` at RCPT (compared case-insensitively).
    pub reject_recipients: Vec<String>,
    /// The first N MAIL or RCPT commands (over all connections) get `421 4.7.0` and the connection
    /// is closed, as a busy server does.
    pub tempfail_first: u32,
    /// `(certificate chain PEM, private key PEM)`: offer STARTTLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// `(user, password)`: require AUTH PLAIN or LOGIN before MAIL.
    pub require_auth: Option<(String, String)>,
}

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtMessage {
    /// The MAIL FROM address (without angle brackets).
    pub mail_from: String,
    /// The accepted RCPT TO addresses.
    pub rcpt_to: Vec<String>,
    /// The raw message after dot-unstuffing, lines ending in CRLF.
    pub data: String,
    /// When DATA completed.
    pub(crate) received_at: DateTime<Utc>,
    /// Whether the message came over TLS.
    pub tls: bool,
    /// The user that authenticated, if any.
    pub auth_user: Option<String>,
}

impl CaughtMessage {
    /// The first header of that name (case-insensitive), unfolded; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(f) = found.as_mut() {
                    f.push(' ');
                    f.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    found = Some(v.trim().to_string());
                }
            }
        }
        found
    }
}

/// Shared state of a running catcher.
struct Shared {
    opts: CatcherOptions,
    acceptor: Option<TlsAcceptor>,
    messages: Mutex<Vec<CaughtMessage>>,
    notify: Notify,
    tempfails: AtomicU32,
    /// AUTH commands received, over TLS or not.
    auth_commands: AtomicU32,
    /// AUTH commands received on a connection without TLS.
    cleartext_auth_commands: AtomicU32,
}

/// Starts catchers.
#[derive(Debug)]
pub struct Catcher;

/// A running catcher. Dropping it stops accepting connections.
pub struct CatcherHandle {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for CatcherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatcherHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for CatcherHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CatcherHandle {
    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<CaughtMessage> {
        self.shared
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` messages have arrived or `timeout` has passed, and returns all
    /// messages received by then (check the length: fewer than `n` means it timed out).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<CaughtMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let now = self.messages();
            if now.len() >= n {
                return now;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.messages();
            }
        }
    }

    /// How many AUTH commands clients sent, and how many of them on a connection without TLS
    /// (where the credentials travelled in clear).
    pub fn auth_commands(&self) -> (u32, u32) {
        (
            self.shared.auth_commands.load(Ordering::SeqCst),
            self.shared.cleartext_auth_commands.load(Ordering::SeqCst),
        )
    }
}

/// Errors starting a catcher.
#[derive(Debug, thiserror::Error)]
pub enum CatcherError {
    /// Binding the address failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The certificate or key could not be used.
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, CatcherError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CatcherError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CatcherError::Tls("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| CatcherError::Tls(format!("key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CatcherError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| CatcherError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl Catcher {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port) and serves until the handle is dropped.
    pub async fn start(
        addr: impl ToSocketAddrs,
        opts: CatcherOptions,
    ) -> Result<CatcherHandle, CatcherError> {
        let acceptor = match &opts.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            acceptor,
            messages: Mutex::new(Vec::new()),
            notify: Notify::new(),
            tempfails: AtomicU32::new(0),
            auth_commands: AtomicU32::new(0),
            cleartext_auth_commands: AtomicU32::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let s = s.clone();
                            conns.spawn(async move {
                                if let Err(e) = serve(stream, s).await {
                                    tracing::debug!(error = %e, "smtp catcher connection ended");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "smtp catcher accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(CatcherHandle { addr, shared, task })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    io: BufReader<Box<dyn Stream>>,
    tls: bool,
}

impl Conn {
    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(text.as_bytes()).await?;
        w.write_all(b"\r\n").await?;
        w.flush().await
    }

    /// One line without its line ending; `None` at end of stream.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = (&mut self.io)
            .take(MAX_MESSAGE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

use tokio::io::AsyncReadExt as _;

#[derive(Default)]
struct Txn {
    from: Option<String>,
    rcpts: Vec<String>,
}

/// The address inside `FROM:<a@b> SIZE=..` / `TO:<a@b>`.
fn path_arg(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let (_, after) = rest.split_once(':')?;
    let after = after.trim_start();
    if let Some(inner) = after.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_string())
    } else {
        after.split_whitespace().next().map(str::to_string)
    }
}

fn b64(s: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

async fn serve(stream: TcpStream, s: Arc<Shared>) -> std::io::Result<()> {
    let mut c = Conn {
        io: BufReader::new(Box::new(stream) as Box<dyn Stream>),
        tls: false,
    };
    c.reply("220 catcher ESMTP ready").await?;
    let mut txn = Txn::default();
    let mut authed: Option<String> = None;
    while let Some(line) = c.line().await? {
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r.to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => {
                txn = Txn::default();
                let mut lines = vec![
                    "catcher greets you".to_string(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                ];
                lines.push(format!("SIZE {MAX_MESSAGE_BYTES}"));
                if s.acceptor.is_some() && !c.tls {
                    lines.push("STARTTLS".into());
                }
                if s.opts.require_auth.is_some() && (c.tls || s.acceptor.is_none()) {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                let last = lines.len() - 1;
                let mut out = String::new();
                for (i, l) in lines.iter().enumerate() {
                    out.push_str(&format!("250{}{l}", if i == last { ' ' } else { '-' }));
                    if i != last {
                        out.push_str("\r\n");
                    }
                }
                c.reply(&out).await?;
            }
            "HELO" => {
                txn = Txn::default();
                c.reply("250 catcher").await?;
            }
            "STARTTLS" => match (&s.acceptor, c.tls) {
                (Some(acceptor), false) => {
                    c.reply("220 2.0.0 Ready to start TLS").await?;
                    // Anything the client pipelined before the handshake is discarded (RFC 3207).
                    let plain = std::mem::replace(
                        &mut c.io,
                        BufReader::new(Box::new(tokio::io::empty()) as Box<dyn Stream>),
                    )
                    .into_inner();
                    let tls = acceptor.accept(plain).await?;
                    c = Conn {
                        io: BufReader::new(Box::new(tls) as Box<dyn Stream>),
                        tls: true,
                    };
                    txn = Txn::default();
                    authed = None;
                }
                _ => c.reply("454 4.7.0 TLS not available").await?,
            },
            "AUTH" => {
                s.auth_commands.fetch_add(1, Ordering::SeqCst);
                if !c.tls {
                    s.cleartext_auth_commands.fetch_add(1, Ordering::SeqCst);
                }
                let Some((user, pass)) = s.opts.require_auth.clone() else {
                    c.reply("503 5.5.1 AUTH not offered").await?;
                    continue;
                };
                if authed.is_some() {
                    c.reply("503 5.5.1 Already authenticated").await?;
                    continue;
                }
                let mut parts = rest.split_whitespace();
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = parts.next().map(str::to_string);
                let creds = match mech.as_str() {
                    "PLAIN" => {
                        let resp = match initial {
                            Some(i) => Some(i),
                            None => {
                                c.reply("334 ").await?;
                                c.line().await?
                            }
                        };
                        resp.and_then(|r| b64(&r)).and_then(|d| {
                            let mut f = d.split('\0');
                            let _authz = f.next()?;
                            Some((f.next()?.to_string(), f.next()?.to_string()))
                        })
                    }
                    "LOGIN" => {
                        let u = match initial {
                            Some(i) => Some(i),
                            None => {
                                c.reply("334 VXNlcm5hbWU6").await?;
                                c.line().await?
                            }
                        };
                        c.reply("334 UGFzc3dvcmQ6").await?;
                        let p = c.line().await?;
                        match (u.and_then(|u| b64(&u)), p.and_then(|p| b64(&p))) {
                            (Some(u), Some(p)) => Some((u, p)),
                            _ => None,
                        }
                    }
                    _ => {
                        c.reply("504 5.5.4 Unrecognized authentication type")
                            .await?;
                        continue;
                    }
                };
                match creds {
                    Some((u, p)) if u == user && p == pass => {
                        authed = Some(u);
                        c.reply("235 2.7.0 Authentication successful").await?;
                    }
                    _ => {
                        c.reply("535 5.7.8 Authentication credentials invalid")
                            .await?
                    }
                }
            }
            "MAIL" => {
                if s.opts.require_auth.is_some() && authed.is_none() {
                    c.reply("530 5.7.0 Authentication required").await?;
                    continue;
                }
                if tempfail(&s) {
                    c.reply("421 4.7.0 Try again later, closing connection")
                        .await?;
                    return Ok(());
                }
                match path_arg(&rest) {
                    Some(from) => {
                        txn = Txn {
                            from: Some(from),
                            rcpts: Vec::new(),
                        };
                        c.reply("250 2.1.0 OK").await?;
                    }
                    None => c.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await?,
                }
            }
            "RCPT" => {
                if txn.from.is_none() {
                    c.reply("503 5.5.1 MAIL first").await?;
                    continue;
                }
                if tempfail(&s) {
                    c.reply("421 4.7.0 Try again later, closing connection")
                        .await?;
                    return Ok(());
                }
                match path_arg(&rest) {
                    Some(to)
                        if s.opts
                            .reject_recipients
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(&to)) =>
                    {
                        c.reply("550 5.1.1 Mailbox unavailable").await?
                    }
                    Some(to) => {
                        txn.rcpts.push(to);
                        c.reply("250 2.1.5 OK").await?;
                    }
                    None => c.reply("501 5.5.4 Syntax: RCPT TO:<address>").await?,
                }
            }
            "DATA" => {
                if txn.rcpts.is_empty() {
                    c.reply("503 5.5.1 RCPT first").await?;
                    continue;
                }
                c.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = String::new();
                let mut too_big = false;
                loop {
                    let Some(l) = c.line().await? else {
                        return Ok(());
                    };
                    if l == "." {
                        break;
                    }
                    let l = l.strip_prefix('.').unwrap_or(&l);
                    if data.len() + l.len() > MAX_MESSAGE_BYTES {
                        too_big = true;
                        continue;
                    }
                    data.push_str(l);
                    data.push_str("\r\n");
                }
                if too_big {
                    c.reply("552 5.3.4 Message too big").await?;
                } else {
                    let msg = CaughtMessage {
                        mail_from: txn.from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut txn.rcpts),
                        data,
                        received_at: Utc::now(),
                        tls: c.tls,
                        auth_user: authed.clone(),
                    };
                    if let Ok(mut m) = s.messages.lock() {
                        m.push(msg);
                    }
                    s.notify.notify_waiters();
                    c.reply("250 2.0.0 OK queued").await?;
                }
                txn = Txn::default();
            }
            "RSET" => {
                txn = Txn::default();
                c.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => c.reply("250 2.0.0 OK").await?,
            "VRFY" => c.reply("252 2.5.0 Cannot VRFY user").await?,
            "QUIT" => {
                c.reply("221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => c.reply("500 5.5.2 Command not recognized").await?,
        }
    }
    Ok(())
}

/// Counts one MAIL/RCPT towards `tempfail_first`; true while it should still be refused.
fn tempfail(s: &Shared) -> bool {
    s.tempfails
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < s.opts.tempfail_first).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn talk(addr: SocketAddr, script: &[&str]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for l in script {
            s.write_all(l.as_bytes()).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
        }
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn raw_session_with_dot_unstuffing_and_rejection() {
        let h = Catcher::start(
            "127.0.0.1:0",
            CatcherOptions {
                reject_recipients: vec!["no@x.test".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let out = talk(
            h.addr,
            &[
                "EHLO me",
                "NOOP",
                "MAIL FROM:<a@x.test> SIZE=10",
                "RCPT TO:<no@x.test>",
                "RCPT TO:<B@x.test>",
                "DATA",
                "Subject: hi",
                "",
                "..leading dot",
                "body",
                ".",
                "RSET",
                "QUIT",
            ],
        )
        .await;
        assert!(out.contains("550 5.1.1"), "{out}");
        assert!(out.contains("250 2.0.0 OK queued"), "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"));
        let m = h.wait_for(1, Duration::from_secs(1)).await;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mail_from, "a@x.test");
        assert_eq!(m[0].rcpt_to, vec!["B@x.test"]);
        assert_eq!(m[0].data, "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n");
        assert_eq!(m[0].header("subject").as_deref(), Some("hi"));
    }

    #[tokio::test]
    async fn tempfail_and_auth() {
        let h = Catcher::start(
            "127.0.0.1:0",
            CatcherOptions {
                tempfail_first: 1,
                require_auth: Some(("u".into(), "p".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let out = talk(h.addr, &["HELO me", "MAIL FROM:<a@x.test>", "QUIT"]).await;
        assert!(out.contains("530"), "{out}");
        // AUTH PLAIN \0u\0p
        let out = talk(
            h.addr,
            &["EHLO me", "AUTH PLAIN AHUAcA==", "MAIL FROM:<a@x.test>"],
        )
        .await;
        assert!(out.contains("250 AUTH PLAIN LOGIN"), "{out}");
        assert!(out.contains("235"), "{out}");
        assert!(
            out.ends_with("421 4.7.0 Try again later, closing connection\r\n"),
            "{out}"
        );
        let out = talk(
            h.addr,
            &[
                "EHLO me",
                "AUTH LOGIN",
                "dQ==",
                "cA==",
                "MAIL FROM:<a@x.test>",
                "QUIT",
            ],
        )
        .await;
        assert!(out.contains("235") && out.contains("250 2.1.0"), "{out}");
        let out = talk(h.addr, &["EHLO me", "AUTH LOGIN dQ==", "eA==", "QUIT"]).await;
        assert!(out.contains("535"), "{out}");
    }
}
