//! A source's retention, checked against its routes' `max_age` and its dedup window.

use super::super::diag::{Diagnostic, FileCtx};
use super::super::node::Loc;
use super::super::{CompiledRoute, DEFAULT_RETENTION, RETENTION_MARGIN, spec};
use super::duration;
use serde_saphyr::Spanned;
use std::time::Duration;

/// The source's retention: never shorter than its longest route `max_age` plus the margin (an
/// event still being retried must keep its record) nor than its dedup window (a dedup key must
/// not point at a deleted event).
pub(super) fn compile_retention(
    src: &spec::SourceSpec,
    route_specs: &[Spanned<spec::RouteSpec>],
    routes: &[CompiledRoute],
    dedup_window: Option<Duration>,
    fx: &FileCtx,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    let retention = match &src.retention {
        Some(r) => match duration(r, fx) {
            Ok(d) if d.is_zero() => {
                diags.push(fx.at(Loc::of(r), "retention must be positive"));
                return DEFAULT_RETENTION;
            }
            Ok(d) => d,
            Err(e) => {
                diags.push(e);
                return DEFAULT_RETENTION;
            }
        },
        None => DEFAULT_RETENTION,
    };
    // As an author writes them (`40d`, `36h`); humantime would print months of 30.44 days.
    let show = |d: Duration| match d.as_secs() {
        s if d.subsec_nanos() == 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if d.subsec_nanos() == 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if d.subsec_nanos() == 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => humantime::format_duration(d).to_string(),
    };
    let longest = routes.iter().max_by_key(|r| r.retry.max_age);
    if let Some(route) = longest
        && retention < route.retry.max_age + RETENTION_MARGIN
    {
        let need = route.retry.max_age + RETENTION_MARGIN;
        let msg = format!(
            "retention {} is shorter than route `{}`'s max_age {} plus a margin of {}: set `retention` to at least {}",
            show(retention),
            route.id,
            show(route.retry.max_age),
            show(RETENTION_MARGIN),
            show(need)
        );
        // Point at what the author wrote: the retention, else the route's max_age.
        let at = src.retention.as_ref().map(Loc::of).or_else(|| {
            route_specs.iter().find(|r| r.value.id.value == route.id.as_str()).map(|r| {
                match r.value.retry.as_ref().and_then(|x| x.value.max_age.as_ref()) {
                    Some(m) => Loc::of(m),
                    None => Loc::of(r),
                }
            })
        });
        diags.push(fx.at(at.unwrap_or_else(|| Loc::of(&src.id)), msg));
    }
    if let Some(dedup_window) = dedup_window.filter(|w| *w > retention) {
        let at = src
            .dedup
            .as_ref()
            .and_then(|d| d.value.window.as_ref().map(Loc::of))
            .or_else(|| src.retention.as_ref().map(Loc::of))
            .unwrap_or_else(|| Loc::of(&src.id));
        diags.push(fx.at(
            at,
            format!(
                "dedup window {} is longer than the retention {}: a key would outlive its event",
                show(dedup_window),
                show(retention)
            ),
        ));
    }
    retention
}
