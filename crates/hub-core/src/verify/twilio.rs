//! Twilio `X-Twilio-Signature`: base64 HMAC-SHA1 of the called URL plus the sorted POST params.
//! <https://www.twilio.com/docs/usage/security#validating-requests>
//!
//! Form bodies: signed = URL + for each param sorted by name (then value): name + value.
//! JSON bodies: the URL carries `bodySHA256=<hex sha256(body)>`, which must match the body, and
//! the signature covers the URL alone. The signature has no timestamp, so there is no freshness.

use super::{ConfigError, Scheme, VerifyError, VerifyInput, decode_base64};
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::Duration;
use subtle::ConstantTimeEq;

const HEADER: &str = "X-Twilio-Signature";

/// Verifies Twilio webhooks with the account auth token(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct Twilio {
    secrets: Vec<Secret>,
}

impl Twilio {
    /// `secrets`: auth tokens. Twilio signs no timestamp, so `_tolerance` is accepted for a
    /// uniform constructor and ignored.
    pub fn new(secrets: Vec<Secret>, _tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        super::check_keys("twilio", "auth token", &secrets)?;
        Ok(Self { secrets })
    }
}

impl Scheme for Twilio {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let header = input.headers.get(HEADER).ok_or_else(|| VerifyError::Missing(HEADER.into()))?;
        let provided = decode_base64(header.trim()).ok_or_else(|| VerifyError::Malformed(HEADER.into()))?;
        let url = input.url.ok_or(VerifyError::NoUrl)?;

        // Which content follows the URL: nothing for JSON bodies (the body is bound through the
        // `bodySHA256` query parameter), the sorted form params otherwise.
        let tails: Vec<Vec<u8>> = match body_sha256_param(url) {
            Some(expected_hex) => {
                let expected = hex::decode(expected_hex.as_bytes())
                    .map_err(|_| VerifyError::Malformed("bodySHA256".into()))?;
                let actual = Sha256::digest(input.body);
                if !bool::from(actual.as_slice().ct_eq(&expected)) {
                    return Err(VerifyError::Mismatch);
                }
                vec![Vec::new()]
            }
            None => param_tails(input.body),
        };

        // The SDKs accept the URL both without its port and with it (the default one added when
        // absent): Twilio's own signing is inconsistent about it.
        let urls = port_variants(url);
        let ok = self.secrets.iter().any(|s| {
            urls.iter().any(|u| {
                tails.iter().any(|tail| {
                    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(s.expose().as_bytes()) else {
                        return false;
                    };
                    mac.update(u.as_bytes());
                    mac.update(tail);
                    // Constant-time comparison.
                    mac.verify_slice(&provided).is_ok()
                })
            })
        });
        if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

/// The `bodySHA256` query parameter of `url`, if any.
fn body_sha256_param(url: &str) -> Option<String> {
    let (_, after) = url.split_once('?')?;
    let query = after.split('#').next().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.into_owned())
}

/// Concatenations of the form params, sorted by name then value: with exact duplicates removed
/// (twilio-python) and, when the body repeats a pair, also with them kept (twilio-node).
fn param_tails(body: &[u8]) -> Vec<Vec<u8>> {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(body).collect();
    pairs.sort_unstable();
    let concat = |pairs: &[(Cow<'_, str>, Cow<'_, str>)]| {
        let mut out = Vec::with_capacity(body.len());
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    };
    let all = concat(&pairs);
    let before = pairs.len();
    pairs.dedup();
    if pairs.len() == before { vec![all] } else { vec![concat(&pairs), all] }
}

/// `url` without its port and with an explicit port (443/80 added for https/http when absent);
/// just `url` when it cannot be split (no `scheme://`).
fn port_variants(url: &str) -> Vec<Cow<'_, str>> {
    let Some(parts) = split_port(url) else { return vec![Cow::Borrowed(url)] };
    let UrlParts { scheme, before_port, port, after_port } = parts;
    let without = format!("{before_port}{after_port}");
    let with = match port {
        Some(_) => Some(Cow::Borrowed(url)),
        None => default_port(scheme).map(|p| Cow::Owned(format!("{before_port}:{p}{after_port}"))),
    };
    let mut out = vec![Cow::Owned(without)];
    if let Some(w) = with
        && w != out[0]
    {
        out.push(w);
    }
    out
}

struct UrlParts<'a> {
    scheme: &'a str,
    /// Everything up to the end of the host (scheme, userinfo, host).
    before_port: &'a str,
    port: Option<&'a str>,
    /// Path, query, fragment.
    after_port: &'a str,
}

fn split_port(url: &str) -> Option<UrlParts<'_>> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    let auth_start = scheme_end + 3;
    let auth_len = url[auth_start..].find(['/', '?', '#']).unwrap_or(url.len() - auth_start);
    let auth_end = auth_start + auth_len;
    let authority = &url[auth_start..auth_end];
    // Userinfo may itself contain ':' (user:password@host), so the host starts after the last '@'.
    let host_start = auth_start + authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &url[host_start..auth_end];
    let host_len = if hostport.starts_with('[') {
        // IPv6 literal: the port colon comes after the closing bracket.
        hostport.find(']').map_or(hostport.len(), |i| i + 1)
    } else {
        hostport.rfind(':').unwrap_or(hostport.len())
    };
    let host_end = host_start + host_len;
    let port = url[host_end..auth_end].strip_prefix(':');
    if let Some(p) = port
        && !p.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(UrlParts {
        scheme,
        before_port: &url[..host_end],
        port: port.filter(|p| !p.is_empty()),
        after_port: &url[auth_end..],
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    const PARAMS: &str =
        "CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn run(sig: Option<&str>, url: Option<&str>, body: &str) -> Result<(), VerifyError> {
        let headers: Headers = sig.map(|s| (HEADER, s.to_string())).into_iter().collect();
        let input = VerifyInput {
            method: "POST",
            url,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis(0),
            remote_ip: None,
        };
        Twilio::new(vec![Secret::new("old"), Secret::new("12345")], None).expect("scheme").verify(&input)
    }

    #[test]
    fn form_params_verify_with_port_variants() {
        // twilio-python test_request_validator vectors.
        assert_eq!(run(Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), Some(URL), PARAMS), Ok(()));
        let with_port = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(run(Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), Some(with_port), PARAMS), Ok(()));
        assert_eq!(run(Some("kvajT1Ptam85bY51eRf/AJRuM3w="), Some(URL), PARAMS), Ok(()));
    }

    #[test]
    fn duplicate_params_and_wrong_signature() {
        let dup = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234";
        assert_eq!(run(Some("IK+Dwps556ElfBT0I3Rgjkr1wJU="), Some(URL), dup), Ok(()));
        assert_eq!(run(Some("IK+Dwps556ElfBT0I3Rgjkr1wJU="), Some(URL), PARAMS), Err(VerifyError::Mismatch));
        assert_eq!(run(None, Some(URL), PARAMS), Err(VerifyError::Missing(HEADER.into())));
        assert_eq!(run(Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), None, PARAMS), Err(VerifyError::NoUrl));
        assert!(matches!(run(Some("!!"), Some(URL), PARAMS), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn json_body_is_bound_by_body_sha256() {
        // twilio-python test_validation_of_body_succeeds.
        let body = r#"{"property": "value", "boolean": true}"#;
        let url =
            format!("{URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
        let sig = Some("a9nBmqA0ju/hNViExpshrM61xv4=");
        assert_eq!(run(sig, Some(&url), body), Ok(()));
        assert_eq!(run(sig, Some(&url), r#"{"property": "other"}"#), Err(VerifyError::Mismatch));
        let bad_hash = format!("{URL}&bodySHA256=zz");
        assert_eq!(run(sig, Some(&bad_hash), body), Err(VerifyError::Malformed("bodySHA256".into())));
    }

    #[test]
    fn port_variants_keep_userinfo_and_ipv6() {
        assert_eq!(
            port_variants("https://u:p@h:8443/x?a=b"),
            ["https://u:p@h/x?a=b", "https://u:p@h:8443/x?a=b"]
        );
        assert_eq!(port_variants("http://[::1]/x"), ["http://[::1]/x", "http://[::1]:80/x"]);
        assert_eq!(port_variants("not a url"), ["not a url"]);
        assert_eq!(port_variants("https://h:x/"), ["https://h:x/"]);
    }
}
