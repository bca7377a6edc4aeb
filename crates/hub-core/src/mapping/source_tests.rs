//! Source compilation: secrets, verification and replay keys.

use super::*;
use crate::secret::MapSecrets;
use crate::verify::VerifyError;

const ROUTE: &str = "routes:\n  - id: r\n    map: {a: $.body.a}\n    to: {url: \"https://x.test\"}\n";

fn secrets(pairs: &[(&str, &str)]) -> MapSecrets {
    MapSecrets(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn compile(source: &str, env: &[(&str, &str)]) -> Result<CompiledSource, Vec<String>> {
    let text = format!("{source}{ROUTE}");
    compile_file("m.yaml", &text, &secrets(env))
        .map(|(s, _)| s)
        .map_err(|d| d.iter().map(ToString::to_string).collect())
}

fn errors(source: &str, env: &[(&str, &str)]) -> Vec<String> {
    match compile(source, env) {
        Ok(_) => panic!("expected a compile error for\n{source}"),
        Err(e) => e,
    }
}

fn request(headers: &[(&str, &str)], body: &[u8], now_secs: u64) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        path: "/hooks/s".into(),
        query: None,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: Bytes::copy_from_slice(body),
        received_at: UnixMillis::from_secs(now_secs),
        remote_addr: None,
    }
}

fn key_of(src: &CompiledSource, req: &RawRequest) -> Option<(String, Duration)> {
    let env = src.envelope(&EventId::new("evt_1"), req.received_at, &req.headers, None, json!({}));
    src.dedup_key(&env, &req.headers, &req.body)
}

#[test]
fn an_empty_or_blank_secret_fails_like_an_unset_one() {
    for value in ["", "   ", "\n"] {
        let src = "source:\n  id: s\n  provider: github\n  secret: env:GH\n";
        let e = errors(src, &[("GH", value)]);
        assert_eq!(e, vec!["m.yaml:4:11: secret `env:GH` is empty (an empty secret would let anyone sign)"]);
    }
    let unset = errors("source:\n  id: s\n  provider: github\n  secret: env:GH\n", &[]);
    assert_eq!(unset, vec!["m.yaml:4:11: secret `env:GH` is not set"]);
    // The generic scheme, a rotation list and basic auth go through the same check.
    let hmac = "source:\n  id: s\n  verify:\n    hmac: {algorithm: sha256, header: X-Sig, secrets: [env:A, env:B]}\n";
    assert!(errors(hmac, &[("A", "k"), ("B", " ")])[0].contains("secret `env:B` is empty"));
    let basic = "source:\n  id: s\n  verify:\n    basic_auth: {username: u, password: env:P}\n";
    assert!(errors(basic, &[("P", "")])[0].contains("secret `env:P` is empty"));
}

#[test]
fn an_inline_secret_is_never_echoed() {
    let e = errors("source:\n  id: s\n  provider: stripe\n  secret: sk_live_51Hxyz\n", &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(!e[0].contains("sk_live"), "{}", e[0]);
    assert!(
        e[0].starts_with("m.yaml:4:11: `secret`: must be a secret reference `env:VARIABLE_NAME`"),
        "{}",
        e[0]
    );
    let e = errors("source:\n  id: s\n  provider: stripe\n  secret: \"env:sk-live-51Hxyz\"\n", &[]);
    assert!(!e[0].contains("sk-live"), "{}", e[0]);
}

#[test]
fn a_source_without_verification_is_a_compile_error() {
    let e = errors("source:\n  id: open\n", &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("m.yaml:2:7: source has no verification"), "{}", e[0]);
}

#[test]
fn verify_none_needs_a_description() {
    let e = errors("source:\n  id: open\n  verify: none\n", &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("m.yaml:3:11: `verify: none` accepts requests from anyone"), "{}", e[0]);
    let blank = errors("source:\n  id: open\n  description: \" \"\n  verify: none\n", &[]);
    assert!(blank[0].contains("`verify: none`"), "{blank:?}");

    let src =
        compile("source:\n  id: open\n  description: the lab printer cannot sign\n  verify: none\n", &[])
            .expect("compiles");
    assert!(src.is_unverified());
    assert!(src.verifier.verify(&request(&[], b"{}", 0)).is_ok());
    let signed =
        compile("source:\n  id: s\n  provider: github\n  secret: env:GH\n", &[("GH", "k")]).expect("ok");
    assert!(!signed.is_unverified());
}

#[test]
fn replay_keys_do_not_depend_on_how_the_signature_is_written() {
    // Slack: hex digits in any case decode to the same MAC.
    let slack = compile("source:\n  id: s\n  provider: slack\n  secret: env:K\n", &[("K", "k")]).expect("ok");
    let body = b"token=x&trigger_id=1";
    let lower = request(&[("x-slack-signature", "v0=ab12"), ("x-slack-request-timestamp", "1")], body, 1);
    let upper = request(&[("x-slack-signature", "v0=AB12"), ("x-slack-request-timestamp", "1")], body, 1);
    let (k1, window) = key_of(&slack, &lower).expect("a replay key");
    assert_eq!(Some((k1.clone(), window)), key_of(&slack, &upper));
    assert_eq!(window, Duration::from_secs(600));
    assert_eq!(k1, body_digest_key(body));
    // Calendly: list order and extra items do not matter either.
    let cal =
        compile("source:\n  id: c\n  provider: calendly\n  secret: env:K\n", &[("K", "k")]).expect("ok");
    let a = request(&[("calendly-webhook-signature", "t=1,v1=ab")], b"{}", 1);
    let b = request(&[("calendly-webhook-signature", "v1=ab,t=1,v1=junk,v0=")], b"{}", 1);
    assert_eq!(key_of(&cal, &a), key_of(&cal, &b));
    assert!(key_of(&cal, &a).is_some());
    // Another body is another event.
    assert_ne!(key_of(&cal, &a), key_of(&cal, &request(&[], b"{ }", 1)));
}

mod sendgrid {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::{Signature, SigningKey};
    use sha2::{Digest, Sha256};

    const TS: &str = "1700000000";
    const BODY: &[u8] = br#"[{"event":"delivered","sg_event_id":"e1"}]"#;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 32]).expect("a valid scalar")
    }

    #[test]
    fn a_reencoded_signature_is_still_a_replay() {
        // SubjectPublicKeyInfo for a P-256 key: the fixed DER header, then the SEC1 point.
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("hex");
        der.extend_from_slice(key().verifying_key().to_sec1_point(false).as_bytes());
        let public = STANDARD.encode(der);
        let src = compile("source:\n  id: sg\n  provider: sendgrid\n  secret: env:SG\n", &[("SG", &public)])
            .expect("compiles");
        let digest = Sha256::new().chain_update(TS).chain_update(BODY).finalize();
        let sig: Signature = key().sign_prehash(&digest).expect("signs");
        // The same signature with `s` negated verifies too (ECDSA malleability).
        let (r, s) = sig.split_scalars();
        let flipped = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("valid scalars");
        assert_ne!(sig, flipped);
        let now = 1_700_000_010;
        let sent = |sig: &Signature| {
            let b64 = STANDARD.encode(sig.to_der().as_bytes());
            request(
                &[
                    ("x-twilio-email-event-webhook-signature", b64.as_str()),
                    ("x-twilio-email-event-webhook-timestamp", TS),
                ],
                BODY,
                now,
            )
        };
        let (first, second) = (sent(&sig), sent(&flipped));
        assert!(src.verifier.verify(&first).is_ok());
        assert!(src.verifier.verify(&second).is_ok());
        let key = key_of(&src, &first).expect("SendGrid requests get a replay key");
        assert_eq!(Some(key), key_of(&src, &second));
        // And the default tolerance refuses a stale capture.
        let stale = request(
            &[
                ("x-twilio-email-event-webhook-signature", &STANDARD.encode(sig.to_der().as_bytes())),
                ("x-twilio-email-event-webhook-timestamp", TS),
            ],
            BODY,
            1_700_000_000 + 301,
        );
        assert_eq!(src.verifier.verify(&stale).unwrap_err(), VerifyError::Expired { tolerance_secs: 300 });
    }
}

// HubSpot's SDK vector for v1: client secret, body and signature.
const HS_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const HS_V1_BODY: &[u8] = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
const HS_V1_SIG: &str = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";

#[test]
fn hubspot_refuses_a_v1_request_unless_the_source_allows_it() {
    let v1 =
        request(&[("x-hubspot-signature", HS_V1_SIG), ("x-hubspot-signature-version", "v1")], HS_V1_BODY, 0);
    let env = [("HS", HS_SECRET)];
    let base =
        "source:\n  id: h\n  provider: hubspot\n  secret: env:HS\n  public_url: https://h.test/hooks/h\n";
    let strict = compile(base, &env).expect("ok");
    assert_eq!(
        strict.verifier.verify(&v1).unwrap_err(),
        VerifyError::Missing("X-HubSpot-Signature-v3".into())
    );
    let legacy = format!("{base}  allow_legacy_signatures: true\n");
    assert!(compile(&legacy, &env).expect("ok").verifier.verify(&v1).is_ok());
    let off = format!("{base}  allow_legacy_signatures: false\n");
    assert!(compile(&off, &env).expect("ok").verifier.verify(&v1).is_err());
    let stripe = "source:\n  id: s\n  provider: stripe\n  secret: env:HS\n  allow_legacy_signatures: true\n";
    assert!(errors(stripe, &env)[0].starts_with("m.yaml:5:28: provider `stripe` has no older signature"));
}

#[test]
fn url_signing_schemes_need_public_url() {
    let e = errors("source:\n  id: sms\n  provider: twilio\n  secret: env:T\n", &[("T", "token")]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("m.yaml:3:13: this scheme signs the URL the sender called: set `public_url`"),
        "{}",
        e[0]
    );
    let tpl = "source:\n  id: t\n  verify:\n    template_hmac: {algorithm: sha256, header: X-Sig, template: \"{url}{body}\", secret: env:T}\n";
    assert!(errors(tpl, &[("T", "token")])[0].contains("set `public_url`"));
    let ok = "source:\n  id: sms\n  provider: twilio\n  secret: env:T\n  public_url: https://hooks.example.com/hooks/sms\n";
    let src = compile(ok, &[("T", "token")]).expect("compiles");
    let mut req = request(
        &[("host", "evil.example"), ("x-forwarded-host", "other.example"), ("x-forwarded-proto", "http")],
        b"",
        0,
    );
    req.query = Some("a=1".into());
    assert_eq!(src.public_url_of(&req).as_deref(), Some("https://hooks.example.com/hooks/sms?a=1"));
    // Query-token schemes only need the path and query, never a host from the request.
    let token =
        compile("source:\n  id: m\n  provider: mailchimp\n  secret: env:T\n", &[("T", "token")]).expect("ok");
    assert_eq!(token.public_url_of(&req).as_deref(), Some("/hooks/s?a=1"));
}

#[test]
fn regex_patterns_and_json_paths_from_the_request_are_compile_errors() {
    let head = "source:\n  id: s\n  provider: github\n  secret: env:GH\nroutes:\n  - id: r\n    to: {url: \"https://x.test\"}\n";
    let diags = |field: &str| match compile_file(
        "m.yaml",
        &format!("{head}    map:\n      a: '{field}'\n"),
        &secrets(&[("GH", "k")]),
    ) {
        Ok(_) => panic!("`{field}` compiled"),
        Err(d) => d.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(
        diags(r#"{{regex_replace body.a body.pattern "x"}}"#),
        vec!["m.yaml:9:10: regex_replace: the pattern must be a literal string"]
    );
    assert_eq!(diags("{{jp body.path}}"), vec!["m.yaml:9:10: jp: the path must be a literal string"]);
}
