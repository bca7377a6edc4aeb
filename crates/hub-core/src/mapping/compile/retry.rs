//! A route's `retry:` block.

use super::super::diag::{Diagnostic, FileCtx};
use super::super::node::Loc;
use super::super::spec;
use super::duration;
use crate::retry::RetryPolicy;
use serde_saphyr::Spanned;
use std::time::Duration;

pub(super) fn compile_retry(
    rs: &Spanned<spec::RetrySpec>,
    fx: &FileCtx,
) -> Result<RetryPolicy, Vec<Diagnostic>> {
    let s = &rs.value;
    let mut p = RetryPolicy::default();
    let mut diags = Vec::new();
    let mut dur = |v: &Option<Spanned<String>>, slot: &mut Duration| {
        if let Some(v) = v {
            match duration(v, fx) {
                Ok(d) => *slot = d,
                Err(e) => diags.push(e),
            }
        }
    };
    dur(&s.max_age, &mut p.max_age);
    dur(&s.initial_delay, &mut p.initial_delay);
    dur(&s.max_delay, &mut p.max_delay);
    dur(&s.timeout, &mut p.timeout);
    if let Some(m) = &s.max_attempts {
        if m.value == 0 {
            diags.push(fx.at(Loc::of(m), "max_attempts must be at least 1"));
        }
        p.max_attempts = m.value;
    }
    if let Some(m) = &s.multiplier {
        if !(1.0..=10.0).contains(&m.value) {
            diags.push(fx.at(Loc::of(m), "multiplier must be between 1 and 10"));
        }
        p.multiplier = m.value;
    }
    if let Some(j) = s.jitter {
        p.jitter = j;
    }
    if p.timeout.is_zero() || p.timeout > Duration::from_secs(300) {
        // At the value written, not at the whole `retry:` block.
        let at = s.timeout.as_ref().map_or(Loc::of(rs), Loc::of);
        diags.push(fx.at(at, "timeout must be between 1ms and 5m"));
    }
    if diags.is_empty() { Ok(p) } else { Err(diags) }
}
