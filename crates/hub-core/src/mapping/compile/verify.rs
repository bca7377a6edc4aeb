//! How a source's requests are verified: the provider preset or `verify:` block, secret
//! references, signature tolerance, URL-signing and source networks.

use super::super::diag::{Diagnostic, FileCtx};
use super::super::node::Loc;
use super::super::spec;
use super::duration;
use crate::secret::{Secret, SecretRef, SecretSource};
use crate::verify::{Scheme, Verifier, presets, token};
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::Duration;

/// What the verification part of a source compiles to.
pub(super) struct Verification {
    pub preset: Option<&'static presets::Preset>,
    pub verifier: Verifier,
    /// The signature tolerance of a provider preset: the replay guard's window.
    pub replay: Option<Duration>,
}

/// The provider preset, tolerance, secrets and verifier of a source.
pub(super) fn source(
    src: &spec::SourceSpec,
    id_loc: Loc,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
    diags: &mut Vec<Diagnostic>,
) -> Verification {
    let preset = src.provider.as_ref().and_then(|p| {
        let found = presets::preset(&p.value);
        if found.is_none() {
            diags.push(fx.at(
                Loc::of(p),
                format!("unknown provider `{}` (known: {})", p.value, presets::names().join(", ")),
            ));
        }
        found
    });
    // `tolerance: none` turns freshness off; absent, the provider's documented default applies.
    let tolerance = match &src.tolerance {
        None => preset.and_then(|p| p.tolerance),
        Some(t) => tolerance_of(t, fx).unwrap_or_else(|d| {
            diags.push(d);
            None
        }),
    };
    let (source_secrets, secrets_ok) =
        match secret_list(SECRET_KEYS, src.secret.as_ref(), src.secrets.as_deref(), fx, secrets) {
            Ok(s) => (s, true),
            Err(d) => {
                diags.push(d);
                (Vec::new(), false)
            }
        };
    let verifier = match (&src.verify, preset) {
        (Some(v), _) if matches!(v.value, spec::VerifySpec::None) => {
            if src.description.as_deref().is_none_or(|d| d.trim().is_empty()) {
                diags.push(fx.at(
                    Loc::of(v),
                    "`verify: none` accepts requests from anyone: give the source a `description` \
                     saying why it is open",
                ));
            }
            if let Some(s) = src.secret.as_ref().or_else(|| src.secrets.as_ref().and_then(|v| v.first())) {
                diags.push(fx.at(Loc::of(s), "`secret` has no use with `verify: none`"));
            }
            Verifier::None
        }
        (Some(v), _) => compile_verify(v, fx, secrets).unwrap_or_else(|d| {
            diags.push(d);
            Verifier::None
        }),
        // The secret's own diagnostic says what is wrong; building without it would only add noise.
        (None, Some(_)) if !secrets_ok => Verifier::None,
        (None, Some(p)) => {
            let at = src.provider.as_ref().map(Loc::of).unwrap_or(id_loc);
            if source_secrets.is_empty() && src.secret.is_none() && src.secrets.is_none() {
                diags.push(
                    fx.at(at, format!("provider `{}` needs `secret: env:NAME` (or `secrets:`)", p.name)),
                );
                Verifier::None
            } else {
                let legacy = src.allow_legacy_signatures.as_ref().is_some_and(|a| a.value);
                if let Some(a) = &src.allow_legacy_signatures
                    && !p.has_legacy_signatures()
                {
                    diags.push(fx.at(
                        Loc::of(a),
                        format!("provider `{}` has no older signature versions to allow", p.name),
                    ));
                }
                let built = if legacy {
                    p.legacy_verifier(source_secrets, tolerance)
                } else {
                    p.verifier(source_secrets, tolerance)
                };
                built.unwrap_or_else(|e| {
                    diags.push(fx.at(at, format!("provider `{}`: {e}", p.name)));
                    Verifier::None
                })
            }
        }
        (None, None) => {
            if let Some(s) = src.secret.as_ref().or_else(|| src.secrets.as_ref().and_then(|v| v.first())) {
                diags.push(fx.at(Loc::of(s), "`secret` needs a `provider` (or put it under `verify`)"));
            } else {
                // An open endpoint must be a decision written in the file, never a forgotten block.
                diags.push(fx.at(
                    id_loc,
                    "source has no verification: set `provider`, or `verify:` (write `verify: none` \
                     with a `description` to accept requests from anyone)",
                ));
            }
            Verifier::None
        }
    };
    if let Some(a) = &src.allow_legacy_signatures
        && (src.verify.is_some() || preset.is_none())
    {
        diags.push(fx.at(Loc::of(a), "`allow_legacy_signatures` applies to a `provider` preset only"));
    }
    // Only a verified, timestamped request gets the guard: the tolerance bounds how long a
    // captured one could be replayed, so remembering its body that long refuses every replay.
    let replay = preset.and(tolerance);
    Verification { preset, verifier, replay }
}

/// A scheme that signs the URL must know it from the file: nothing in the request can say it
/// truthfully.
pub(super) fn check_signs_url(
    src: &spec::SourceSpec,
    preset: Option<&presets::Preset>,
    id_loc: Loc,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) {
    let signs_url = match &src.verify {
        Some(v) => {
            matches!(&v.value, spec::VerifySpec::TemplateHmac(t) if t.template.value.contains("{url}"))
        }
        None => preset.is_some_and(|p| p.signs_url),
    };
    if signs_url && src.public_url.is_none() {
        let at = src.provider.as_ref().map(Loc::of).or(src.verify.as_ref().map(Loc::of)).unwrap_or(id_loc);
        diags.push(fx.at(
            at,
            "this scheme signs the URL the sender called: set `public_url` to this endpoint's URL as \
             the sender calls it (e.g. https://hooks.example.com/hooks/<id>)",
        ));
    }
}

/// The source networks allowed to post (`ip_allow`).
pub(super) fn ip_allow(
    src: &spec::SourceSpec,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<Verifier> {
    src.ip_allow.as_ref().and_then(|l| {
        token::IpAllowList::new(l.value.iter())
            .map(|list| Verifier::Scheme(Arc::new(list)))
            .map_err(|e| diags.push(fx.at(Loc::of(l), e.to_string())))
            .ok()
    })
}

pub(super) fn secret(
    s: &Spanned<String>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Secret, Diagnostic> {
    secret_at("this value", s, fx, secrets)
}

/// Resolves the secret reference written at `key`. A value that resolves to nothing but
/// whitespace fails like an unset one: an empty key lets anyone sign.
fn secret_at(
    key: &str,
    s: &Spanned<String>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Secret, Diagnostic> {
    let r = SecretRef::parse(&s.value).map_err(|e| fx.at(Loc::of(s), format!("{key}: {e}")))?;
    let value = secrets.resolve(&r).ok_or_else(|| fx.at(Loc::of(s), format!("secret `{r}` is not set")))?;
    if !crate::secret::is_usable(value.expose()) {
        return Err(
            fx.at(Loc::of(s), format!("secret `{r}` is empty (an empty secret would let anyone sign)"))
        );
    }
    Ok(value)
}

const SECRET_KEYS: [&str; 2] = ["`secret`", "`secrets`"];

/// Resolves `secret` / `secrets` (or the keys named in `keys`) into values; empty when neither
/// is given.
fn secret_list(
    [one_key, many_key]: [&str; 2],
    one: Option<&Spanned<String>>,
    many: Option<&[Spanned<String>]>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Vec<Secret>, Diagnostic> {
    match (one, many) {
        (Some(s), None) => Ok(vec![secret_at(one_key, s, fx, secrets)?]),
        (None, Some(list)) => list.iter().map(|s| secret_at(many_key, s, fx, secrets)).collect(),
        (None, None) => Ok(Vec::new()),
        (Some(s), Some(_)) => Err(fx.at(Loc::of(s), format!("give {one_key} or {many_key}, not both"))),
    }
}

/// `none` → no freshness check; otherwise a duration.
fn tolerance_of(t: &Spanned<String>, fx: &FileCtx) -> Result<Option<Duration>, Diagnostic> {
    if t.value.trim().eq_ignore_ascii_case("none") { Ok(None) } else { duration(t, fx).map(Some) }
}

/// Builds a scheme; a key that cannot be built because it is a placeholder (secret not set on
/// this machine) gives a verifier that refuses everything, so the file still validates.
fn build_scheme<S: Scheme + 'static>(
    keys: &[Secret],
    built: Result<S, crate::verify::ConfigError>,
    loc: Loc,
    fx: &FileCtx,
) -> Result<Verifier, Diagnostic> {
    match built {
        Ok(s) => Ok(Verifier::Scheme(Arc::new(s))),
        Err(e) if keys.iter().any(Secret::is_placeholder) => {
            Ok(Verifier::Unavailable(format!("secret not set ({e})")))
        }
        Err(e) => Err(fx.at(loc, e.to_string())),
    }
}

fn compile_verify(
    v: &Spanned<spec::VerifySpec>,
    fx: &FileCtx,
    secrets: &dyn SecretSource,
) -> Result<Verifier, Diagnostic> {
    use crate::verify::{ed25519, template_hmac};
    let loc = Loc::of(v);
    let need = |list: Vec<Secret>, what: &str| -> Result<Vec<Secret>, Diagnostic> {
        if list.is_empty() {
            Err(fx.at(
                loc,
                format!("{what} needs a secret reference: `secret: env:NAME` (or `secrets:` for a rotation)"),
            ))
        } else {
            Ok(list)
        }
    };
    match &v.value {
        spec::VerifySpec::None => Ok(Verifier::None),
        spec::VerifySpec::Hmac(h) => {
            let secrets = need(
                secret_list(SECRET_KEYS, h.secret.as_ref(), h.secrets.as_deref(), fx, secrets)?,
                "hmac verification",
            )?;
            if http::HeaderName::try_from(h.header.value.as_str()).is_err() {
                return Err(
                    fx.at(Loc::of(&h.header), format!("`{}` is not a valid header name", h.header.value))
                );
            }
            Ok(Verifier::Hmac {
                algorithm: h.algorithm,
                encoding: h.encoding,
                header: h.header.value.to_ascii_lowercase(),
                prefix: h.prefix.clone().unwrap_or_default(),
                secrets,
            })
        }
        spec::VerifySpec::TemplateHmac(t) => {
            let keys = need(
                secret_list(SECRET_KEYS, t.secret.as_ref(), t.secrets.as_deref(), fx, secrets)?,
                "template_hmac",
            )?;
            let tolerance = match &t.tolerance {
                Some(x) => tolerance_of(x, fx)?,
                None if t.timestamp_header.is_some() => Some(Duration::from_secs(300)),
                None => None,
            };
            let config = template_hmac::TemplateHmacConfig {
                algorithm: t.algorithm,
                encoding: t.encoding,
                signature_header: t.header.clone(),
                prefix: t.prefix.clone(),
                timestamp_header: t.timestamp_header.clone(),
                template: t.template.value.clone(),
                separator: t.separator.clone(),
            };
            let built = template_hmac::TemplateHmac::new(config, keys.clone(), tolerance);
            build_scheme(&keys, built, Loc::of(&t.template), fx)
        }
        spec::VerifySpec::Ed25519(e) => {
            let keys = need(
                secret_list(
                    ["`public_key`", "`public_keys`"],
                    e.public_key.as_ref(),
                    e.public_keys.as_deref(),
                    fx,
                    secrets,
                )?,
                "ed25519",
            )?;
            let tolerance = match &e.tolerance {
                Some(x) => tolerance_of(x, fx)?,
                None if e.timestamp_header.is_some() => Some(Duration::from_secs(300)),
                None => None,
            };
            let config = ed25519::Ed25519Config {
                header: e.header.clone(),
                prefix: e.prefix.clone(),
                encoding: match e.encoding {
                    crate::verify::SigEncoding::Hex => ed25519::Ed25519Encoding::Hex,
                    crate::verify::SigEncoding::Base64 => ed25519::Ed25519Encoding::Base64,
                },
                timestamp_header: e.timestamp_header.clone(),
                tolerance,
            };
            build_scheme(&keys, ed25519::Ed25519::new(keys.clone(), config), loc, fx)
        }
        spec::VerifySpec::BasicAuth { username, password } => {
            let keys = vec![secret_at("`password`", password, fx, secrets)?];
            build_scheme(&keys, token::BasicAuth::new(username.clone(), keys.clone()), loc, fx)
        }
        spec::VerifySpec::ApiKey { header, secret: s } => {
            let keys = vec![secret_at("`secret`", s, fx, secrets)?];
            build_scheme(&keys, token::ApiKeyHeader::new(header.clone(), keys.clone()), loc, fx)
        }
        spec::VerifySpec::Token(t) => {
            let keys = need(
                secret_list(SECRET_KEYS, t.secret.as_ref(), t.secrets.as_deref(), fx, secrets)?,
                "token",
            )?;
            let location = match (&t.query, &t.header, &t.body_field) {
                (Some(q), None, None) => token::TokenLocation::Query(q.clone()),
                (None, Some(h), None) => token::TokenLocation::Header(h.clone()),
                (None, None, Some(b)) => token::TokenLocation::BodyField(b.clone()),
                _ => return Err(fx.at(loc, "token takes exactly one of `query`, `header` or `body_field`")),
            };
            build_scheme(&keys, token::SharedToken::new(location, keys.clone()), loc, fx)
        }
    }
}
