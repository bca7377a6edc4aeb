//! Test harness: start `hub serve` as a child process, a recording destination, signing helpers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use hmac::{KeyInit, Mac};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-signing-secret";

/// A request the destination received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("destination got JSON")
    }
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// What the destination answers: a queue of statuses, then `default`.
#[derive(Default)]
pub struct Script {
    pub next: Vec<u16>,
    pub default: u16,
}

#[derive(Clone)]
pub struct Destination {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Script>>,
}

impl Destination {
    /// Answers 200 unless scripted otherwise. Records every request, whatever it answers.
    pub async fn start() -> Destination {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Destination {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(Script { next: Vec::new(), default: 200 }));
        let app = Router::new().fallback(any(record)).with_state((got.clone(), script.clone()));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind destination");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Destination { addr, got, script }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn script(&self, next: &[u16], default: u16) {
        let mut s = self.script.lock().expect("lock");
        s.next = next.to_vec();
        s.default = default;
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `n` requests arrived (or panics after `secs`).
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "destination got {} of {n} requests in {secs}s", got.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

type DestState = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<Script>>);

async fn record(State((got, script)): State<DestState>, req: axum::extract::Request) -> StatusCode {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    got.lock().expect("lock").push(Received {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    });
    let mut s = script.lock().expect("lock");
    let code = if s.next.is_empty() { s.default } else { s.next.remove(0) };
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

/// A `hub serve` child process.
pub struct Hub {
    pub child: Child,
    /// The public listener, `http://127.0.0.1:<port>`.
    pub base: String,
    /// The store file; the admin address and token files sit next to it.
    pub store: std::path::PathBuf,
}

pub fn hub_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hub")
}

impl Hub {
    /// Starts `hub serve` on a free port with `mappings` and `store`.
    pub fn start(mappings: &Path, store: &Path) -> Hub {
        Self::start_with_env(mappings, store, &[])
    }

    /// Like [`Hub::start`], with extra environment variables (secrets).
    pub fn start_with_env(mappings: &Path, store: &Path, env: &[(&str, &str)]) -> Hub {
        let mut child = Command::new(hub_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--allow-net", "127.0.0.0/8", "--store"])
            .arg(store)
            .arg("--mappings")
            .arg(mappings)
            .env("LEAD_SECRET", SECRET)
            .env("CRM_TOKEN", "crm-token-123")
            .env("HUB_LOG", "warn")
            .env_remove("HUB_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hub");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read hub stdout");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_string();
        Hub { child, base, store: store.to_path_buf() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The admin listener's address, as the server recorded it next to the store.
    pub fn admin_addr(&self) -> String {
        admin_addr(&self.store)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// The admin bearer token from the token file next to the store.
    pub fn admin_token(&self) -> String {
        admin_token(&self.store)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin address recorded next to `store` by a running `hub serve`.
pub fn admin_addr(store: &Path) -> String {
    let mut name = store.file_name().expect("store file").to_os_string();
    name.push(".admin-addr");
    std::fs::read_to_string(store.with_file_name(name)).expect("admin address file").trim().to_string()
}

/// The admin token written next to `store` by `hub serve`.
pub fn admin_token(store: &Path) -> String {
    let mut name = store.file_name().expect("store file").to_os_string();
    name.push(".admin-token");
    std::fs::read_to_string(store.with_file_name(name)).expect("admin token file").trim().to_string()
}

/// Runs the `hub` binary with `args`; returns (exit code, stdout).
pub fn hub_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(hub_bin()).args(args).output().expect("run hub");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the `hub` binary with extra environment variables; returns its exit code, stdout and
/// stderr.
pub fn hub_cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(hub_bin()).args(args).envs(env.iter().copied()).output().expect("run hub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn sign(body: &[u8]) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// A mapping directory with one signed lead source delivering to `dest`.
pub fn lead_mappings(dir: &Path, dest: &str, extra_route: &str) {
    let yaml = format!(
        r#"source:
  id: leads
  verify:
    hmac: {{algorithm: sha256, header: X-Signature, prefix: "sha256=", secret: env:LEAD_SECRET}}
  dedup: {{path: $.body.id}}
  max_body_bytes: 4096
routes:
  - id: crm
    when: {{path: $.body.type, eq: lead}}
    map:
      email: "{{{{normalize_email body.email}}}}"
      first_name: "{{{{word body.name 0}}}}"
      last_name: "{{{{word body.name 1 rest=true}}}}"
      phone: "{{{{e164 body.phone}}}}"
      utm_source: {{path: $.body.utm_source, default: direct}}
      amount: {{path: $.body.amount, type: number}}
    to:
      url: {dest}
      allow_net: [127.0.0.0/8]
      auth: {{bearer: env:CRM_TOKEN}}
      headers: {{X-Lead-Id: "{{{{body.id}}}}"}}
    retry: {{initial_delay: 100ms, max_delay: 300ms, jitter: false, max_attempts: 5, timeout: 2s}}
{extra_route}"#
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("leads.yaml"), yaml).expect("write mapping");
}

pub fn lead_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "type": "lead",
        "email": "  Ann.Lee@Example.COM ",
        "name": "Ann Marie Lee",
        "phone": "(415) 555-0132",
        "amount": "1250.50"
    }))
    .expect("json")
}

pub async fn post_signed(client: &reqwest::Client, hub: &Hub, body: Vec<u8>) -> reqwest::Response {
    let sig = sign(&body);
    client
        .post(hub.url("/hooks/leads"))
        .header("content-type", "application/json")
        .header("x-signature", sig)
        .body(body)
        .send()
        .await
        .expect("post")
}
