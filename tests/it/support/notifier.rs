//! The real binary as a child process: [`Notifier`] for long-running children (`run`, `demo`,
//! `sandbox`) that are signalled, killed and read while they run, and [`cli`] for one-shot
//! commands run to completion.
//!
//! A child process has its own metrics recorder (so counters start at zero) and shows what
//! really reaches its stdout and stderr. Its output goes to files in a directory of the test's
//! (a pipe nobody reads could fill up and stall it), appended to, so a restarted child with the
//! same tag adds to one log.

use super::TestDir;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_clinicea-notifier");

/// How long [`Launch::start`] waits for `listening on http://ADDR` unless told otherwise.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a one-shot [`cli`] command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the waits look again.
const POLL_STEP: Duration = Duration::from_millis(20);

/// A child to be started: the binary, its arguments, environment and output files.
pub struct Launch {
    dir: PathBuf,
    /// The child's working directory; the test binary's own when `None`.
    cwd: Option<PathBuf>,
    config: Option<PathBuf>,
    flags: Vec<String>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    tag: String,
    ready_within: Duration,
}

impl Launch {
    /// Names the output files `TAG.stdout` and `TAG.stderr`.
    pub fn tag(mut self, tag: &str) -> Launch {
        self.tag = tag.into();
        self
    }

    /// Global flags before the command (`-q`, `--log-format json`).
    pub fn flags(mut self, flags: &[&str]) -> Launch {
        self.flags.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    /// Adds variables to the child's environment (which has no `RUST_LOG` unless given here).
    pub fn env(mut self, env: &[(&str, &str)]) -> Launch {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// How long [`Launch::start`] waits for the child to listen.
    pub fn ready_within(mut self, timeout: Duration) -> Launch {
        self.ready_within = timeout;
        self
    }

    /// Starts the child and returns at once.
    pub fn spawn(self) -> Notifier {
        let stdout = self.dir.join(format!("{}.stdout", self.tag));
        let stderr = self.dir.join(format!("{}.stderr", self.tag));
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("an output file")
        };
        let (out, err) = (append(&stdout), append(&stderr));
        let from = (len(&stdout), len(&stderr));
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(&self.flags);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.args(&self.command)
            .env_remove("RUST_LOG")
            .env_remove("CLINICEA_NOTIFIER_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("the binary starts");
        let pid = child.id().expect("a running child has a pid");
        Notifier {
            child,
            pid,
            addr: None,
            stdout,
            stderr,
            from,
            ready_within: self.ready_within,
        }
    }

    /// Starts the child and waits until it prints `listening on http://ADDR` (panics, with its
    /// log, if it exits first or takes longer than [`Launch::ready_within`]).
    pub async fn start(self) -> Notifier {
        let mut n = self.spawn();
        let line = n
            .stdout_line(n.ready_within, |l| l.contains("listening on http://"))
            .await;
        let Some(line) = line else {
            panic!(
                "`run` did not start listening within {:?}:\n{}",
                n.ready_within,
                n.stderr_text()
            )
        };
        let addr = line.split("listening on http://").nth(1).unwrap().trim();
        n.addr = Some(addr.parse().expect("a socket address"));
        n
    }
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A running child of the binary. Dropping it kills it.
pub struct Notifier {
    child: tokio::process::Child,
    /// The child's pid.
    pub pid: u32,
    addr: Option<std::net::SocketAddr>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Where this child's output starts in the (appended) files.
    from: (u64, u64),
    ready_within: Duration,
}

impl Notifier {
    /// `clinicea-notifier --config CONFIG run` on the test's config, output to `run.*` in the
    /// test's directory.
    pub fn run(t: &TestDir) -> Launch {
        Launch {
            dir: t.dir.path().to_path_buf(),
            cwd: None,
            config: Some(t.config.clone()),
            flags: Vec::new(),
            command: vec!["run".into()],
            env: Vec::new(),
            tag: "run".into(),
            ready_within: READY_WITHIN,
        }
    }

    /// `clinicea-notifier ARGS` without a config, working in `dir` (which also gets its output).
    pub fn command(dir: &Path, args: &[&str]) -> Launch {
        Launch {
            dir: dir.to_path_buf(),
            cwd: Some(dir.to_path_buf()),
            config: None,
            flags: Vec::new(),
            command: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            tag: args.first().copied().unwrap_or("child").into(),
            ready_within: READY_WITHIN,
        }
    }

    /// Where it serves `/metrics`, `/healthz` and `/readyz` (once [`Launch::start`] saw it).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr.expect("started with Launch::start")
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// SIGHUP, then waits until the log holds `outcome` (`config reloaded`, `reload rejected`)
    /// `n` times; false on timeout.
    pub async fn reload(&self, outcome: &str, n: usize, timeout: Duration) -> bool {
        self.signal("HUP");
        self.wait_log(outcome, n, timeout).await
    }

    /// SIGKILL (`kill -9`), then reaps the child.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL is delivered");
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait works"))
    }

    /// SIGTERM, then waits up to `timeout` for the child to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        self.wait_exit(timeout).await
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What this child wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        read_from(&self.stdout, self.from.0)
    }

    /// What this child wrote to stderr (its log) so far.
    pub fn stderr_text(&self) -> String {
        read_from(&self.stderr, self.from.1)
    }

    /// The stderr file, holding the logs of every child started with the same tag.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Waits up to `timeout` for a whole stdout line that `want` accepts; `None` on timeout or
    /// when the child exits first.
    pub async fn stdout_line(
        &mut self,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let start = Instant::now();
        loop {
            // Asked before reading: a child that had exited by then has written all it will.
            let running = self.is_running();
            let out = self.stdout_text();
            let whole = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(line) = whole.lines().find(|l| want(l)) {
                return Some(line.to_string());
            }
            if !running || start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// Waits until the child's log holds `needle` `n` times; false on timeout.
    pub async fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.stderr_text().matches(needle).count() >= n {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// The value of a gauge or counter without labels from the child's `/metrics`; `None` when
    /// it cannot be scraped or has no such sample.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        super::Scrape::parse(&text).get(name, &[])
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Runs a one-shot command (`once`, `status`, `dead list`, ...) against the test's config.
pub async fn cli(t: &TestDir, args: &[&str]) -> std::process::Output {
    cli_env(t, args, &[]).await
}

/// [`cli`] with `env` added to the environment (`RUST_LOG` is removed unless given here).
pub async fn cli_env(t: &TestDir, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(&t.config)
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
        Ok(out) => out.expect("the binary starts"),
        Err(_) => panic!("`{}` did not finish within {CLI_TIMEOUT:?}", args.join(" ")),
    }
}

/// `check --config FILE`, run to completion: whether it passed, and stdout then stderr.
pub fn check(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
