//! The gate in front of the local admin listener (`hub serve --admin-listen`): events, bodies
//! and replay are answered only to a caller on this machine that holds the admin token and
//! talks to the listener directly.
//!
//! A reverse proxy, tunnel or sidecar on the same host connects from a loopback address, so the
//! peer address alone proves nothing; and a browser page can reach loopback through DNS
//! rebinding. Hence, in this order: the peer is loopback, the request carries no proxy headers
//! and no browser `Origin`/`Sec-Fetch-*`, the `Host` is the listener's own address, and the
//! `Authorization: Bearer` token matches (compared in constant time).

use crate::router::error_response;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::Response;
use hub_core::error::{ErrorCode, PublicError};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Headers that only a proxy (or a client pretending to be one) adds.
const PROXY_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip"];

/// Headers that only browsers send.
const BROWSER_HEADERS: [&str; 3] = ["origin", "sec-fetch-site", "sec-fetch-mode"];

/// Who may use the admin listener.
pub struct AdminGuard {
    token: String,
    hosts: Vec<String>,
}

impl std::fmt::Debug for AdminGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGuard").field("token", &"[redacted]").field("hosts", &self.hosts).finish()
    }
}

impl AdminGuard {
    /// `listen` is the address the admin listener is bound to (its real port, not 0): the only
    /// `Host` values accepted are that address and `localhost` with its port.
    pub fn new(token: impl Into<String>, listen: SocketAddr) -> Self {
        let port = listen.port();
        let mut hosts = vec![format!("localhost:{port}")];
        match listen {
            SocketAddr::V4(a) => hosts.push(format!("{}:{port}", a.ip())),
            SocketAddr::V6(a) => {
                hosts.push(format!("[{}]:{port}", a.ip()));
                if let Some(v4) = a.ip().to_ipv4_mapped() {
                    hosts.push(format!("{v4}:{port}"));
                }
            }
        }
        Self { token: token.into(), hosts }
    }

    /// The `Host` values this guard accepts.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// `Ok` when the request may reach an admin route; otherwise the error to answer.
    pub fn check(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), PublicError> {
        // `::ffff:127.0.0.1` (an IPv4 client on a dual-stack socket) is loopback too.
        if !peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
            return Err(PublicError::new(
                ErrorCode::Forbidden,
                "admin routes answer connections from this machine only",
            ));
        }
        if let Some(h) = PROXY_HEADERS.iter().find(|h| headers.contains_key(**h)) {
            return Err(PublicError::new(
                ErrorCode::Forbidden,
                format!("admin routes are not served through a proxy (request carries `{h}`)"),
            ));
        }
        if let Some(h) = BROWSER_HEADERS.iter().find(|h| headers.contains_key(**h)) {
            let what = if *h == ORIGIN.as_str() { "Origin" } else { h };
            return Err(PublicError::new(
                ErrorCode::Forbidden,
                format!("admin routes do not answer browsers (request carries `{what}`)"),
            ));
        }
        let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(PublicError::new(
                ErrorCode::MisdirectedRequest,
                format!("this admin listener answers for {} only", self.hosts.join(", ")),
            ));
        }
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            return Err(PublicError::new(
                ErrorCode::Unauthorized,
                "admin routes need `Authorization: Bearer <token>` with the admin token",
            ));
        }
        Ok(())
    }
}

/// Middleware: answers the guard's error instead of running the route.
pub async fn guard(guard: Arc<AdminGuard>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    match guard.check(request.headers(), peer) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            tracing::warn!(code = e.code.as_str(), ?peer, "admin request refused");
            let mut r = error_response(&e);
            if e.code == ErrorCode::Unauthorized {
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn guard() -> AdminGuard {
        AdminGuard::new(TOKEN, "127.0.0.1:8081".parse().expect("addr"))
    }

    fn ok_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8081"));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("value"));
        h
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("peer"))
    }

    fn code(r: Result<(), PublicError>) -> Option<&'static str> {
        r.err().map(|e| e.code.as_str())
    }

    #[test]
    fn right_token_and_own_host_pass() {
        assert_eq!(code(guard().check(&ok_headers(), peer("127.0.0.1:5000"))), None);
        let mut h = ok_headers();
        h.insert(HOST, HeaderValue::from_static("localhost:8081"));
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:5000"))), None);
    }

    #[test]
    fn ipv4_mapped_loopback_peer_is_loopback() {
        assert_eq!(code(guard().check(&ok_headers(), peer("[::ffff:127.0.0.1]:5000"))), None);
    }

    #[test]
    fn foreign_peer_is_forbidden() {
        assert_eq!(code(guard().check(&ok_headers(), peer("10.0.0.7:5000"))), Some("forbidden"));
        assert_eq!(code(guard().check(&ok_headers(), None)), Some("forbidden"));
    }

    #[test]
    fn missing_or_wrong_token_is_unauthorized() {
        let mut h = ok_headers();
        h.remove(AUTHORIZATION);
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("unauthorized"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("unauthorized"));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {TOKEN}")).expect("v"));
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("unauthorized"));
        let longer = format!("Bearer {TOKEN}0");
        h.insert(AUTHORIZATION, HeaderValue::from_str(&longer).expect("v"));
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("unauthorized"));
    }

    #[test]
    fn foreign_or_missing_host_is_misdirected() {
        for host in ["rebind.attacker.example:8081", "127.0.0.1:8080", "localhost", "[::1]:8081"] {
            let mut h = ok_headers();
            h.insert(HOST, HeaderValue::from_str(host).expect("v"));
            assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("misdirected_request"), "{host}");
        }
        let mut h = ok_headers();
        h.remove(HOST);
        assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("misdirected_request"));
    }

    #[test]
    fn ipv6_listener_accepts_its_bracketed_host() {
        let g = AdminGuard::new(TOKEN, "[::1]:9000".parse().expect("addr"));
        let mut h = ok_headers();
        h.insert(HOST, HeaderValue::from_static("[::1]:9000"));
        assert_eq!(code(g.check(&h, peer("[::1]:5000"))), None);
    }

    #[test]
    fn proxied_or_browser_requests_are_forbidden_even_with_the_token() {
        for name in ["x-forwarded-for", "forwarded", "x-real-ip", "origin", "sec-fetch-site"] {
            let mut h = ok_headers();
            h.insert(axum::http::HeaderName::from_static(name), HeaderValue::from_static("x"));
            assert_eq!(code(guard().check(&h, peer("127.0.0.1:1"))), Some("forbidden"), "{name}");
        }
    }
}
