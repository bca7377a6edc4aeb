//! HTTP routes: `POST /hooks/{source}` to ingest, `GET /healthz`; every error is JSON with a
//! stable code.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hub_core::error::{ErrorCode, PublicError};
use hub_core::ids::EventId;
use hub_core::pipeline::{Hub, IngestError, Ingested};
use hub_core::request::{Headers, RawRequest};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{error, warn};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// Proxies in front of the hub: for a connection from one of them the client address is
    /// read from `X-Forwarded-For`. Empty: the connection's own address, always.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

impl AppState {
    /// A state that trusts no proxy (the Lambda shell takes the address from the request context).
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub, trusted_proxies: Arc::default() }
    }
}

/// The client's address: the connection's peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` (read right to left) that is not a trusted proxy. Each
/// proxy appends the address it saw, so only the entries added by trusted hops are believed; an
/// entry that does not parse stops the walk at the last trusted hop.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let parsed =
            hop.parse::<std::net::IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()));
        let Some(ip) = parsed.map(|ip| ip.to_canonical()) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The HTTP surface, identical in every shell.
pub fn router(state: AppState) -> Router {
    Router::new()
        // Some senders check an endpoint before they send to it (Mailchimp GETs it, Mandrill
        // sends HEAD): answer for configured sources, store nothing.
        .route(
            "/hooks/{source}",
            post(ingest).get(endpoint_check).head(endpoint_check).fallback(method_not_allowed),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// A JSON error response with the code's status.
pub fn error_response(e: &PublicError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.to_json())).into_response()
}

async fn not_found(uri: Uri) -> Response {
    error_response(&PublicError::new(ErrorCode::NotFound, format!("no route for {}", uri.path())))
}

async fn method_not_allowed(method: Method) -> Response {
    let mut r = error_response(&PublicError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not accepted here; webhooks are POSTed"),
    ));
    r.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("POST"));
    r
}

async fn endpoint_check(State(st): State<AppState>, Path(source): Path<String>) -> Response {
    match st.hub.mappings().source(&source) {
        Some(_) => Json(json!({"status": "ok", "source": source})).into_response(),
        None => error_response(&IngestError::UnknownSource(source).public()),
    }
}

/// 200 while the store can be used, else 503 with the reason (a full disk, a store being
/// reopened), so that a supervisor or load balancer sees what senders see.
async fn healthz(State(st): State<AppState>) -> Response {
    let sources = st.hub.mappings().sources.len();
    match st.hub.health().await {
        Ok(()) => Json(json!({"status": "ok", "sources": sources, "store": "ok"})).into_response(),
        Err(e) => {
            warn!(error = %e, "health check: store unavailable");
            let mut body =
                PublicError::new(ErrorCode::StoreUnavailable, "the store cannot be used").to_json();
            if let Some(o) = body.as_object_mut() {
                o.insert("status".into(), json!("unavailable"));
                o.insert("sources".into(), json!(sources));
                o.insert("store".into(), json!("unavailable"));
                o.insert("reason".into(), json!(e.to_string()));
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn ingest(
    State(st): State<AppState>,
    Path(source): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let connect = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    let received_at = st.hub.now();
    let Some(limit) = st.hub.mappings().source(&source).map(|s| s.max_body_bytes) else {
        return error_response(&IngestError::UnknownSource(source).public());
    };
    // Read at most the cap, and (served by `hub serve`) only until the body deadline: a sender
    // can neither make us buffer more than the source allows nor hold the request open forever.
    let read = Limited::new(body, limit).collect();
    let collected = match parts.extensions.get::<crate::server::BodyDeadline>() {
        Some(d) => match tokio::time::timeout_at(d.0, read).await {
            Ok(r) => r,
            Err(_) => {
                warn!(source = %source, "body not received within the deadline");
                let mut r = error_response(&PublicError::new(
                    ErrorCode::RequestTimeout,
                    "the request body did not arrive in time",
                ));
                r.headers_mut()
                    .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                return r;
            }
        },
        None => read.await,
    };
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error_response(&IngestError::TooLarge { size: limit + 1, limit }.public());
        }
        Err(e) => {
            warn!(source = %source, error = %e, "body read failed");
            return error_response(&PublicError::new(
                ErrorCode::InvalidBody,
                "the request body could not be read",
            ));
        }
    };
    let mut hs = Headers::new();
    for (k, v) in &headers {
        hs.push(k.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let req = RawRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: hs,
        body: bytes,
        received_at,
        remote_addr: connect.map(|c| client_ip(c.0.ip(), &headers, &st.trusted_proxies).to_string()),
    };
    match st.hub.ingest(&source, req).await {
        Ok(Ingested { challenge: Some(c), .. }) => Json(json!({"challenge": c})).into_response(),
        Ok(ok) => {
            let status = if ok.duplicate { "duplicate" } else { "accepted" };
            (StatusCode::OK, Json(json!({"status": status, "event_id": ok.event_id}))).into_response()
        }
        Err(e) => {
            match &e {
                IngestError::Store(inner) => {
                    error!(source = %source, error = %inner, "store failed; event not accepted")
                }
                other => warn!(source = %source, error = %other, "webhook rejected"),
            }
            error_response(&e.public())
        }
    }
}

/// Admin routes for the local shell: list/show events and replay, so `hub events` and
/// `hub replay` work while `hub serve` holds the store. Served on their own loopback listener,
/// behind [`crate::admin::AdminGuard`] (token, own `Host`, no proxies or browsers).
///
/// `extra` adds a shell's own admin routes (the local mapping push) behind the same guard.
pub fn admin_router(
    state: AppState,
    guard: std::sync::Arc<crate::admin::AdminGuard>,
    extra: Router,
) -> Router {
    admin_routes(state).merge(extra).fallback(not_found).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            crate::admin::guard(guard.clone(), req, next)
        },
    ))
}

/// The admin routes without a guard, for a shell that authenticates callers itself (the
/// `admin-http` function sits behind IAM-authenticated Function URL).
pub fn admin_routes(state: AppState) -> Router {
    Router::new()
        .route("/admin/events", get(admin_list))
        .route("/admin/events/{id}", get(admin_show))
        .route("/admin/events/{id}/replay", post(admin_replay))
        .route("/admin/state/{entity}/{key}", get(admin_state))
        .with_state(state)
}

fn store_failure(e: &hub_core::ports::StoreError) -> Response {
    error!(error = %e, "admin request failed");
    error_response(&PublicError::new(ErrorCode::StoreUnavailable, "the store could not be read"))
}

fn no_event(id: &EventId) -> Response {
    error_response(&PublicError::new(ErrorCode::NotFound, format!("no event {id}")))
}

#[derive(serde::Deserialize)]
struct ListParams {
    source: Option<String>,
    status: Option<hub_core::event::EventStatus>,
    limit: Option<usize>,
    /// Only events older than this one (the `next` link of the previous page).
    before: Option<String>,
}

async fn admin_list(State(st): State<AppState>, Query(params): Query<ListParams>) -> Response {
    let q = hub_core::ports::EventQuery {
        source: params.source.map(hub_core::ids::SourceId::new),
        status: params.status,
        limit: params.limit.unwrap_or(50).clamp(1, 1000),
        before: params.before.map(EventId::new),
    };
    match st.hub.events(&q).await {
        // Summaries only: request headers, query and body are shown for one event at a time.
        Ok(page) => {
            let body = Json(page.events.iter().map(|e| e.summary()).collect::<Vec<_>>());
            match page.next.map(|next| next_link(&q, &next)) {
                Some(link) => ([(axum::http::header::LINK, link)], body).into_response(),
                None => body.into_response(),
            }
        }
        Err(e) => store_failure(&e),
    }
}

/// The `Link` header to the page after this one (RFC 8288), with the same filters.
fn next_link(q: &hub_core::ports::EventQuery, next: &EventId) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = &q.source {
        url.append_pair("source", s.as_str());
    }
    if let Some(s) = q.status {
        url.append_pair("status", s.as_str());
    }
    url.append_pair("limit", &q.limit.to_string());
    url.append_pair("before", next.as_str());
    format!("</admin/events?{}>; rel=\"next\"", url.finish())
}

#[derive(serde::Deserialize)]
struct ShowParams {
    #[serde(default)]
    body: bool,
}

async fn admin_show(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ShowParams>,
) -> Response {
    let id = EventId::new(id);
    match st.hub.event(&id).await {
        Ok(Some(ev)) => {
            let mut v = serde_json::to_value(&ev).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("status".into(), json!(ev.status()));
                if p.body
                    && let Ok(Some(b)) = st.hub.body(&id).await
                {
                    o.insert("body".into(), json!(String::from_utf8_lossy(&b)));
                }
            }
            Json(v).into_response()
        }
        Ok(None) => no_event(&id),
        Err(e) => store_failure(&e),
    }
}

/// One entity's state: fields, scores with their ledger, counters, journeys, trigger states.
async fn admin_state(State(st): State<AppState>, Path((entity, key)): Path<(String, String)>) -> Response {
    use hub_core::triggers::StateLookup;
    match st.hub.entity_state(&entity, &key).await {
        Ok(StateLookup::Found(v)) => Json(v).into_response(),
        Ok(StateLookup::UnknownEntity) => error_response(&PublicError::new(
            ErrorCode::NotFound,
            format!("no entity file declares `entity: {entity}`"),
        )),
        Ok(StateLookup::NotStored) => error_response(&PublicError::new(
            ErrorCode::NotFound,
            format!("nothing is stored for {entity}/{key} (no fact about it was applied)"),
        )),
        Err(e) => store_failure(&e),
    }
}

async fn admin_replay(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let id = EventId::new(id);
    match st.hub.replay(&id).await {
        Ok(true) => Json(json!({"status": "queued", "event_id": id})).into_response(),
        Ok(false) => no_event(&id),
        Err(e) => store_failure(&e),
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::client_ip;
    use axum::http::HeaderMap;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn a_direct_client_cannot_claim_another_address() {
        let h = xff(&["10.1.2.3"]);
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(client_ip(ip("198.51.100.7"), &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_address_it_saw_is_the_client() {
        let trusted = nets(&["127.0.0.1/32"]);
        // The client sent a forged first entry; the proxy appended what it really saw.
        let h = xff(&["10.1.2.3, 203.0.113.9"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Same with the proxy's entry on its own header line, and through an IPv4-mapped peer.
        let h = xff(&["10.1.2.3", "203.0.113.9"]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_hop() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let h = xff(&["192.0.2.1, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let h = xff(&["203.0.113.9, unknown, 10.0.0.5"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("10.0.0.5"));
        let h = xff(&[]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
    }
}

#[cfg(test)]
mod listing_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::body::Body;
    use hub_core::mapping::MappingSet;
    use hub_core::ports::commit::{Change, Commit, Committer};
    use hub_core::secret::MapSecrets;
    use hub_core::testing::{ManualClock, MemoryStorage, RecordingQueue, ScriptedForwarder};
    use hub_core::time::UnixMillis;
    use tower::ServiceExt;

    async fn get(app: &Router, uri: &str) -> (Option<String>, Vec<String>) {
        let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let link = resp.headers().get(axum::http::header::LINK).map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        (link, list.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect())
    }

    /// The listing pages backwards with the `Link` header's `next`, keeping the filters, and the
    /// last page has none.
    #[tokio::test]
    async fn the_event_listing_pages_with_a_next_link() {
        let storage = Arc::new(MemoryStorage::new());
        let mut ids = Vec::new();
        for n in 0..5 {
            let ev = hub_core::conformance::new_event("leads", None, 1_000 + n);
            ids.push(ev.id.to_string());
            storage.commit(Commit::new(UnixMillis(1_000 + n)).with(Change::Accept(ev))).await.unwrap();
        }
        let other = hub_core::conformance::new_event("other", None, 2_000);
        storage.commit(Commit::new(UnixMillis(2_000)).with(Change::Accept(other))).await.unwrap();
        let set = MappingSet::compile(&[], &MapSecrets(Default::default())).unwrap();
        let hub = Hub::new(
            Arc::new(set),
            storage,
            Arc::new(ScriptedForwarder::default()),
            Arc::new(ManualClock::at(UnixMillis(3_000))),
            Arc::new(RecordingQueue::default()),
        );
        let app = admin_routes(AppState::new(Arc::new(hub)));
        ids.reverse();
        let (link, first) = get(&app, "/admin/events?source=leads&limit=2").await;
        assert_eq!(first, ids[..2]);
        let link = link.expect("a next link");
        let next = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).expect("link").0;
        assert_eq!(next, format!("/admin/events?source=leads&limit=2&before={}", ids[1]));
        let (link, second) = get(&app, next).await;
        assert_eq!(second, ids[2..4]);
        let next = link.expect("a next link");
        let next = next.trim_start_matches('<').split('>').next().unwrap().to_string();
        let (link, last) = get(&app, &next).await;
        assert_eq!((last, link), (ids[4..].to_vec(), None), "the last page links nowhere");
    }

    /// `GET /admin/state/{entity}/{key}` explains a contact's state after a webhook's fact, and
    /// says why when the entity or the state does not exist.
    #[tokio::test]
    async fn an_entitys_state_is_shown_with_its_ledger_and_triggers() {
        let entity = "entity: contact\nscores:\n  lead_score:\n    rules:\n      - {on: email.opened, points: 2}\nroutes:\n  - id: hot\n    on: {crosses: lead_score, above: 5}\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n";
        let source = "source:\n  id: opens\n  description: t\n  verify: none\n  facts:\n    - {entity: contact, key: $.body.email, name: email.opened}\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/b\"}\n";
        let files = [("e.yaml".to_string(), entity.to_string()), ("s.yaml".to_string(), source.to_string())];
        let set = MappingSet::compile(&files, &MapSecrets(Default::default())).unwrap();
        let hub = Arc::new(Hub::new(
            Arc::new(set),
            Arc::new(MemoryStorage::new()),
            Arc::new(ScriptedForwarder::default()),
            Arc::new(ManualClock::at(UnixMillis(3_000))),
            Arc::new(RecordingQueue::default()),
        ));
        let req = hub_core::request::RawRequest {
            method: "POST".into(),
            path: "/hooks/opens".into(),
            query: None,
            headers: hub_core::request::Headers(vec![("content-type".into(), "application/json".into())]),
            body: bytes::Bytes::from_static(br#"{"email": "ann@example.com"}"#),
            received_at: UnixMillis(3_000),
            remote_addr: None,
        };
        let id = hub.ingest("opens", req).await.unwrap().event_id;
        hub.run_job(&hub_core::ports::Job::Dispatch(id)).await.unwrap();
        let app = admin_routes(AppState::new(hub));
        let call = |uri: &'static str| {
            let app = app.clone();
            async move {
                let resp =
                    app.oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
            }
        };
        let (status, v) = call("/admin/state/contact/ann@example.com").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["view"]["lead_score"], 2);
        assert_eq!(v["version"], 1);
        assert_eq!(v["ledger"]["lead_score"][0]["points"], 2);
        assert_eq!(v["triggers"]["contact.hot"]["armed"], true);
        let (status, v) = call("/admin/state/contact/bob@example.com").await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        let (status, v) = call("/admin/state/deal/1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(v["error"]["message"].as_str().unwrap().contains("no entity file declares"), "{v}");
    }
}
