//! Where the notifier may connect: the egress rules for the Clinicea API, webhook and chat
//! destinations and the SMTP server.
//!
//! Health data must not leak to a cloud's metadata service or to a machine on the clinic's own
//! network because a URL or a DNS answer pointed there. So every address is sorted into a
//! [`AddrClass`]: loopback (allowed: tests, a local relay), public (allowed), private ranges
//! (allowed only where the config opts in with `allow_private: true`), and link-local, metadata,
//! unspecified and multicast addresses (never allowed). IPv4-mapped IPv6 (`::ffff:10.0.0.1`) and
//! NAT64 (`64:ff9b::a9fe:a9fe`) addresses count as the IPv4 address inside them.
//!
//! The rules are applied twice: by `check` to literal IP hosts and well-known metadata names
//! ([`Policy::check_url`], [`Policy::check_host`]), and at connect time to what a name resolves
//! to, by the [`GuardedResolver`] every HTTP client is built with (and [`Policy::resolve_checked`]
//! for SMTP), so a name whose DNS answer is a blocked address is refused before any connection is
//! attempted.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// What kind of address an IP is, for the egress rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrClass {
    /// This machine (127.0.0.0/8, `::1`): always allowed.
    Loopback,
    /// Anything else routable: allowed.
    Public,
    /// A private range, named (e.g. `10.0.0.0/8`): allowed only with `allow_private: true`.
    Private(&'static str),
    /// Never allowed, with why (a cloud metadata address, link-local, ...).
    Forbidden(&'static str),
}

/// The metadata services of the big clouds, by address. They hand out credentials to whoever
/// asks from inside the instance, so nothing is ever sent there.
const METADATA_V4: [Ipv4Addr; 3] = [
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle.
    Ipv4Addr::new(169, 254, 169, 254),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
    // Oracle Cloud Classic.
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 metadata address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);

/// Host names of metadata services (compared without case and without a trailing dot).
pub(crate) const METADATA_NAMES: [&str; 5] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

const METADATA_WHY: &str = "a cloud metadata address";

/// Sorts an IP address into its [`AddrClass`].
pub(crate) fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddrClass::Forbidden(METADATA_WHY)
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if a == 0 {
        AddrClass::Forbidden("the unspecified network 0.0.0.0/8")
    } else if ip.is_link_local() {
        AddrClass::Forbidden("link-local (169.254.0.0/16)")
    } else if ip.is_multicast() || ip.is_broadcast() {
        AddrClass::Forbidden("not a unicast address (multicast or broadcast)")
    } else if a == 10 {
        AddrClass::Private("10.0.0.0/8")
    } else if a == 172 && (16..32).contains(&b) {
        AddrClass::Private("172.16.0.0/12")
    } else if a == 192 && b == 168 {
        AddrClass::Private("192.168.0.0/16")
    } else if a == 100 && (64..128).contains(&b) {
        AddrClass::Private("100.64.0.0/10, carrier-grade NAT")
    } else {
        AddrClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits; its loopback is not ours.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from(u128::from(ip) as u32);
        return match classify_v4(v4) {
            AddrClass::Loopback => AddrClass::Forbidden("a NAT64 address of a loopback address"),
            other => other,
        };
    }
    if ip == METADATA_V6 {
        AddrClass::Forbidden(METADATA_WHY)
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_unspecified() {
        AddrClass::Forbidden("the unspecified address ::")
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // Deprecated IPv4-compatible addresses (::a.b.c.d) still name an IPv4 host.
        classify_v4(Ipv4Addr::from(u128::from(ip) as u32))
    } else if seg[0] & 0xffc0 == 0xfe80 {
        AddrClass::Forbidden("link-local (fe80::/10)")
    } else if seg[0] & 0xff00 == 0xff00 {
        AddrClass::Forbidden("not a unicast address (multicast)")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        AddrClass::Private("fc00::/7, unique local")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        AddrClass::Private("fec0::/10, site-local")
    } else {
        AddrClass::Public
    }
}

/// Whether an address is this machine's loopback (`::ffff:127.0.0.1` included).
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    classify(ip) == AddrClass::Loopback
}

/// Whether a URL's host is this machine: `localhost`, or an address [`is_loopback_ip`] accepts
/// (127.0.0.0/8, `::1`, `::ffff:127.x.y.z`).
pub(crate) fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => is_loopback_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_loopback_ip(ip.into()),
        None => false,
    }
}

/// Whether a bare host name (an SMTP `host:`, an IPv6 address with or without brackets) is this
/// machine, by the rules of [`is_loopback_url`].
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let bracketed = if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    };
    // Parsed as an http URL: only the special schemes parse IP addresses as such.
    url::Url::parse(&format!("http://{bracketed}/")).is_ok_and(|u| is_loopback_url(&u))
}

/// Whether a host name is a well-known metadata service name.
pub(crate) fn is_metadata_name(host: &str) -> bool {
    let h = host.trim_end_matches('.');
    METADATA_NAMES.iter().any(|m| h.eq_ignore_ascii_case(m))
}

/// Why a connection was refused. The text names who wanted to connect, the host and the reason;
/// it never contains a URL's path or query (chat webhook URLs are secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who}: {reason}")]
pub(crate) struct Refused {
    /// `destination automations`, `clinicea.base_url`, `smtp.host`.
    pub(crate) who: String,
    /// What is wrong with the host, e.g. `169.254.169.254 is a cloud metadata address ...`.
    pub(crate) reason: String,
}

/// The egress rules for one connecting party: who it is (for messages), and whether it may reach
/// private addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Who connects, for messages: `destination automations`, `clinicea.base_url`, `smtp.host`.
    pub(crate) who: String,
    /// The config key that lets private addresses through, for messages.
    pub(crate) opt_in_key: String,
    /// Whether private ranges are allowed (`allow_private: true`).
    pub(crate) allow_private: bool,
}

impl Policy {
    /// The rules for the destination `name`.
    pub fn destination(name: &str, allow_private: bool) -> Policy {
        Policy {
            who: format!("destination {name}"),
            opt_in_key: format!("destinations.{name}.allow_private"),
            allow_private,
        }
    }

    /// The rules for the Clinicea API (`clinicea.base_url`).
    pub(crate) fn clinicea(allow_private: bool) -> Policy {
        Policy {
            who: "clinicea.base_url".to_string(),
            opt_in_key: "clinicea.allow_private".to_string(),
            allow_private,
        }
    }

    /// The rules for the SMTP server (`smtp.host`).
    pub(crate) fn smtp(allow_private: bool) -> Policy {
        Policy {
            who: "smtp.host".to_string(),
            opt_in_key: "smtp.allow_private".to_string(),
            allow_private,
        }
    }

    fn refuse(&self, reason: String) -> Refused {
        Refused {
            who: self.who.clone(),
            reason,
        }
    }

    /// Checks one address; `lead` starts the message (`10.0.0.1 is`, or `hooks.clinic.lan
    /// resolves to 10.0.0.1, which is`).
    fn check_ip_as(&self, ip: IpAddr, lead: &str) -> Result<(), Refused> {
        match classify(ip) {
            AddrClass::Loopback | AddrClass::Public => Ok(()),
            AddrClass::Private(_) if self.allow_private => Ok(()),
            AddrClass::Private(range) => Err(self.refuse(format!(
                "{lead} a private address ({range}); set `{}: true` if it really is on your own network",
                self.opt_in_key
            ))),
            AddrClass::Forbidden(why) => Err(self.refuse(format!(
                "{lead} {why}; the notifier never connects there"
            ))),
        }
    }

    /// Checks one address.
    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        self.check_ip_as(ip, &format!("{ip} is"))
    }

    /// Checks a host as written in the config: a literal IP, a metadata name, or a name to be
    /// checked when it is resolved (accepted here).
    pub(crate) fn check_host(&self, host: &str) -> Result<(), Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        if is_metadata_name(host) {
            return Err(self.refuse(format!(
                "{host} is {METADATA_WHY}; the notifier never connects there"
            )));
        }
        Ok(())
    }

    /// Checks a URL's host (see [`Policy::check_host`]); a URL without a host passes (the URL
    /// checks refuse it on their own).
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => self.check_host(d),
            None => Ok(()),
        }
    }

    /// Keeps the resolved addresses of `host` that may be used; refuses when none is left, naming
    /// the first refused address and why.
    pub(crate) fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let mut kept = Vec::new();
        let mut first_refusal = None;
        for a in addrs {
            match self.check_ip_as(a.ip(), &format!("{host} resolves to {}, which is", a.ip())) {
                Ok(()) => kept.push(a),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match (kept.is_empty(), first_refusal) {
            (false, _) => Ok(kept),
            (true, Some(r)) => Err(Refused {
                reason: format!("{}; refused before connecting", r.reason),
                ..r
            }),
            (true, None) => Err(self.refuse(format!("{host} resolves to no address"))),
        }
    }

    /// Resolves `host:port` and checks every address, before a client that resolves on its own
    /// (the SMTP transport) connects. A name that does not resolve passes: the client then
    /// reports its own, more precise, error.
    pub(crate) async fn resolve_checked(&self, host: &str, port: u16) -> Result<(), Refused> {
        self.check_host(host)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        match tokio::net::lookup_host((bare, port)).await {
            Ok(addrs) => self.filter(host, addrs).map(|_| ()),
            Err(_) => Ok(()),
        }
    }
}

/// The system resolver (`getaddrinfo` on a blocking thread), as reqwest's default is.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A DNS resolver that applies a [`Policy`] to what its inner resolver answers: blocked
/// addresses are dropped, and a name left with none fails with a [`Refused`] error, so the
/// HTTP client never connects to them.
///
/// Names of HTTP proxies from the environment (`HTTPS_PROXY`, ...) may resolve to private
/// addresses: the operator chose them. They are never allowed to forbidden ones.
pub struct GuardedResolver<R> {
    inner: R,
    policy: Arc<Policy>,
    proxies: Vec<String>,
}

impl<R> fmt::Debug for GuardedResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .field("proxies", &self.proxies.len())
            .finish()
    }
}

impl<R: Resolve> GuardedResolver<R> {
    /// Wraps `inner`; `proxies` are the host names of the configured HTTP proxies.
    pub fn new(inner: R, policy: Policy, proxies: Vec<String>) -> Self {
        GuardedResolver {
            inner,
            policy: Arc::new(policy),
            proxies,
        }
    }
}

impl<R: Resolve> Resolve for GuardedResolver<R> {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let mut policy = (*self.policy).clone();
        if self.proxies.iter().any(|p| p.eq_ignore_ascii_case(&host)) {
            policy.allow_private = true;
        }
        if let Err(e) = policy.check_host(&host) {
            return Box::pin(async move { Err(Box::new(e) as _) });
        }
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let addrs = lookup.await?;
            let kept = policy.filter(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The host names of the HTTP proxies set in the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, either case), which reqwest uses on its own.
pub(crate) fn proxy_hosts_from_env() -> Vec<String> {
    let mut hosts = Vec::new();
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        let Ok(v) = std::env::var(var) else { continue };
        let with_scheme = if v.contains("://") {
            v
        } else {
            format!("http://{v}")
        };
        if let Some(h) = url::Url::parse(&with_scheme)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    hosts
}

/// `builder` with the egress rules of `policy` applied to every name it resolves (with the system
/// resolver). Literal IPs in URLs are not resolved: `check` refuses the blocked ones.
pub(crate) fn guard(builder: reqwest::ClientBuilder, policy: Policy) -> reqwest::ClientBuilder {
    builder.dns_resolver(Arc::new(GuardedResolver::new(
        SystemResolver,
        policy,
        proxy_hosts_from_env(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_sorted_into_loopback_public_private_and_forbidden() {
        for s in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(classify(ip(s)), AddrClass::Loopback, "{s}");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "172.32.0.1",
        ] {
            assert_eq!(classify(ip(s)), AddrClass::Public, "{s}");
        }
        for (s, range) in [
            ("10.0.0.1", "10.0.0.0/8"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("100.64.0.1", "100.64.0.0/10, carrier-grade NAT"),
            ("fd12:3456::1", "fc00::/7, unique local"),
            ("::ffff:10.0.0.1", "10.0.0.0/8"),
            ("64:ff9b::a00:1", "10.0.0.0/8"),
        ] {
            assert_eq!(classify(ip(s)), AddrClass::Private(range), "{s}");
        }
        for s in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "100.100.100.200",
            "169.254.1.1",
            "fe80::1",
            "febf::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(
                matches!(classify(ip(s)), AddrClass::Forbidden(_)),
                "{s}: {:?}",
                classify(ip(s))
            );
        }
        assert_eq!(
            classify(ip("169.254.169.254")),
            AddrClass::Forbidden(METADATA_WHY)
        );
        assert_eq!(
            classify(ip("fd00:ec2::254")),
            AddrClass::Forbidden(METADATA_WHY)
        );
    }

    #[test]
    fn private_addresses_need_the_opt_in_and_forbidden_ones_never_pass() {
        let strict = Policy::destination("hooks", false);
        let open = Policy::destination("hooks", true);
        let err = strict.check_ip(ip("10.1.2.3")).unwrap_err();
        assert_eq!(err.who, "destination hooks");
        assert!(
            err.reason
                .contains("10.1.2.3 is a private address (10.0.0.0/8)"),
            "{err}"
        );
        assert!(
            err.reason
                .contains("destinations.hooks.allow_private: true"),
            "{err}"
        );
        assert!(open.check_ip(ip("10.1.2.3")).is_ok());
        let err = open.check_ip(ip("169.254.169.254")).unwrap_err();
        assert!(err.to_string().contains("cloud metadata address"), "{err}");
        assert!(open.check_host("METADATA.google.internal.").is_err());
        assert!(open.check_host("[fe80::1]").is_err());
        assert!(strict.check_host("hooks.example.com").is_ok());
        assert!(strict.check_host("localhost").is_ok());
    }

    /// A resolver that answers every name with fixed addresses, and counts its calls.
    struct Fake(Vec<SocketAddr>, Arc<std::sync::atomic::AtomicUsize>);

    impl Resolve for Fake {
        fn resolve(&self, _name: Name) -> Resolving {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let addrs = self.0.clone();
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    fn fake(addrs: &[&str]) -> (Fake, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        (Fake(addrs, calls.clone()), calls)
    }

    async fn resolve(r: &impl Resolve, name: &str) -> Result<Vec<SocketAddr>, String> {
        match r.resolve(Name::from_str(name).unwrap()).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_answers_and_refuses_a_name_left_with_none() {
        let (inner, _) = fake(&["10.0.0.7:0", "[fd00:ec2::254]:0"]);
        let r = GuardedResolver::new(inner, Policy::destination("crm", false), vec![]);
        let err = resolve(&r, "crm.clinic.lan").await.unwrap_err();
        assert!(err.starts_with("destination crm: "), "{err}");
        assert!(
            err.contains(
                "crm.clinic.lan resolves to 10.0.0.7, which is a private address (10.0.0.0/8)"
            ),
            "{err}"
        );
        assert!(err.contains("refused before connecting"), "{err}");

        // A mixed answer keeps the usable addresses only.
        let (inner, _) = fake(&["169.254.169.254:0", "93.184.216.34:0", "127.0.0.1:0"]);
        let r = GuardedResolver::new(inner, Policy::destination("crm", false), vec![]);
        let got = resolve(&r, "mixed.example").await.unwrap();
        assert_eq!(
            got,
            vec![
                "93.184.216.34:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap()
            ]
        );

        // The opt-in lets private answers through, never metadata ones.
        let (inner, _) = fake(&["10.0.0.7:0"]);
        let r = GuardedResolver::new(inner, Policy::destination("crm", true), vec![]);
        assert_eq!(resolve(&r, "crm.clinic.lan").await.unwrap().len(), 1);
        let (inner, _) = fake(&["[::ffff:169.254.169.254]:0"]);
        let r = GuardedResolver::new(inner, Policy::destination("crm", true), vec![]);
        let err = resolve(&r, "sneaky.example").await.unwrap_err();
        assert!(err.contains("cloud metadata address"), "{err}");
    }

    #[tokio::test]
    async fn metadata_names_are_refused_without_asking_dns() {
        let (inner, calls) = fake(&["93.184.216.34:0"]);
        let r = GuardedResolver::new(inner, Policy::clinicea(true), vec![]);
        let err = resolve(&r, "metadata.google.internal").await.unwrap_err();
        assert!(err.starts_with("clinicea.base_url: "), "{err}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_configured_proxy_may_be_private_but_not_link_local() {
        let (inner, _) = fake(&["10.9.9.9:0"]);
        let r = GuardedResolver::new(
            inner,
            Policy::destination("hooks", false),
            vec!["proxy.corp".into()],
        );
        assert!(resolve(&r, "proxy.corp").await.is_ok());
        assert!(resolve(&r, "other.corp").await.is_err());
        let (inner, _) = fake(&["169.254.0.9:0"]);
        let r = GuardedResolver::new(
            inner,
            Policy::destination("hooks", false),
            vec!["proxy.corp".into()],
        );
        assert!(resolve(&r, "proxy.corp").await.is_err());
    }

    #[test]
    fn loopback_hosts_and_urls_agree_with_the_address_classes() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.3.4.5",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:127.9.9.9]",
        ] {
            assert!(is_loopback_host(h), "{h}");
            let u = url::Url::parse(&format!(
                "http://{}/",
                if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]")
                } else {
                    h.to_string()
                }
            ))
            .unwrap();
            assert!(is_loopback_url(&u), "{u}");
        }
        for h in [
            "smtp.example.com",
            "10.0.0.5",
            "127.0.0.1.nip.io",
            "::2",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost_and_the_guard_lets_it_through() {
        let r = GuardedResolver::new(SystemResolver, Policy::smtp(false), vec![]);
        let got = resolve(&r, "localhost").await.unwrap();
        assert!(
            !got.is_empty() && got.iter().all(|a| a.ip().is_loopback()),
            "{got:?}"
        );
        assert!(Policy::smtp(false)
            .resolve_checked("localhost", 25)
            .await
            .is_ok());
        let err = Policy::smtp(false)
            .resolve_checked("10.0.0.1", 25)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("smtp.allow_private"), "{err}");
    }
}
