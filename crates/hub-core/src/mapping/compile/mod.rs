//! The mapping compiler: one file's text in, a [`CompiledSource`] or every diagnostic out.
//!
//! Each section of the file compiles in its own module (`source`: id, lookups, dedup, event
//! type, size cap, redaction; `verify`: verification, secrets, tolerance, source networks;
//! `route`: `for_each`, `when`, `map`/`body`, `to`; `retry`; `retention`); this module reads the
//! YAML and runs them in the order the diagnostics have always come out.

mod retention;
mod retry;
pub(crate) mod route;
pub(crate) mod source;
mod verify;

#[cfg(test)]
mod diagnostics_tests;

use super::diag::{Diagnostic, FileCtx};
use super::node::Loc;
use super::template::Templates;
use super::{CompiledSource, from_yaml, spec};
use crate::ids::SourceId;
use crate::secret::SecretSource;
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::Duration;

/// Compiles one file; returns the source and where its id was written.
pub fn compile_file(
    name: &str,
    text: &str,
    secrets: &dyn SecretSource,
) -> Result<(CompiledSource, Loc), Vec<Diagnostic>> {
    let fx = FileCtx::new(name);
    let spec: spec::FileSpec = from_yaml(text).map_err(|e| vec![fx.from_yaml(&e)])?;
    let mut diags = Vec::new();
    let lookups = source::lookups(&spec.lookups, &fx, &mut diags);
    let mut templates = Templates::new(Arc::new(lookups));
    let src = &spec.source.value;
    let id_loc = source::id(src, &fx, &mut diags);
    let verification = verify::source(src, id_loc, &fx, secrets, &mut diags);
    let preset = verification.preset;
    let (dedup, dedup_window) = source::dedup(src, preset, &fx, &mut diags);
    let event_type = source::event_type(src, preset, &fx, &mut diags);
    let public_url = source::public_url(src, &fx, &mut diags);
    verify::check_signs_url(src, preset, id_loc, &fx, &mut diags);
    let ip_allow = verify::ip_allow(src, &fx, &mut diags);
    let format = src.format.or(preset.map(|p| p.format)).unwrap_or_default();
    let body_limits = src.body_limits.unwrap_or_default();
    let max_body_bytes = source::max_body_bytes(src, &fx, &mut diags);
    let redact = source::redaction(src, preset, format, &fx, &mut diags);
    let routes = route::source_routes(&spec, &fx, &mut templates, secrets, &mut diags);
    let facts = crate::triggers::compile::compile_facts(&src.facts, &fx, &mut templates, &mut diags);
    let retention = retention::compile_retention(
        src,
        &spec.routes,
        &routes,
        dedup.is_some().then_some(dedup_window),
        &fx,
        &mut diags,
    );
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok((
        CompiledSource {
            id: SourceId::new(src.id.value.clone()),
            file: name.to_string(),
            format,
            verifier: verification.verifier,
            dedup,
            dedup_window,
            retention,
            event_type,
            replay: verification.replay,
            public_url,
            ip_allow,
            body_limits,
            challenge_type: preset.and_then(|p| p.challenge_type()),
            max_body_bytes,
            redact,
            routes,
            facts,
            templates,
            fx,
        },
        id_loc,
    ))
}

/// A duration as authors write them (`30s`, `5m`, `24h`, `7d`).
pub(crate) fn duration(s: &Spanned<String>, fx: &FileCtx) -> Result<Duration, Diagnostic> {
    humantime::parse_duration(s.value.trim())
        .map_err(|e| fx.at(Loc::of(s), format!("`{}` is not a duration like 30s, 5m, 24h, 7d: {e}", s.value)))
}
