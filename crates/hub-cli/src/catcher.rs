//! The `--dev` catcher: a small local HTTP server that prints every request it receives
//! (method, path, headers, pretty JSON body) and answers 200, so the tour's deliveries have
//! somewhere visible to land.

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use std::io::Write;
use std::net::SocketAddr;

/// Largest body the catcher reads; the tour's deliveries are a few hundred bytes.
const MAX_BODY: usize = 1024 * 1024;

/// Binds the catcher and serves it in the background; returns its bound address.
pub async fn start(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(catch);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "catcher stopped");
        }
    });
    Ok(addr)
}

async fn catch(request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let text = render(&parts.method, &parts.uri, &parts.headers, &body);
    // stdout may be closed (a script that read the first line only); printing must not fail
    // the request.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    axum::Json(serde_json::json!({"status": "caught"}))
}

fn render(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> String {
    let mut s = format!("\n--- catcher received {method} {uri}\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    s.push('\n');
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => s.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => s.push_str(&String::from_utf8_lossy(body)),
    }
    s.push_str("\n---\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_method_path_headers_and_pretty_json() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-hub-event-id", axum::http::HeaderValue::from_static("evt_1"));
        let text = render(&axum::http::Method::POST, &"/crm/deals".parse().expect("uri"), &h, br#"{"a":1}"#);
        assert!(text.contains("catcher received POST /crm/deals"), "{text}");
        assert!(text.contains("x-hub-event-id: evt_1"), "{text}");
        assert!(text.contains("{\n  \"a\": 1\n}"), "{text}");
    }
}
