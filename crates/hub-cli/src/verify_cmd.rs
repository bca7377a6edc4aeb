//! `hub verify`: check one request's signature offline with a provider preset, through the same
//! verifier the server uses.

use anyhow::{Context, Result, bail};
use hub_core::request::{Headers, RawRequest};
use hub_core::secret::Secret;
use hub_core::time::{Clock, SystemClock, UnixMillis};
use hub_core::verify::presets;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub struct VerifyArgs {
    pub provider: String,
    /// Environment variables holding secrets (`--secret-env`).
    pub secret_envs: Vec<String>,
    /// Secrets given on the command line (`--secret`).
    pub secrets: Vec<String>,
    pub headers: Vec<String>,
    pub body_file: PathBuf,
    pub url: Option<String>,
    pub method: String,
    pub now: Option<u64>,
    pub tolerance: Option<String>,
}

/// Prints `valid` (returns true) or `invalid: <reason>` (returns false).
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<bool> {
    let Some(preset) = presets::preset(&args.provider) else {
        bail!("unknown provider `{}` (known: {})", args.provider, presets::names().join(", "));
    };
    let mut secrets = Vec::new();
    for name in &args.secret_envs {
        let value =
            std::env::var(name).map_err(|_| anyhow::anyhow!("--secret-env {name}: variable not set"))?;
        if !hub_core::secret::is_usable(&value) {
            bail!("--secret-env {name}: variable is empty");
        }
        secrets.push(Secret::new(value));
    }
    for s in &args.secrets {
        if !hub_core::secret::is_usable(s) {
            bail!("--secret is empty");
        }
        secrets.push(Secret::new(s.as_str()));
    }
    if secrets.is_empty() {
        bail!("--secret-env NAME is required (repeat it to try several)");
    }
    let tolerance = match args.tolerance.as_deref() {
        None => preset.tolerance,
        Some(t) if t.eq_ignore_ascii_case("none") => None,
        Some(t) => Some(Duration::from_secs(
            t.parse().with_context(|| format!("--tolerance `{t}`: seconds or none"))?,
        )),
    };
    let verifier =
        preset.verifier(secrets, tolerance).map_err(|e| anyhow::anyhow!("{}: {e}", preset.name))?;
    let mut headers = Headers::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else { bail!("--header takes 'Name: value', got `{h}`") };
        headers.push(k.trim(), v.trim());
    }
    let body =
        std::fs::read(&args.body_file).with_context(|| format!("reading {}", args.body_file.display()))?;
    let now = args.now.map(UnixMillis::from_secs).unwrap_or_else(|| SystemClock.now());
    let req = RawRequest {
        method: args.method.to_ascii_uppercase(),
        path: "/".into(),
        query: None,
        headers,
        body: bytes::Bytes::from(body),
        received_at: now,
        remote_addr: None,
    };
    match verifier.verify_with(&req, args.url.as_deref(), now) {
        Ok(_) => {
            writeln!(out, "valid")?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "invalid: {e}")?;
            Ok(false)
        }
    }
}
