//! Where the `http` provider may connect (`HTTP_PROVIDER_ALLOWED_HOSTS`): the SSRF guard.
//!
//! A deploy names an endpoint URL that the API and the worker will call with callers'
//! inputs, so a key with `model:write` could otherwise point traffic at the cloud metadata
//! service, a loopback admin port or any private range. [`AllowList`] holds host names,
//! `host:port` pairs and CIDRs; an empty list disables the provider. Some addresses are
//! refused **always**, even under `0.0.0.0/0`: unspecified, link-local (169.254.169.254),
//! multicast, broadcast and the metadata addresses, in every spelling — the URL parser
//! (WHATWG) already turns decimal, octal and hex IPv4 into one address, and
//! [`canonical`] unwraps IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6.
//!
//! The URL is checked when the deploy is accepted and before every call; names are checked
//! again on the **resolved** addresses by [`GuardedResolver`], the HTTP client's resolver,
//! so a name that later resolves elsewhere (DNS rebinding) is refused at connect time. The
//! client follows no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name (lower case), any port unless one is given.
    Name(String, Option<u16>),
    /// An address range, any port unless one is given (`127.0.0.1:8080`).
    Net(IpAddr, u8, Option<u16>),
}

/// `HTTP_PROVIDER_ALLOWED_HOSTS`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// The development default: loopback only.
    pub const DEVELOPMENT_DEFAULT: &'static str = "localhost,127.0.0.0/8,::1";

    /// Parses a comma-separated list of `host`, `host:port`, `ip`, `ip:port`, `[ipv6]:port`
    /// and `ip/prefix`; the error names the entry at fault.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let entries = raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                parse_entry(e).ok_or_else(|| format!("`{e}` is not a host, host:port or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether the list is empty (the `http` provider is then disabled).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn names(&self, name: &str, port: Option<u16>) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Name(n, p) => n == name && p.is_none_or(|p| Some(p) == port),
            Entry::Net(..) => false,
        })
    }

    fn covers(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let ip = canonical(ip);
        self.entries.iter().any(|e| match e {
            Entry::Net(net, prefix, p) => {
                in_net(ip, canonical(*net), *prefix) && p.is_none_or(|p| Some(p) == port)
            }
            Entry::Name(..) => false,
        })
    }

    fn has_nets(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Net(..)))
    }

    /// Checks an endpoint URL: scheme http(s), no credentials, and a host the list allows
    /// that is not always refused. A name not listed is accepted here when the list has
    /// ranges: its resolved addresses are checked at connect time. The error is the rule
    /// broken, for a 422 naming `endpoint_url`.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if self.is_empty() {
            return Err(
                "the http provider is disabled (HTTP_PROVIDER_ALLOWED_HOSTS is empty)".into(),
            );
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".into());
        }
        let port = url.port_or_known_default();
        match url.host() {
            None => Err("must have a host".into()),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4), port),
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6), port),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if let Ok(ip) = name.parse::<IpAddr>() {
                    return self.check_ip(ip, port);
                }
                let listed_elsewhere = (self.entries.iter())
                    .any(|e| matches!(e, Entry::Name(n, Some(_)) if *n == name));
                if self.names(&name, port) || (self.has_nets() && !listed_elsewhere) {
                    Ok(())
                } else {
                    Err(format!(
                        "host `{name}` is not in HTTP_PROVIDER_ALLOWED_HOSTS"
                    ))
                }
            }
        }
    }

    /// Checks an address and port.
    pub fn check_ip(&self, ip: IpAddr, port: Option<u16>) -> Result<(), String> {
        if let Some(why) = always_refused(ip) {
            return Err(format!(
                "{ip} is {why}, refused whatever HTTP_PROVIDER_ALLOWED_HOSTS says"
            ));
        }
        if self.covers(ip, port) {
            Ok(())
        } else {
            Err(format!("{ip} is not in HTTP_PROVIDER_ALLOWED_HOSTS"))
        }
    }

    /// Checks the addresses a name resolved to, at connect time: none may be always refused,
    /// and unless the name itself is listed each must be in a listed range.
    pub fn check_resolved(&self, name: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let listed = self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Name(n, _) if *n == name));
        for addr in addrs {
            if let Some(why) = always_refused(addr.ip()) {
                return Err(format!(
                    "`{name}` resolved to {}, which is {why}",
                    addr.ip()
                ));
            }
            if !listed && !self.covers(addr.ip(), None) {
                return Err(format!(
                    "`{name}` resolved to {}, which is not in HTTP_PROVIDER_ALLOWED_HOSTS",
                    addr.ip()
                ));
            }
        }
        Ok(())
    }
}

fn parse_entry(entry: &str) -> Option<Entry> {
    if let Some((net, prefix)) = entry.split_once('/') {
        let ip: IpAddr = net.trim_matches(['[', ']']).parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Entry::Net(ip, prefix, None));
    }
    if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Entry::Net(ip, if ip.is_ipv4() { 32 } else { 128 }, None));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        let full = if addr.is_ipv4() { 32 } else { 128 };
        return Some(Entry::Net(addr.ip(), full, Some(addr.port())));
    }
    let (name, port) = match entry.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().ok()?)),
        None => (entry, None),
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| Entry::Name(name.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// The IPv4 address inside IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) IPv6 addresses; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return IpAddr::V4(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(tail);
    }
    if s[0] == 0x2002 {
        let inner = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return IpAddr::V4(inner);
    }
    ip
}

/// Why an address is refused whatever the allow-list says, if it is.
pub fn always_refused(ip: IpAddr) -> Option<&'static str> {
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 0 {
                Some("unspecified")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata)")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("multicast or reserved")
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200)
                || v4 == Ipv4Addr::new(168, 63, 129, 16)
            {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6 == METADATA_V6 {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Looks names up (the system resolver in production; tests substitute a table).
pub trait Lookup: Send + Sync + std::fmt::Debug {
    /// The addresses of `name`.
    fn lookup(
        &self,
        name: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        name: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((name, 0)).await?.collect()) })
    }
}

/// The HTTP client's resolver: resolves, then refuses the connection unless every address
/// passes [`AllowList::check_resolved`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// A resolver enforcing `allow` over `lookup`.
    pub fn new(allow: Arc<AllowList>, lookup: Arc<dyn Lookup>) -> Self {
        Self { allow, lookup }
    }
}

impl GuardedResolver {
    /// Resolves `name` and checks every address; a refusal is logged and returned as the error.
    fn checked(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static {
        let (allow, lookup) = (self.allow.clone(), self.lookup.clone());
        async move {
            let addrs = lookup.lookup(name.clone()).await?;
            allow.check_resolved(&name, &addrs).map_err(|why| {
                tracing::warn!(host = %name, reason = %why, "egress refused at connect time");
                Box::<dyn std::error::Error + Send + Sync>::from(why)
            })?;
            Ok(addrs)
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let checked = self.checked(name.as_str().to_owned());
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = Box::new(checked.await?.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver of the predict path's client ([`super::forward::Forwarder`]): the system's
/// for endpoints the provider gives us (HF), the guarded one for URLs a deploy named.
#[derive(Debug, Clone)]
pub enum Resolver {
    /// `getaddrinfo` through tokio, nothing refused.
    System,
    /// [`GuardedResolver`]: the allow-list on the resolved addresses.
    Guarded(GuardedResolver),
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        match self {
            Self::System => {
                let name = name.as_str().to_owned();
                Box::pin(async move { Ok(SystemLookup.lookup(name).await?.into_iter()) })
            }
            Self::Guarded(guarded) => {
                let checked = guarded.checked(name.as_str().to_owned());
                Box::pin(async move { Ok(checked.await?.into_iter()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &str, url: &str) -> Result<(), String> {
        let url = Url::parse(url).expect("url");
        AllowList::parse(list).expect("list").check_url(&url)
    }

    #[test]
    fn every_spelling_of_a_refused_address_is_refused_even_under_everything() {
        let all = "0.0.0.0/0,::/0";
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://0xa9fea9fe/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0:8080/",
            "http://0/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://[ff02::1]/",
            "http://255.255.255.255/",
        ] {
            let err = check(all, url).expect_err(url);
            assert!(err.contains("refused whatever"), "{url}: {err}");
        }
    }

    #[test]
    fn the_list_allows_names_ports_and_ranges_and_nothing_else() {
        assert!(
            check("", "http://127.0.0.1/")
                .unwrap_err()
                .contains("disabled")
        );
        assert!(check("10.0.0.0/8", "http://10.1.2.3:9000/m").is_ok());
        assert!(check("10.0.0.0/8", "http://192.168.1.1/").is_err());
        assert!(check("tgi.internal:8080", "http://tgi.internal:8080/").is_ok());
        assert!(check("tgi.internal:8080", "http://tgi.internal:9090/").is_err());
        assert!(check("tgi.internal:8080,10.0.0.0/8", "http://tgi.internal:9090/").is_err());
        assert!(
            check("10.0.0.0/8", "http://tgi.internal/").is_ok(),
            "checked when resolved"
        );
        assert!(check("tgi.internal", "http://other.internal/").is_err());
        assert!(check("127.0.0.1:8080", "http://127.0.0.1:8080/").is_ok());
        assert!(check("127.0.0.1:8080", "http://127.0.0.1:8081/").is_err());
        assert!(check("localhost", "ftp://localhost/").is_err());
        assert!(check("localhost", "http://u:p@localhost/").is_err());
        assert!(check("::1", "http://[::1]:80/").is_ok());
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("a b").is_err());
    }

    #[test]
    fn resolved_addresses_must_be_listed_unless_the_name_is() {
        let list = AllowList::parse("10.0.0.0/8,tgi.internal").expect("list");
        let at = |ip: &str| vec![SocketAddr::new(ip.parse().expect("ip"), 0)];
        assert!(list.check_resolved("x.example", &at("10.0.0.5")).is_ok());
        assert!(list.check_resolved("x.example", &at("127.0.0.1")).is_err());
        assert!(
            list.check_resolved("tgi.internal", &at("192.168.0.9"))
                .is_ok()
        );
        assert!(
            list.check_resolved("tgi.internal", &at("169.254.169.254"))
                .is_err()
        );
        assert!(
            list.check_resolved("tgi.internal", &at("::ffff:169.254.169.254"))
                .is_err()
        );
    }
}
