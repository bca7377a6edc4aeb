//! Checks for senders that cannot sign: a shared token (query, header or body field), HTTP Basic
//! auth, an API-key header, and a source-IP allow-list. None of them binds the body: they only
//! say the request came from someone who knows the secret (or sits in the allowed networks).
//!
//! Docs: Mailchimp (secret in the webhook URL query)
//! <https://mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/>; Bitrix24
//! (`auth[application_token]` form field, local-integrations/local-webhooks.md)
//! <https://github.com/bitrix24/b24restdocs>; HTTP Basic <https://www.rfc-editor.org/rfc/rfc7617>.

use super::{ConfigError, Scheme, VerifyError, VerifyInput};
use crate::secret::Secret;
use base64::Engine as _;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Where the shared token is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    /// A query parameter of the URL the sender called (`?token=…`, Mailchimp's advice).
    Query(String),
    /// A header whose whole value is the token.
    Header(String),
    /// A body field: a dotted path into a JSON body (`auth.application_token`, array indexes as
    /// numbers), matched against bracket-nested form keys too (`auth[application_token]`, as
    /// Bitrix24 posts). The path may also be written in bracket form.
    BodyField(String),
}

impl TokenLocation {
    fn label(&self) -> &str {
        match self {
            TokenLocation::Query(n) | TokenLocation::Header(n) | TokenLocation::BodyField(n) => n,
        }
    }
}

/// A secret token that must equal the value found at `location` (any of the secrets, for
/// rotation). Compared in constant time over SHA-256 digests, so the token length is not leaked
/// either.
#[derive(Clone, Debug)]
pub struct SharedToken {
    location: TokenLocation,
    /// Path segments of a `BodyField`, split once here.
    segments: Vec<String>,
    secrets: Vec<Secret>,
}

impl SharedToken {
    pub fn new(location: TokenLocation, secrets: Vec<Secret>) -> Result<Self, ConfigError> {
        super::check_keys("shared token", "token", &secrets)?;
        let segments = match &location {
            TokenLocation::BodyField(p) => {
                let segs = path_segments(p).ok_or_else(|| ConfigError::BadName {
                    scheme: "shared token",
                    text: format!("invalid body field path `{p}`").into(),
                })?;
                segs.into_iter().map(str::to_string).collect()
            }
            TokenLocation::Query(n) | TokenLocation::Header(n) if n.is_empty() => {
                return Err(ConfigError::BadName {
                    scheme: "shared token",
                    text: "empty parameter / header name".into(),
                });
            }
            _ => Vec::new(),
        };
        Ok(Self { location, segments, secrets })
    }
}

impl Scheme for SharedToken {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let label = self.location.label();
        let found = match &self.location {
            TokenLocation::Query(name) => {
                let url = input.url.ok_or(VerifyError::NoUrl)?;
                let query = url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or_default());
                unique(
                    form_urlencoded::parse(query.as_bytes())
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned()),
                )
            }
            TokenLocation::Header(name) => Ok(input.headers.get(name).map(|v| v.trim().to_string())),
            TokenLocation::BodyField(_) => body_field(input, &self.segments),
        };
        let token = found
            .map_err(|()| VerifyError::Malformed(label.to_string()))?
            .ok_or_else(|| VerifyError::Missing(label.to_string()))?;
        if matches_any(token.as_bytes(), &self.secrets) {
            Ok(())
        } else {
            Err(VerifyError::NotAllowed(format!("the token in `{label}` does not match")))
        }
    }
}

/// HTTP Basic auth (`Authorization: Basic base64(user:password)`), as Postmark and Pipedrive
/// send when the webhook is configured with credentials.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    username: String,
    passwords: Vec<Secret>,
}

impl BasicAuth {
    /// `passwords`: accepted passwords (several during a rotation) for `username`.
    pub fn new(username: impl Into<String>, passwords: Vec<Secret>) -> Result<Self, ConfigError> {
        let username = username.into();
        if username.contains(':') {
            return Err(ConfigError::BadName {
                scheme: "basic auth",
                text: "the user name cannot contain ':'".into(),
            });
        }
        super::check_keys("basic auth", "password", &passwords)?;
        Ok(Self { username, passwords })
    }
}

impl Scheme for BasicAuth {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        const H: &str = "Authorization";
        let value = input.headers.get(H).ok_or_else(|| VerifyError::Missing(H.into()))?.trim();
        let malformed = || VerifyError::Malformed(H.into());
        let (scheme, creds) = value.split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed());
        }
        let creds = creds.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(creds)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(creds.trim_end_matches('=')))
            .map_err(|_| malformed())?;
        let colon = decoded.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both parts are always compared, so timing says nothing about which one was wrong.
        let user_ok = digest(user).ct_eq(&digest(self.username.as_bytes()));
        let pass_ok = Choice::from(u8::from(matches_any(password, &self.passwords)));
        if bool::from(user_ok & pass_ok) {
            Ok(())
        } else {
            Err(VerifyError::NotAllowed("basic auth credentials do not match".into()))
        }
    }
}

/// A static API key in a header (`X-Api-Key: …`, or `Authorization: Bearer …` with a prefix).
#[derive(Clone, Debug)]
pub struct ApiKeyHeader {
    header: String,
    prefix: String,
    secrets: Vec<Secret>,
}

impl ApiKeyHeader {
    pub fn new(header: impl Into<String>, secrets: Vec<Secret>) -> Result<Self, ConfigError> {
        let header = header.into();
        if header.is_empty() {
            return Err(ConfigError::BadName { scheme: "api key", text: "empty header name".into() });
        }
        if secrets.is_empty() || secrets.iter().any(|s| s.expose().trim().is_empty()) {
            return Err(ConfigError::NoKey {
                scheme: "api key",
                text: "no (or an empty) key configured".into(),
            });
        }
        Ok(Self { header, prefix: String::new(), secrets })
    }

    /// A prefix before the key, matched case-insensitively (e.g. `"Bearer "`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

impl Scheme for ApiKeyHeader {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let value =
            input.headers.get(&self.header).ok_or_else(|| VerifyError::Missing(self.header.clone()))?;
        let value = value.trim();
        let key = value
            .get(..self.prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(&self.prefix))
            .and_then(|_| value.get(self.prefix.len()..))
            .ok_or_else(|| VerifyError::Malformed(self.header.clone()))?;
        if matches_any(key.trim().as_bytes(), &self.secrets) {
            Ok(())
        } else {
            Err(VerifyError::NotAllowed(format!("the key in `{}` does not match", self.header)))
        }
    }
}

/// Accepts requests whose source address is in one of the networks. Only as trustworthy as
/// `remote_ip`: behind a proxy it must be the client address the proxy reports, not the proxy's.
#[derive(Clone, Debug)]
pub struct IpAllowList {
    nets: Vec<IpNet>,
}

impl IpAllowList {
    /// `cidrs`: networks (`192.0.2.0/24`, `2001:db8::/32`) or single addresses.
    pub fn new<I, S>(cidrs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = cidrs
            .into_iter()
            .map(|c| {
                let c = c.as_ref().trim();
                crate::net::parse_network(c).ok_or_else(|| ConfigError::BadNetwork(c.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err(ConfigError::NoNetwork);
        }
        Ok(Self { nets })
    }
}

impl Scheme for IpAllowList {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let ip =
            input.remote_ip.ok_or_else(|| VerifyError::NotAllowed("the source address is unknown".into()))?;
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; match them as IPv4 too.
        let canonical = ip.to_canonical();
        if self.nets.iter().any(|n| n.contains(&ip) || n.contains(&canonical)) {
            Ok(())
        } else {
            Err(VerifyError::NotAllowed(format!("source address {canonical} is not in the allow-list")))
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Constant-time: the provided value is compared (as a digest) with every secret.
fn matches_any(provided: &[u8], secrets: &[Secret]) -> bool {
    let p = digest(provided);
    let hit = secrets.iter().fold(Choice::from(0), |acc, s| acc | p.ct_eq(&digest(s.expose().as_bytes())));
    bool::from(hit)
}

/// The single value of an iterator; `Err` when it yields more than one (ambiguous).
fn unique<T>(mut it: impl Iterator<Item = T>) -> Result<Option<T>, ()> {
    let first = it.next();
    if first.is_some() && it.next().is_some() { Err(()) } else { Ok(first) }
}

/// `a.b.0` or `a[b][0]` → `["a", "b", "0"]`; `None` when empty or badly bracketed.
fn path_segments(path: &str) -> Option<Vec<&str>> {
    let segs = if path.contains('[') { bracket_segments(path)? } else { path.split('.').collect() };
    (!segs.is_empty() && segs.iter().all(|s| !s.is_empty())).then_some(segs)
}

/// `a[b][c]` → `["a", "b", "c"]`; `None` when the brackets do not close cleanly.
fn bracket_segments(key: &str) -> Option<Vec<&str>> {
    let open = key.find('[').unwrap_or(key.len());
    let mut segs = vec![&key[..open]];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let close = stripped.find(']')?;
        segs.push(&stripped[..close]);
        rest = &stripped[close + 1..];
    }
    rest.is_empty().then_some(segs)
}

/// The body field at `segs`, from a JSON or a form body; `Err` when unreadable or ambiguous.
fn body_field(input: &VerifyInput<'_>, segs: &[String]) -> Result<Option<String>, ()> {
    let ct = input.headers.get("content-type").unwrap_or_default().to_ascii_lowercase();
    let is_json = if ct.contains("json") {
        true
    } else if ct.contains("x-www-form-urlencoded") {
        false
    } else {
        matches!(input.body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
    };
    if is_json {
        // serde_json bounds nesting (recursion limit); the body size is bounded upstream.
        let root: serde_json::Value = serde_json::from_slice(input.body).map_err(|_| ())?;
        let mut v = &root;
        for s in segs {
            let next = match v {
                serde_json::Value::Object(m) => m.get(s.as_str()),
                serde_json::Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            let Some(next) = next else { return Ok(None) };
            v = next;
        }
        return Ok(match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    }
    unique(
        form_urlencoded::parse(input.body)
            .filter(|(k, _)| {
                let dotted = k.split('.').eq(segs.iter().map(String::as_str));
                dotted
                    || bracket_segments(k)
                        .is_some_and(|ks| ks.iter().copied().eq(segs.iter().map(String::as_str)))
            })
            .map(|(_, v)| v.into_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    fn input<'a>(url: Option<&'a str>, headers: &'a Headers, body: &'a str) -> VerifyInput<'a> {
        VerifyInput {
            method: "POST",
            url,
            headers,
            body: body.as_bytes(),
            now: UnixMillis(0),
            remote_ip: None,
        }
    }

    fn secrets(s: &[&str]) -> Vec<Secret> {
        s.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn query_token_for_mailchimp() {
        let t =
            SharedToken::new(TokenLocation::Query("token".into()), secrets(&["old", "s3cret"])).expect("ok");
        let h = Headers::new();
        assert_eq!(t.verify(&input(Some("https://h/hook?a=1&token=s3cret#x"), &h, "")), Ok(()));
        assert!(matches!(
            t.verify(&input(Some("https://h/hook?token=nope"), &h, "")),
            Err(VerifyError::NotAllowed(_))
        ));
        assert_eq!(
            t.verify(&input(Some("https://h/hook"), &h, "")),
            Err(VerifyError::Missing("token".into()))
        );
        assert_eq!(
            t.verify(&input(Some("/hook?token=s3cret&token=x"), &h, "")),
            Err(VerifyError::Malformed("token".into()))
        );
        assert_eq!(t.verify(&input(None, &h, "")), Err(VerifyError::NoUrl));
    }

    #[test]
    fn body_field_for_bitrix24_form_and_json() {
        let t =
            SharedToken::new(TokenLocation::BodyField("auth.application_token".into()), secrets(&["abc"]))
                .expect("ok");
        let form: Headers = [("Content-Type", "application/x-www-form-urlencoded")].into_iter().collect();
        let body = "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=1&auth%5Bapplication_token%5D=abc";
        assert_eq!(t.verify(&input(None, &form, body)), Ok(()));
        assert!(matches!(
            t.verify(&input(None, &form, "auth[application_token]=abd")),
            Err(VerifyError::NotAllowed(_))
        ));
        let json = Headers::new();
        assert_eq!(t.verify(&input(None, &json, r#"{"auth":{"application_token":"abc"}}"#)), Ok(()));
        assert!(matches!(t.verify(&input(None, &json, r#"{"auth":[]}"#)), Err(VerifyError::Missing(_))));
        assert!(matches!(t.verify(&input(None, &json, "{[[[")), Err(VerifyError::Malformed(_))));
        assert!(SharedToken::new(TokenLocation::BodyField("a..b".into()), secrets(&["x"])).is_err());
    }

    #[test]
    fn basic_auth_and_api_key() {
        let b = BasicAuth::new("hub", secrets(&["pw"])).expect("ok");
        let ok: Headers = [("Authorization", "Basic aHViOnB3")].into_iter().collect(); // hub:pw
        let bad: Headers = [("Authorization", "Basic aHViOnB4")].into_iter().collect(); // hub:px
        let junk: Headers = [("Authorization", "Bearer x")].into_iter().collect();
        assert_eq!(b.verify(&input(None, &ok, "")), Ok(()));
        assert!(matches!(b.verify(&input(None, &bad, "")), Err(VerifyError::NotAllowed(_))));
        assert!(matches!(b.verify(&input(None, &junk, "")), Err(VerifyError::Malformed(_))));
        assert!(matches!(b.verify(&input(None, &Headers::new(), "")), Err(VerifyError::Missing(_))));

        let k = ApiKeyHeader::new("Authorization", secrets(&["k1"])).expect("ok").with_prefix("Bearer ");
        let h: Headers = [("authorization", "bearer k1")].into_iter().collect();
        assert_eq!(k.verify(&input(None, &h, "")), Ok(()));
        assert!(matches!(k.verify(&input(None, &junk, "")), Err(VerifyError::NotAllowed(_))));
    }

    #[test]
    fn ip_allow_list() {
        let l = IpAllowList::new(["192.0.2.0/24", "2001:db8::1"]).expect("ok");
        let h = Headers::new();
        let at = |ip: Option<&str>| {
            let mut i = input(None, &h, "");
            i.remote_ip = ip.map(|s| s.parse().expect("ip"));
            l.verify(&i)
        };
        assert_eq!(at(Some("192.0.2.7")), Ok(()));
        assert_eq!(at(Some("::ffff:192.0.2.7")), Ok(()));
        assert_eq!(at(Some("2001:db8::1")), Ok(()));
        assert!(matches!(at(Some("198.51.100.1")), Err(VerifyError::NotAllowed(_))));
        assert!(matches!(at(None), Err(VerifyError::NotAllowed(_))));
        assert!(IpAllowList::new(["nope"]).is_err());
        assert!(IpAllowList::new(Vec::<String>::new()).is_err());
    }
}
