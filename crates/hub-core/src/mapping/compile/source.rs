//! The `source` section's own keys: id, lookup tables, dedup key and event type, public URL,
//! size cap and redaction.

use super::super::diag::{Diagnostic, FileCtx};
use super::super::helpers::LookupTable;
use super::super::node::{Loc, Node};
use super::super::selector::Selector;
use super::super::{DEFAULT_DEDUP_WINDOW, DEFAULT_MAX_BODY_BYTES, Locate, spec};
use super::duration;
use crate::body::BodyFormat;
use crate::ids::is_valid_id;
use crate::verify::presets;
use indexmap::IndexMap;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::time::Duration;

/// The file's `lookups:` tables, by name.
pub(crate) fn lookups(
    tables: &IndexMap<String, Node>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<String, LookupTable> {
    let mut lookups = HashMap::new();
    for (tname, node) in tables {
        match lookup_table(node, fx) {
            Ok(t) => {
                lookups.insert(tname.clone(), t);
            }
            Err(d) => diags.push(d),
        }
    }
    lookups
}

fn lookup_table(node: &Node, fx: &FileCtx) -> Result<LookupTable, Diagnostic> {
    let Some(entries) = node.as_map() else {
        return Err(fx.at(node.loc, "a lookup table is a mapping of key: value (and optional `_default`)"));
    };
    let mut t = LookupTable::default();
    for (k, v) in entries {
        if k == "_default" {
            t.default = Some(v.to_json());
        } else {
            t.entries.insert(k.clone(), v.to_json());
        }
    }
    Ok(t)
}

/// Checks the source id; returns where it was written.
pub(super) fn id(src: &spec::SourceSpec, fx: &FileCtx, diags: &mut Vec<Diagnostic>) -> Loc {
    let id_loc = Loc::of(&src.id);
    if !is_valid_id(&src.id.value) {
        diags.push(fx.at(id_loc, format!("source id `{}` must be 1-64 of [a-z0-9_-]", src.id.value)));
    }
    id_loc
}

fn locate(
    spec: &Spanned<spec::DedupSpec>,
    what: &str,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<Locate> {
    match (&spec.value.path, &spec.value.header) {
        (Some(p), None) => Selector::compile(&p.value)
            .map(Locate::Path)
            .map_err(|e| diags.push(fx.at(Loc::of(p), e.to_string())))
            .ok(),
        (None, Some(h)) => Some(Locate::Header(h.value.to_ascii_lowercase())),
        _ => {
            diags.push(fx.at(Loc::of(spec), format!("{what} takes exactly one of `path` or `header`")));
            None
        }
    }
}

fn from_preset(l: Option<presets::Locator>) -> Option<Locate> {
    match l? {
        presets::Locator::Path(p) => Selector::compile(p).ok().map(Locate::Path),
        presets::Locator::Header(h) => Some(Locate::Header(h.to_string())),
    }
}

/// The dedup key (the file's, else the provider's) and how long keys are remembered.
pub(super) fn dedup(
    src: &spec::SourceSpec,
    preset: Option<&presets::Preset>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> (Option<Locate>, Duration) {
    let mut dedup_window = DEFAULT_DEDUP_WINDOW;
    let dedup = match &src.dedup {
        Some(d) => {
            if let Some(w) = &d.value.window {
                match duration(w, fx) {
                    Ok(w) => dedup_window = w,
                    Err(e) => diags.push(e),
                }
            }
            locate(d, "dedup", fx, diags)
        }
        None => from_preset(preset.and_then(|p| p.dedup)),
    };
    (dedup, dedup_window)
}

/// Where the event type is (the file's, else the provider's).
pub(super) fn event_type(
    src: &spec::SourceSpec,
    preset: Option<&presets::Preset>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<Locate> {
    match &src.event_type {
        Some(e) => {
            if let Some(w) = &e.value.window {
                diags.push(fx.at(Loc::of(w), "`window` applies to `dedup` only"));
            }
            locate(e, "event_type", fx, diags)
        }
        None => from_preset(preset.and_then(|p| p.event_type)),
    }
}

pub(super) fn public_url(
    src: &spec::SourceSpec,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    src.public_url.as_ref().and_then(|u| {
        let v = u.value.trim().to_string();
        if v.starts_with("https://") || v.starts_with("http://") {
            Some(v)
        } else {
            diags.push(fx.at(Loc::of(u), "public_url must start with https:// or http://"));
            None
        }
    })
}

pub(super) fn max_body_bytes(src: &spec::SourceSpec, fx: &FileCtx, diags: &mut Vec<Diagnostic>) -> usize {
    match &src.max_body_bytes {
        Some(m) if m.value == 0 => {
            diags.push(fx.at(Loc::of(m), "max_body_bytes must be positive"));
            DEFAULT_MAX_BODY_BYTES
        }
        Some(m) => usize::try_from(m.value).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_BODY_BYTES,
    }
}

/// What is replaced by `[redacted]` before storage: the provider's credentials, the
/// verifier's own, and the file's `redact:` list.
pub(super) fn redaction(
    src: &spec::SourceSpec,
    preset: Option<&presets::Preset>,
    format: BodyFormat,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> crate::redact::Redaction {
    let mut redact = crate::redact::Redaction::default();
    for c in preset.map(|p| p.credentials()).unwrap_or_default() {
        match c {
            presets::Credential::Header(h) => redact.add_header(h),
            presets::Credential::Query(q) => redact.add_query(q),
            presets::Credential::Body(b) => {
                if let Ok(sel) = Selector::compile(b) {
                    redact.add_body(sel);
                }
            }
        }
    }
    if let Some(v) = &src.verify {
        match &v.value {
            spec::VerifySpec::BasicAuth { .. } => redact.add_header("authorization"),
            spec::VerifySpec::ApiKey { header, .. } => redact.add_header(header),
            spec::VerifySpec::Token(t) => {
                if let Some(q) = &t.query {
                    redact.add_query(q);
                }
                if let Some(h) = &t.header {
                    redact.add_header(h);
                }
                if let Some(b) = &t.body_field {
                    redact.add_body_field(b);
                }
            }
            _ => {}
        }
    }
    if let Some(r) = &src.redact {
        for h in &r.value.headers {
            if http::HeaderName::try_from(h.as_str()).is_err() {
                diags.push(fx.at(Loc::of(r), format!("`{h}` is not a valid header name")));
            }
            redact.add_header(h);
        }
        for q in &r.value.query {
            redact.add_query(q);
        }
        for b in &r.value.body {
            if !(b.value == "$.body" || b.value.starts_with("$.body.") || b.value.starts_with("$.body[")) {
                diags.push(
                    fx.at(Loc::of(b), format!("`{}`: redact.body selectors start with `$.body`", b.value)),
                );
                continue;
            }
            match Selector::compile(&b.value) {
                Ok(sel) => redact.add_body(sel),
                Err(e) => diags.push(fx.at(Loc::of(b), e.to_string())),
            }
        }
        if !r.value.body.is_empty()
            && matches!(format, BodyFormat::Xml | BodyFormat::Multipart | BodyFormat::Text)
        {
            diags.push(fx.at(
                Loc::of(r),
                "redact.body rewrites JSON and form bodies; this source's format cannot keep a redacted body \
                 readable (use `format: auto` to store such bodies as their JSON document)",
            ));
        }
    }
    redact
}
