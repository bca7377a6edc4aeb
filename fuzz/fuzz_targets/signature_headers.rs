//! Every provider preset in `hub_core::verify::presets::PRESETS` run on a request derived from the
//! fuzz input: `Verifier::verify_with(&req, url, now)` must never panic.
//!
//! The input is a small HTTP-like text, so real signature vectors seed it directly (see
//! `make_seeds.py`, which converts the corpus manifest's signature cases):
//!
//! ```text
//! :now 1600112502            verifier clock, unix seconds (clamped to 2001..2128); default 1600112502
//! :url https://host/p?q=1    URL the sender called (absent: None)
//! :method POST               default POST
//! :remote 203.0.113.7        remote address
//! :secret 12345              build the secret-keyed presets with this secret for this input
//! :preset twilio             run only this preset (default: all)
//! :sign                      prepend the signature header where the verifier can sign (plain HMAC presets)
//! Header-Name: value         any number of headers; `{ts}` / `{ms}` in a value become the clock
//!                            in seconds / milliseconds
//! <empty line>
//! body bytes (anything)
//! ```
//!
//! SendGrid and Paddle Classic always use the fixed public keys below (they need parseable key
//! material); every other preset uses a fixed secret unless `:secret` is given. Each preset runs
//! with its documented tolerance and with freshness checks off, so the code after the timestamp
//! check is reached with any timestamp.
#![no_main]

use bytes::Bytes;
use hub_core::UnixMillis;
use hub_core::request::{Headers, RawRequest};
use hub_core::secret::Secret;
use hub_core::verify::Verifier;
use hub_core::verify::presets::{PRESETS, Preset};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// SendGrid's public verification key (base64 DER, P-256), from the corpus manifest
/// (`tests/corpus/manifest.json`, sendgrid signature cases).
const SENDGRID_KEY: &str =
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

/// Paddle Classic's RSA public key (`corpus/paddle-classic/verification/paddle_public_key.pem`).
const PADDLE_CLASSIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA3CGT82ixrOTpCjAyY9pI\nGthIx4HzZtnO519VECl7wouV4nSD/09YDkyeujygarlYuKjILra4/yuwHoQGD/En\nEdADYfNgBNYMuiUhsiXArPQRuqRKSi3xboZEkeDLaeABtxr/5VWyHFtxbSe8FMa6\nst0Lm6zrOauYkYRbWF+8+6pp4CVNsFSBjP8PLum0zN9Uh44DyFI6qlJ3xA5Uxcr/\nEw/Fp3eDPloqqa2MNCZnkJwft5rLVz/B5YWf5jY515OKl+OU/t+FCtxKpjj74ug7\n9Vk5cZsA3044VClsusI3qj/iRXPWtBNKUpj0tknT5Q9J94twv3kfa+XMu61uOw3k\nVjhf62W6CYt5jtQdk/HgxzMP64ouvf0zVDKHoJtprU524IXOYxK7tiDXuktpVAw3\nSnNh/bpN0qD2D7TGVzHeajgcppxjBYJc6OzXHToiyIiLGqZdP0ewzfOIKGkW9tOi\nY/1kSzlkJrQ6sfM5aKg6SSsos0+TBY9t7/UZFVKKe7J4ijSRmsFd+DVmc2KHHReK\nrd1tEBa2GQeJU9F0iM5EVcYnXeXzHRNha54snsp5ZYXSAmsYZCAutdh+gWI2Alni\nP97ZBsCbv7RHLQOY60CXkKnILEPhu4u5Kp7P1Ez1deGf/mcnZz21RCdC7PhqPXtm\nWtpkNrCK6BeRMj0XZG7oB3MCAwEAAQ==\n-----END PUBLIC KEY-----";

/// A Standard Webhooks / Svix secret (`whsec_` + base64), from the Standard Webhooks test vector.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const GENERIC: &str = "It's a Secret to Everybody";

const DEFAULT_NOW_SECS: u64 = 1_600_112_502;

/// `HUB_FUZZ_DEBUG=1`: print every verdict (to check that seeds reach the paths they should).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("HUB_FUZZ_DEBUG").is_some());

fn fixed_key(p: &Preset) -> Option<&'static str> {
    match p.name {
        "sendgrid" => Some(SENDGRID_KEY),
        "paddle-classic" => Some(PADDLE_CLASSIC_KEY),
        _ => None,
    }
}

fn default_secret(p: &Preset) -> &'static str {
    match p.name {
        "standard-webhooks" | "svix" => WHSEC,
        _ => fixed_key(p).unwrap_or(GENERIC),
    }
}

/// The preset with its documented tolerance and, if it has one, without; plus its older
/// signature versions (HubSpot v1/v2) when it has them.
fn build(p: &Preset, secret: &str) -> Vec<Verifier> {
    let mut tolerances = vec![p.tolerance];
    if p.tolerance.is_some() {
        tolerances.push(None);
    }
    let mut built: Vec<Verifier> =
        tolerances.iter().filter_map(|t| p.verifier(vec![Secret::new(secret)], *t).ok()).collect();
    if p.has_legacy_signatures() {
        built.extend(p.legacy_verifier(vec![Secret::new(secret)], p.tolerance).ok());
    }
    built
}

/// Built once: (preset, its verifiers with the default secret / key).
static DEFAULT: LazyLock<Vec<(&'static Preset, Vec<Verifier>)>> = LazyLock::new(|| {
    PRESETS
        .iter()
        .map(|p| {
            let v = build(p, default_secret(p));
            assert!(!v.is_empty(), "fuzz setup: preset {} does not build", p.name);
            (p, v)
        })
        .collect()
});

#[derive(Default)]
struct Spec<'a> {
    now_secs: Option<u64>,
    url: Option<&'a str>,
    method: Option<&'a str>,
    remote: Option<&'a str>,
    secret: Option<&'a str>,
    preset: Option<&'a str>,
    sign: bool,
    headers: Vec<(&'a str, &'a str)>,
}

fn parse(head: &str) -> Spec<'_> {
    let mut s = Spec::default();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(pseudo) = line.strip_prefix(':') {
            let (k, v) = pseudo.split_once(' ').unwrap_or((pseudo, ""));
            match k {
                "now" => s.now_secs = v.trim().parse().ok(),
                "url" => s.url = Some(v),
                "method" => s.method = Some(v),
                "remote" => s.remote = Some(v),
                "secret" => s.secret = Some(v),
                "preset" => s.preset = Some(v.trim()),
                "sign" => s.sign = true,
                _ => {}
            }
        } else if let Some((k, v)) = line.split_once(':') {
            s.headers.push((k, v.trim_start_matches(' ')));
        }
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let spec = parse(&head);
    let now_secs = spec.now_secs.unwrap_or(DEFAULT_NOW_SECS).clamp(1_000_000_000, 5_000_000_000);
    let now = UnixMillis::from_secs(now_secs);
    let (ts, ms) = (now_secs.to_string(), now.0.to_string());
    let mut headers = Headers::new();
    for (k, v) in &spec.headers {
        headers.push(k, v.replace("{ts}", &ts).replace("{ms}", &ms));
    }
    let req = RawRequest {
        method: spec.method.unwrap_or("POST").to_string(),
        path: "/hooks/fuzz".into(),
        query: spec.url.and_then(|u| u.split_once('?')).map(|(_, q)| q.to_string()),
        headers,
        body: Bytes::copy_from_slice(body),
        received_at: now,
        remote_addr: spec.remote.map(str::to_string),
    };
    for (preset, defaults) in DEFAULT.iter() {
        if spec.preset.is_some_and(|name| name != preset.name) {
            continue;
        }
        let custom = match spec.secret {
            Some(secret) if fixed_key(preset).is_none() => build(preset, secret),
            _ => Vec::new(),
        };
        let verifiers = if custom.is_empty() { defaults } else { &custom };
        for verifier in verifiers {
            let verdict = match (spec.sign, verifier.sign(&req.body)) {
                (true, Some((h, v))) => {
                    let mut signed = req.clone();
                    signed.headers.0.insert(0, (h, v));
                    verifier.verify_with(&signed, spec.url, now).map(|_| ())
                }
                _ => verifier.verify_with(&req, spec.url, now).map(|_| ()),
            };
            if *DEBUG {
                eprintln!("{}: {verdict:?}", preset.name);
            }
        }
    }
});
