//! Hardened outbound HTTP client that forwards mapped webhooks to their destinations (CRMs, Slack, …).
//!
//! The hub sends requests to URLs that come from configuration and, indirectly, from incoming
//! webhooks, so this client is the hub's SSRF boundary. It:
//! - refuses destinations whose address is private, loopback, link-local, reserved or otherwise not
//!   publicly routable, unless the request's route allows that network (`to.allow_net`) and the
//!   operator granted it (`allow_nets`): a route without `allow_net` reaches public addresses only.
//!   Host names are checked *after* resolution inside a custom DNS resolver (one client per
//!   distinct allow list), so the address that is checked is the address that is dialled (no
//!   DNS-rebinding window); IP literals never reach the resolver and are checked before sending;
//! - only speaks `http` and `https`, never follows redirects and never uses a proxy (a proxy would
//!   resolve the destination itself, bypassing the guard);
//! - bounds every request by the caller's timeout and reads at most a small snippet of the response;
//! - produces failure messages that are safe to log: no URL paths or queries (Slack-style webhook
//!   URLs carry their secret in the path), no header values, no bodies.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use hub_core::event::OutgoingRequest;
use hub_core::ports::{Forwarder, SendFailure, SendOutcome, SendPolicy};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest `Location` value copied into a redirect snippet; a hostile server must not be able to
/// make the stored record arbitrarily large.
const MAX_LOCATION_LEN: usize = 2048;

/// Extra bytes read past the snippet size, so a multi-byte UTF-8 character cut by the limit can be
/// recognised as cut (and dropped) rather than rendered as garbage.
const SNIPPET_SLACK: usize = 3;

/// Settings for [`HttpForwarder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Networks that routes may be allowed to reach although the guard would block them (for
    /// example an on-premises CRM in 10.0.0.0/8, or 127.0.0.0/8 in tests). A request reaches
    /// only the part its route asks for ([`SendPolicy::allow_net`]); a route asking for more
    /// is refused.
    pub allow_nets: Vec<IpNet>,
    /// Exact `ip:port` destinations that may be reached although the guard would block their
    /// address (the `hub serve --dev` catcher). They apply to URLs with that IP literal and port
    /// only; a host name is never matched against them.
    pub allow_addrs: Vec<SocketAddr>,
    /// `User-Agent` sent when the mapped request does not set one.
    pub user_agent: String,
    /// Limit for establishing a TCP (and TLS) connection, independent of the per-request timeout.
    pub connect_timeout: Duration,
    /// Maximum number of response-body bytes kept for the operator.
    pub max_response_snippet: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            allow_nets: Vec::new(),
            allow_addrs: Vec::new(),
            user_agent: concat!("hub/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            max_response_snippet: 1024,
        }
    }
}

/// Why an [`HttpForwarder`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderBuildError {
    #[error("invalid user agent: it must be a valid HTTP header value")]
    InvalidUserAgent,
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The outbound HTTP client. Build it once and share it: it owns the connection pools.
#[derive(Debug)]
pub struct HttpForwarder {
    /// For routes without `allow_net`: public addresses only.
    public: reqwest::Client,
    /// One client per distinct route allow list: a resolver (and a pool) serves one list.
    reaching: Mutex<HashMap<Vec<IpNet>, reqwest::Client>>,
    /// What the operator granted; every route allow list lies inside it.
    granted: Arc<[IpNet]>,
    allow_addrs: Arc<[SocketAddr]>,
    user_agent: HeaderValue,
    connect_timeout: Duration,
    max_response_snippet: usize,
}

impl HttpForwarder {
    pub fn new(cfg: ForwarderConfig) -> Result<Self, ForwarderBuildError> {
        // Validated here so a bad value is reported as such rather than as a generic builder error.
        let user_agent =
            HeaderValue::from_str(&cfg.user_agent).map_err(|_| ForwarderBuildError::InvalidUserAgent)?;
        let public = build_client(&user_agent, cfg.connect_timeout, Arc::from([]))?;
        Ok(Self {
            public,
            reaching: Mutex::new(HashMap::new()),
            granted: cfg.allow_nets.into(),
            allow_addrs: cfg.allow_addrs.into(),
            user_agent,
            connect_timeout: cfg.connect_timeout,
            max_response_snippet: cfg.max_response_snippet,
        })
    }

    /// The client whose resolver admits exactly `allow_net` besides public addresses, or why
    /// the request may not be sent.
    fn client_for(&self, allow_net: &[IpNet]) -> Result<reqwest::Client, SendOutcome> {
        if allow_net.is_empty() {
            return Ok(self.public.clone());
        }
        if let Some(net) = allow_net.iter().find(|n| !hub_core::net::is_within(n, &self.granted)) {
            return Err(failed(
                SendFailure::Blocked,
                format!(
                    "the route asks to reach {net}, which this hub is not started to allow \
                     (--allow-net / HUB_ALLOW_NETS)"
                ),
            ));
        }
        let mut key = allow_net.to_vec();
        key.sort_unstable();
        key.dedup();
        let mut clients = self.reaching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(&self.user_agent, self.connect_timeout, key.clone().into())
            .map_err(|e| failed(SendFailure::Other, e.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn send_inner(&self, request: &OutgoingRequest, policy: SendPolicy<'_>) -> SendOutcome {
        let timeout = policy.timeout;
        let client = match self.client_for(policy.allow_net) {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let prepared = match prepare(request, policy.allow_net, &self.allow_addrs) {
            Ok(prepared) => prepared,
            Err(outcome) => return outcome,
        };
        let Prepared { method, url, headers, origin } = prepared;
        let started = Instant::now();
        let result = client
            .request(method.clone(), url)
            .headers(headers)
            .body(request.body.clone())
            .timeout(timeout)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                let (kind, message) = classify_error(&err, &origin, timeout);
                tracing::debug!(%method, %origin, ?kind, %message, "forward failed");
                return SendOutcome::Failed { kind, message };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let body_snippet = match redirect_location(status, response.headers()) {
            Some(location) => format!("redirected to {location}"),
            None => read_snippet(response, self.max_response_snippet).await,
        };
        tracing::debug!(
            %method,
            %origin,
            status = status.as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "forwarded"
        );
        tracing::trace!(%body_snippet, "destination response");
        SendOutcome::Response { status: status.as_u16(), retry_after, body_snippet }
    }
}

#[async_trait::async_trait]
impl Forwarder for HttpForwarder {
    async fn send(&self, request: &OutgoingRequest, policy: SendPolicy<'_>) -> SendOutcome {
        self.send_inner(request, policy).await
    }
}

/// A client whose resolver admits public addresses and `allow_nets`.
fn build_client(
    user_agent: &HeaderValue,
    connect_timeout: Duration,
    allow_nets: Arc<[IpNet]>,
) -> Result<reqwest::Client, ForwarderBuildError> {
    reqwest::Client::builder()
        .user_agent(user_agent.clone())
        .connect_timeout(connect_timeout)
        // A redirect is answered to the core, which reports the Location to the operator; following
        // it would let a destination bounce the hub towards an arbitrary URL.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        // Proxies resolve the destination themselves, which would bypass the address guard, and
        // environment variables must not silently reroute webhooks.
        .no_proxy()
        .no_hickory_dns()
        .dns_resolver(GuardedResolver { allow_nets })
        .build()
        .map_err(ForwarderBuildError::Client)
}

/// A request that passed every check that can be made before dialling.
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// `scheme://host:port` only: safe to log, unlike the path and query.
    origin: String,
}

fn failed(kind: SendFailure, message: impl Into<String>) -> SendOutcome {
    SendOutcome::Failed { kind, message: message.into() }
}

fn prepare(
    request: &OutgoingRequest,
    allow_nets: &[IpNet],
    allow_addrs: &[SocketAddr],
) -> Result<Prepared, SendOutcome> {
    let method = parse_method(&request.method)?;
    // The URL parser canonicalises IP literals (`0x7f.1`, `2130706433`, `[::ffff:7f00:1]`), so the
    // guard below sees the address that will actually be dialled.
    let url = Url::parse(request.url.trim())
        .map_err(|err| failed(SendFailure::InvalidRequest, format!("invalid URL: {err}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(failed(
                SendFailure::Blocked,
                format!("URL scheme `{other}` is not allowed (only http and https)"),
            ));
        }
    }
    let Some(host) = url.host_str() else {
        return Err(failed(SendFailure::InvalidRequest, "URL has no host"));
    };
    let origin = origin_of(&url, host);
    // IPv6 literals keep their brackets in `host_str`; a domain name never parses as an address.
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    // An IP literal is dialled as written (hyper skips the resolver), so an exact `ip:port`
    // exemption checked here cannot be widened by DNS.
    let exact = literal
        .zip(url.port_or_known_default())
        .is_some_and(|(ip, port)| allow_addrs.contains(&SocketAddr::new(ip, port)));
    if let Some(ip) = literal
        && !exact
        && !is_permitted(ip, allow_nets)
    {
        return Err(failed(
            SendFailure::Blocked,
            format!(
                "destination {origin} is in a blocked address range (a route reaches a private \
                 network only with `to.allow_net`)"
            ),
        ));
    }
    let headers = build_headers(&request.headers)?;
    Ok(Prepared { method, url, headers, origin })
}

fn parse_method(raw: &str) -> Result<Method, SendOutcome> {
    let raw = raw.trim();
    // Mappings are written by people; `post` almost certainly means POST, not an extension method.
    const STANDARD: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    if let Some(method) = STANDARD.iter().find(|m| m.as_str().eq_ignore_ascii_case(raw)) {
        return Ok(method.clone());
    }
    let method = Method::from_bytes(raw.as_bytes())
        .map_err(|_| failed(SendFailure::InvalidRequest, "invalid HTTP method"))?;
    // CONNECT would turn the pooled connection into a tunnel; it is never a webhook.
    if method == Method::CONNECT {
        return Err(failed(SendFailure::InvalidRequest, "HTTP method CONNECT is not allowed"));
    }
    Ok(method)
}

/// Headers whose meaning is connection framing, which the HTTP stack derives from the body and
/// protocol itself; forwarding a stale copy would corrupt the request (or smuggle a second one).
const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

/// Headers that carry credentials: marked sensitive so HTTP/2 never puts them in the HPACK table.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "x-api-key"];

fn build_headers(pairs: &[(String, String)]) -> Result<HeaderMap, SendOutcome> {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (index, (name, value)) in pairs.iter().enumerate() {
        // The offending text is not echoed: a mis-split `Authorization: Bearer …` could end up
        // in the name.
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            failed(SendFailure::InvalidRequest, format!("header #{} has an invalid name", index + 1))
        })?;
        if FRAMING_HEADERS.contains(&name.as_str()) {
            tracing::trace!(header = %name, "dropping framing header from mapped request");
            continue;
        }
        let mut value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            failed(SendFailure::InvalidRequest, format!("header `{name}` has an invalid value"))
        })?;
        if CREDENTIAL_HEADERS.contains(&name.as_str()) {
            value.set_sensitive(true);
        }
        headers.append(name, value);
    }
    Ok(headers)
}

/// `scheme://host[:port]`, without userinfo, path or query.
fn origin_of(url: &Url, host: &str) -> String {
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

// ---------------------------------------------------------------------------------------------
// Response handling
// ---------------------------------------------------------------------------------------------

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only possible parse failure is overflow: saturate rather than ignore.
        return Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    // A date in the past means "retry now".
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn redirect_location(status: reqwest::StatusCode, headers: &HeaderMap) -> Option<String> {
    if !status.is_redirection() {
        return None;
    }
    let location = headers.get(header::LOCATION)?;
    Some(lossy_prefix(location.as_bytes(), MAX_LOCATION_LEN))
}

/// Reads at most `max` (+ a few) body bytes chunk by chunk; the rest is never buffered, and the
/// connection is simply dropped with the response.
async fn read_snippet(mut response: reqwest::Response, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let limit = max.saturating_add(SNIPPET_SLACK);
    let mut buf: Vec<u8> = Vec::with_capacity(limit.min(16 * 1024));
    while buf.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - buf.len());
                buf.extend_from_slice(chunk.get(..take).unwrap_or_default());
            }
            Ok(None) => break,
            // The destination did answer; a body that stalls or breaks only shortens the snippet.
            Err(err) => {
                tracing::debug!(error = %err.without_url(), "stopped reading response body");
                break;
            }
        }
    }
    lossy_prefix(&buf, max)
}

/// The first `max` bytes as UTF-8 (lossy), dropping a character that the cut split in two.
fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    let cut = bytes.get(..max).unwrap_or(bytes);
    match std::str::from_utf8(cut) {
        Ok(text) => text.to_owned(),
        // `error_len() == None`: the only problem is an incomplete character at the very end.
        Err(err) if err.error_len().is_none() && cut.len() < bytes.len() => {
            String::from_utf8_lossy(cut.get(..err.valid_up_to()).unwrap_or_default()).into_owned()
        }
        Err(_) => String::from_utf8_lossy(cut).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------------------

fn classify_error(err: &reqwest::Error, origin: &str, timeout: Duration) -> (SendFailure, String) {
    if let Some(blocked) = find_in_chain::<Blocked>(err) {
        return (SendFailure::Blocked, blocked.to_string());
    }
    let detail = source_chain(err);
    if err.is_timeout() {
        return (SendFailure::Timeout, format!("request to {origin} timed out after {timeout:?}"));
    }
    if err.is_connect() {
        return (SendFailure::Connect, format!("could not connect to {origin}: {detail}"));
    }
    if err.is_builder() {
        return (SendFailure::InvalidRequest, format!("could not build the request: {detail}"));
    }
    (SendFailure::Other, format!("request to {origin} failed: {detail}"))
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The causes of a reqwest error, joined with `: `. reqwest's own `Display` would append the full
/// URL, so only the sources are used (they describe sockets, DNS and protocol, never header values).
fn source_chain(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        // Layers often repeat their inner error's text verbatim.
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() { "unknown error".to_owned() } else { parts.join(": ") }
}

// ---------------------------------------------------------------------------------------------
// Address guard
// ---------------------------------------------------------------------------------------------

/// Returned by [`GuardedResolver`] when every address of a host is blocked; found again in
/// reqwest's error chain to report [`SendFailure::Blocked`] instead of a connect failure.
#[derive(Debug)]
struct Blocked {
    host: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "every address of `{}` is in a blocked address range (a route reaches a private network \
             only with `to.allow_net`)",
            self.host
        )
    }
}

impl StdError for Blocked {}

/// Resolves with the system resolver and drops every address the guard refuses.
struct GuardedResolver {
    allow_nets: Arc<[IpNet]>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_nets = Arc::clone(&self.allow_nets);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's (or the scheme's) port.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let found = resolved.len();
            let permitted: Vec<SocketAddr> =
                resolved.into_iter().filter(|addr| is_permitted(addr.ip(), &allow_nets)).collect();
            if permitted.is_empty() {
                if found == 0 {
                    return Err(format!("`{host}` resolved to no address").into());
                }
                return Err(Box::new(Blocked { host }) as Box<dyn StdError + Send + Sync>);
            }
            if permitted.len() < found {
                tracing::debug!(%host, dropped = found - permitted.len(), "dropped blocked addresses");
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

fn is_permitted(ip: IpAddr, allow_nets: &[IpNet]) -> bool {
    if !is_blocked_ip(ip) {
        return true;
    }
    // An allow-listed IPv4 network also admits its IPv4-mapped IPv6 form.
    let canonical = ip.to_canonical();
    allow_nets.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 ranges that are not publicly routable destinations (IANA special-purpose registry).
const BLOCKED_V4: [Ipv4Net; 17] = [
    v4(0, 0, 0, 0, 8),          // "this network", incl. unspecified
    v4(10, 0, 0, 0, 8),         // private
    v4(100, 64, 0, 0, 10),      // CGNAT shared address space
    v4(127, 0, 0, 0, 8),        // loopback
    v4(169, 254, 0, 0, 16),     // link-local, incl. cloud metadata 169.254.169.254
    v4(172, 16, 0, 0, 12),      // private
    v4(192, 0, 0, 0, 24),       // IETF protocol assignments
    v4(192, 0, 2, 0, 24),       // documentation TEST-NET-1
    v4(192, 88, 99, 0, 24),     // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),     // private
    v4(198, 18, 0, 0, 15),      // benchmarking
    v4(198, 51, 100, 0, 24),    // documentation TEST-NET-2
    v4(203, 0, 113, 0, 24),     // documentation TEST-NET-3
    v4(224, 0, 0, 0, 4),        // multicast
    v4(233, 252, 0, 0, 24),     // multicast documentation (inside 224/4, listed for clarity)
    v4(240, 0, 0, 0, 4),        // reserved
    v4(255, 255, 255, 255, 32), // broadcast (inside 240/4, listed for clarity)
];

/// Special-purpose ranges inside the global unicast space 2000::/3.
const BLOCKED_V6_GLOBAL: [Ipv6Net; 3] = [
    // IETF protocol assignments, incl. Teredo 2001::/32 (blocked outright: its embedded IPv4 is
    // obfuscated and the relay decides where traffic goes), benchmarking 2001:2::/48 and ORCHID.
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    v6([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),      // documentation (RFC 9637)
];

const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const NAT64_WELL_KNOWN: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// Whether the guard refuses `ip` as a destination, ignoring any allow-list.
///
/// IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
/// 6to4) are judged by the embedded address. Everything outside 2000::/3 other than those is
/// blocked: no other IPv6 space is allocated for public unicast (this covers ::, ::1, fc00::/7,
/// fe80::/10, ff00::/8, 100::/64 and the local-use NAT64 prefix 64:ff9b:1::/48, whose embedding
/// position depends on a site-chosen prefix length and so cannot be checked reliably).
pub fn is_blocked_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_blocked_v4(ip),
        IpAddr::V6(ip) => is_blocked_v6(ip),
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    BLOCKED_V4.iter().any(|net| net.contains(&ip))
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    let [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15] = ip.octets();
    let last32 = Ipv4Addr::new(o12, o13, o14, o15);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; also covers :: and ::1).
    let zero_prefix = [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9] == [0; 10];
    if zero_prefix && matches!([o10, o11], [0, 0] | [0xff, 0xff]) {
        return is_blocked_v4(last32);
    }
    if NAT64_WELL_KNOWN.contains(&ip) {
        return is_blocked_v4(last32);
    }
    if SIX_TO_FOUR.contains(&ip) {
        return is_blocked_v4(Ipv4Addr::new(o2, o3, o4, o5));
    }
    if !GLOBAL_UNICAST_V6.contains(&ip) {
        return true;
    }
    BLOCKED_V6_GLOBAL.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    /// What the test server saw.
    #[derive(Debug)]
    struct Captured {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Captured {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    fn loopback_config() -> ForwarderConfig {
        ForwarderConfig {
            allow_nets: vec!["127.0.0.0/8".parse().expect("net")],
            ..ForwarderConfig::default()
        }
    }

    const LOOPBACK: [IpNet; 1] = [IpNet::V4(v4(127, 0, 0, 0, 8))];

    /// A route that asks for loopback (`to.allow_net: [127.0.0.0/8]`).
    fn loopback(timeout: Duration) -> SendPolicy<'static> {
        SendPolicy { timeout, allow_net: &LOOPBACK }
    }

    /// A route without `allow_net`: public addresses only.
    fn public(timeout: Duration) -> SendPolicy<'static> {
        SendPolicy { timeout, allow_net: &[] }
    }

    fn forwarder(cfg: ForwarderConfig) -> HttpForwarder {
        HttpForwarder::new(cfg).expect("forwarder builds")
    }

    fn request(method: &str, url: &str) -> OutgoingRequest {
        OutgoingRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Default::default(),
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Captured {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "client closed before sending headers");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().expect("request line").split(' ');
        let method = request_line.next().expect("method").to_owned();
        let path = request_line.next().expect("path").to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (k, v) = line.split_once(':').expect("header colon");
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("content-length"))
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "client closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        Captured { method, path, headers, body }
    }

    /// Serves one connection: reads one request, writes `response` verbatim, closes.
    async fn serve_once(response: Vec<u8>) -> (SocketAddr, JoinHandle<Captured>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let captured = read_request(&mut stream).await;
            // The client may hang up early (snippet limit); that is fine.
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            captured
        });
        (addr, handle)
    }

    fn ok_response() -> Vec<u8> {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()
    }

    #[tokio::test]
    async fn post_with_body_and_headers_arrives_intact() {
        let (addr, server) = serve_once(ok_response()).await;
        let body = br#"{"contact":{"email":"a@example.com","tags":["x","y"]}}"#;
        let req = OutgoingRequest {
            method: "POST".to_owned(),
            url: format!("http://{addr}/hooks/crm?src=hub"),
            headers: vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("X-Custom".to_owned(), "one".to_owned()),
                ("X-Custom".to_owned(), "two".to_owned()),
                ("Authorization".to_owned(), "Bearer s3cr3t".to_owned()),
                ("Content-Length".to_owned(), "9999".to_owned()),
            ],
            body: bytes::Bytes::from_static(body),
        };
        let outcome = forwarder(loopback_config()).send(&req, loopback(Duration::from_secs(5))).await;
        assert_eq!(
            outcome,
            SendOutcome::Response { status: 200, retry_after: None, body_snippet: "ok".to_owned() }
        );
        let seen = server.await.expect("server");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/hooks/crm?src=hub");
        assert_eq!(seen.body, body);
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(seen.header("authorization"), Some("Bearer s3cr3t"));
        let custom: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-custom"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(custom, ["one", "two"]);
        // The stale framing header from the mapping was replaced by the real length.
        assert_eq!(seen.header("content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(seen.header("user-agent"), Some(concat!("hub/", env!("CARGO_PKG_VERSION"))));
    }

    #[tokio::test]
    async fn lowercase_method_is_accepted() {
        let (addr, server) = serve_once(ok_response()).await;
        let outcome = forwarder(loopback_config())
            .send(&request("put", &format!("http://{addr}/")), loopback(Duration::from_secs(5)))
            .await;
        assert!(matches!(outcome, SendOutcome::Response { status: 200, .. }), "{outcome:?}");
        assert_eq!(server.await.expect("server").method, "PUT");
    }

    #[tokio::test]
    async fn exact_allowed_address_is_reached_and_nothing_else_of_loopback() {
        let (addr, server) = serve_once(ok_response()).await;
        let fwd = forwarder(ForwarderConfig { allow_addrs: vec![addr], ..ForwarderConfig::default() });
        let outcome =
            fwd.send(&request("POST", &format!("http://{addr}/tour")), public(Duration::from_secs(5))).await;
        assert!(matches!(outcome, SendOutcome::Response { status: 200, .. }), "{outcome:?}");
        assert_eq!(server.await.expect("server").path, "/tour");
        // Another port on the same address, and the same port by name, stay blocked.
        let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1));
        for url in [format!("http://{other}/"), format!("http://localhost:{}/", addr.port())] {
            let outcome = fwd.send(&request("POST", &url), public(Duration::from_secs(5))).await;
            assert!(
                matches!(outcome, SendOutcome::Failed { kind: SendFailure::Blocked, .. }),
                "{url}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn ip_literal_is_blocked_without_allow_list() {
        let (addr, server) = serve_once(ok_response()).await;
        let outcome = forwarder(ForwarderConfig::default())
            .send(&request("POST", &format!("http://{addr}/secret-path")), public(Duration::from_secs(5)))
            .await;
        let SendOutcome::Failed { kind: SendFailure::Blocked, message } = outcome else {
            panic!("expected Blocked, got {outcome:?}");
        };
        assert!(!message.contains("secret-path"), "message leaks the path: {message}");
        server.abort();
    }

    #[tokio::test]
    async fn obfuscated_ip_literals_are_blocked() {
        let fwd = forwarder(ForwarderConfig::default());
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/",
            "http://0.0.0.0:80/",
        ] {
            let outcome = fwd.send(&request("GET", url), public(Duration::from_secs(1))).await;
            assert!(
                matches!(outcome, SendOutcome::Failed { kind: SendFailure::Blocked, .. }),
                "{url}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn hostname_goes_through_the_guarded_resolver() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let outcome = forwarder(ForwarderConfig::default())
            .send(&request("POST", &format!("http://localhost:{port}/")), public(Duration::from_secs(5)))
            .await;
        let SendOutcome::Failed { kind: SendFailure::Blocked, message } = outcome else {
            panic!("expected Blocked, got {outcome:?}");
        };
        assert!(message.contains("localhost"), "{message}");

        let (addr, server) = serve_once(ok_response()).await;
        let outcome = forwarder(loopback_config())
            .send(
                &request("POST", &format!("http://localhost:{}/via-name", addr.port())),
                loopback(Duration::from_secs(5)),
            )
            .await;
        assert!(matches!(outcome, SendOutcome::Response { status: 200, .. }), "{outcome:?}");
        assert_eq!(server.await.expect("server").path, "/via-name");
    }

    #[tokio::test]
    async fn a_granted_network_is_reached_only_by_routes_that_ask_for_it() {
        // The operator granted loopback; a route without `allow_net` still reaches public
        // addresses only, by IP literal and by name.
        let fwd = forwarder(loopback_config());
        let (addr, server) = serve_once(ok_response()).await;
        for url in [format!("http://{addr}/"), format!("http://localhost:{}/", addr.port())] {
            let outcome = fwd.send(&request("POST", &url), public(Duration::from_secs(5))).await;
            let SendOutcome::Failed { kind: SendFailure::Blocked, message } = outcome else {
                panic!("{url}: expected Blocked, got {outcome:?}");
            };
            assert!(message.contains("allow_net"), "{message}");
        }
        // The route that asks for it gets through, by name too (its own resolver).
        let outcome = fwd
            .send(
                &request("POST", &format!("http://localhost:{}/asked", addr.port())),
                loopback(Duration::from_secs(5)),
            )
            .await;
        assert!(matches!(outcome, SendOutcome::Response { status: 200, .. }), "{outcome:?}");
        assert_eq!(server.await.expect("server").path, "/asked");
        // A narrower list than the grant admits its part only.
        let (addr, server) = serve_once(ok_response()).await;
        let other_host: [IpNet; 1] = [IpNet::V4(v4(127, 0, 0, 2, 32))];
        let narrow = SendPolicy { timeout: Duration::from_secs(5), allow_net: &other_host };
        let outcome = fwd.send(&request("POST", &format!("http://{addr}/")), narrow).await;
        assert!(matches!(outcome, SendOutcome::Failed { kind: SendFailure::Blocked, .. }), "{outcome:?}");
        let own_host: [IpNet; 1] = [IpNet::V4(v4(127, 0, 0, 1, 32))];
        let exact = SendPolicy { timeout: Duration::from_secs(5), allow_net: &own_host };
        let outcome = fwd.send(&request("POST", &format!("http://{addr}/")), exact).await;
        assert!(matches!(outcome, SendOutcome::Response { status: 200, .. }), "{outcome:?}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_route_asking_for_more_than_was_granted_is_blocked() {
        let (addr, server) = serve_once(ok_response()).await;
        for cfg in [
            ForwarderConfig::default(),
            ForwarderConfig {
                allow_nets: vec!["127.0.0.1/32".parse().expect("net")],
                ..ForwarderConfig::default()
            },
        ] {
            let outcome = forwarder(cfg)
                .send(&request("POST", &format!("http://{addr}/")), loopback(Duration::from_secs(5)))
                .await;
            let SendOutcome::Failed { kind: SendFailure::Blocked, message } = outcome else {
                panic!("expected Blocked, got {outcome:?}");
            };
            assert!(message.contains("127.0.0.0/8") && message.contains("--allow-net"), "{message}");
        }
        server.abort();
    }

    #[tokio::test]
    async fn retry_after_seconds_is_reported() {
        let (addr, _server) = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
        )
        .await;
        let outcome = forwarder(loopback_config())
            .send(&request("POST", &format!("http://{addr}/")), loopback(Duration::from_secs(5)))
            .await;
        assert_eq!(
            outcome,
            SendOutcome::Response {
                status: 503,
                retry_after: Some(Duration::from_secs(7)),
                body_snippet: "busy".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn redirect_is_not_followed_and_location_is_reported() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
        .await;
        let outcome = forwarder(loopback_config())
            .send(&request("POST", &format!("http://{addr}/")), loopback(Duration::from_secs(5)))
            .await;
        let SendOutcome::Response { status: 302, retry_after: None, body_snippet } = outcome else {
            panic!("expected 302 response, got {outcome:?}");
        };
        assert_eq!(body_snippet, "redirected to http://127.0.0.1:1/elsewhere");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn silent_server_times_out_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let _ = read_request(&mut stream).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let outcome = forwarder(loopback_config())
            .send(&request("POST", &format!("http://{addr}/")), loopback(timeout))
            .await;
        let elapsed = started.elapsed();
        assert!(matches!(outcome, SendOutcome::Failed { kind: SendFailure::Timeout, .. }), "{outcome:?}");
        assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "took {elapsed:?}");
        server.abort();
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let outcome = forwarder(loopback_config())
            .send(&request("POST", &format!("http://{addr}/token/abc123")), loopback(Duration::from_secs(5)))
            .await;
        let SendOutcome::Failed { kind: SendFailure::Connect, message } = outcome else {
            panic!("expected Connect, got {outcome:?}");
        };
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(!message.contains("abc123"), "message leaks the path: {message}");
    }

    #[tokio::test]
    async fn bad_scheme_is_blocked_and_garbage_url_is_invalid() {
        let fwd = forwarder(loopback_config());
        for url in ["ftp://x", "file:///etc/passwd", "gopher://127.0.0.1/"] {
            let outcome = fwd.send(&request("POST", url), loopback(Duration::from_secs(1))).await;
            assert!(
                matches!(outcome, SendOutcome::Failed { kind: SendFailure::Blocked, .. }),
                "{url}: {outcome:?}"
            );
        }
        for url in ["not a url", "", "http://", "http://exa mple.com/"] {
            let outcome = fwd.send(&request("POST", url), loopback(Duration::from_secs(1))).await;
            assert!(
                matches!(outcome, SendOutcome::Failed { kind: SendFailure::InvalidRequest, .. }),
                "{url}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn invalid_method_and_headers_are_invalid_requests() {
        let fwd = forwarder(loopback_config());
        for method in ["", "PO ST", "GE\rT", "G(ET", "CONNECT"] {
            let outcome =
                fwd.send(&request(method, "http://127.0.0.1:1/"), loopback(Duration::from_secs(1))).await;
            assert!(
                matches!(outcome, SendOutcome::Failed { kind: SendFailure::InvalidRequest, .. }),
                "{method:?}: {outcome:?}"
            );
        }
        let mut bad_value = request("POST", "http://127.0.0.1:1/");
        bad_value.headers.push(("Authorization".to_owned(), "Bearer top\r\nsecret".to_owned()));
        let SendOutcome::Failed { kind: SendFailure::InvalidRequest, message } =
            fwd.send(&bad_value, loopback(Duration::from_secs(1))).await
        else {
            panic!("expected InvalidRequest");
        };
        assert!(message.contains("authorization") && !message.contains("secret"), "{message}");

        let mut bad_name = request("POST", "http://127.0.0.1:1/");
        bad_name.headers.push(("Authorization: Bearer secret".to_owned(), "x".to_owned()));
        let SendOutcome::Failed { kind: SendFailure::InvalidRequest, message } =
            fwd.send(&bad_name, loopback(Duration::from_secs(1))).await
        else {
            panic!("expected InvalidRequest");
        };
        assert!(!message.contains("secret"), "{message}");
    }

    #[tokio::test]
    async fn big_body_is_truncated_to_the_snippet_size() {
        let size = 4 * 1024 * 1024;
        let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
        response.extend(std::iter::repeat_n(b'a', size));
        let (addr, _server) = serve_once(response).await;
        let cfg = ForwarderConfig { max_response_snippet: 100, ..loopback_config() };
        let outcome = forwarder(cfg)
            .send(&request("GET", &format!("http://{addr}/")), loopback(Duration::from_secs(5)))
            .await;
        let SendOutcome::Response { status: 200, body_snippet, .. } = outcome else {
            panic!("expected 200, got {outcome:?}");
        };
        assert_eq!(body_snippet, "a".repeat(100));
    }

    #[test]
    fn snippet_never_splits_a_character() {
        let text = "ééé".as_bytes(); // 6 bytes
        assert_eq!(lossy_prefix(text, 3), "é");
        assert_eq!(lossy_prefix(text, 4), "éé");
        assert_eq!(lossy_prefix(text, 100), "ééé");
        assert_eq!(lossy_prefix(b"ab\xffcd", 4), "ab\u{fffd}c");
        assert_eq!(lossy_prefix(b"", 0), "");
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let parse = |s: &str| parse_retry_after(&HeaderValue::from_str(s).expect("value"), now);
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("99999999999999999999999"), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:30 GMT"), Some(Duration::from_secs(30)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("-5"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn config_defaults() {
        let cfg = ForwarderConfig::default();
        assert!(cfg.allow_nets.is_empty());
        assert_eq!(cfg.user_agent, format!("hub/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
        assert_eq!(cfg.max_response_snippet, 1024);
        let bad = ForwarderConfig { user_agent: "bad\nagent".to_owned(), ..ForwarderConfig::default() };
        assert!(matches!(HttpForwarder::new(bad), Err(ForwarderBuildError::InvalidUserAgent)));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    #[test]
    fn blocked_ranges() {
        for addr in [
            // IPv4
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 native
            "::",
            "::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            // IPv6 embedding a blocked IPv4
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::192.168.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:c0a8:0101::",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            // Teredo (always), local-use NAT64 (always)
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::808:808",
        ] {
            assert!(is_blocked_ip(ip(addr)), "{addr} should be blocked");
        }
    }

    #[test]
    fn public_addresses_are_not_blocked() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::808:808",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_blocked_ip(ip(addr)), "{addr} should not be blocked");
        }
    }

    #[test]
    fn allow_list_admits_blocked_addresses_and_their_mapped_form() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net"), "fd00::/8".parse().expect("net")];
        assert!(is_permitted(ip("127.0.0.1"), &allow));
        assert!(is_permitted(ip("::ffff:127.0.0.1"), &allow));
        assert!(is_permitted(ip("fd00::5"), &allow));
        assert!(!is_permitted(ip("10.0.0.1"), &allow));
        assert!(!is_permitted(ip("::1"), &allow));
        assert!(is_permitted(ip("93.184.216.34"), &[]));
    }
}
