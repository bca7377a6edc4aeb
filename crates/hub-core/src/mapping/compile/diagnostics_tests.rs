//! Every diagnostic the mapping compiler emits, one case each: a small mapping file, where its
//! first diagnostic points (`line:col`) and what it says. A message that embeds a library's
//! text is matched on our part of it.
//!
//! [`every_diagnostic_message_has_a_case`] reads the compiler's source for the messages it can
//! emit, so a new message without a case here fails the build's tests.

use super::super::{MappingSet, compile_file};
use crate::secret::MapSecrets;

/// A valid, open source (lines 1-4).
macro_rules! open {
    () => {
        "source:\n  id: s\n  description: test\n  verify: none\n"
    };
}

/// A valid route (lines 5-8 after [`open!`]).
macro_rules! route {
    () => {
        "routes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"
    };
}

/// [`open!`], then one route whose `map` is the given flow mapping (line 7, from column 10).
macro_rules! map {
    ($m:literal) => {
        concat!(open!(), "routes:\n  - id: r\n    map: ", $m, "\n    to: {url: \"https://x.test/a\"}\n")
    };
}

/// [`open!`], then one route whose `when` is the given flow mapping (line 7, from column 11).
macro_rules! when {
    ($w:literal) => {
        concat!(
            open!(),
            "routes:\n  - id: r\n    when: ",
            $w,
            "\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"
        )
    };
}

/// [`open!`], then one route with the given `to` (line 8, from column 9).
macro_rules! to {
    ($t:literal) => {
        concat!(open!(), "routes:\n  - id: r\n    map: {a: 1}\n    to: ", $t, "\n")
    };
}

/// [`open!`], then one route with the given `retry` (line 9, from column 12).
macro_rules! retry {
    ($r:literal) => {
        concat!(
            open!(),
            "routes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n    retry: ",
            $r,
            "\n"
        )
    };
}

/// [`open!`] with extra source keys (from line 5, column 3), then [`route!`].
macro_rules! source {
    ($extra:literal) => {
        concat!(open!(), $extra, route!())
    };
}

/// What the message must be.
#[derive(Clone, Copy, Debug)]
enum Says {
    Exactly(&'static str),
    /// Our part of a message that embeds a library's text.
    Contains(&'static str),
}
use Says::{Contains, Exactly};

struct Case {
    name: &'static str,
    file: &'static str,
    at: &'static str,
    says: Says,
}

const fn case(name: &'static str, file: &'static str, at: &'static str, says: Says) -> Case {
    Case { name, file, at, says }
}

fn secrets() -> MapSecrets {
    MapSecrets(
        [
            ("GH", "k"),
            ("T", "token"),
            ("EMPTY", "  "),
            ("NOT_URL", "ftp://x.test"),
            ("HOOK_URL", "https://hooks.test/x"),
            ("SG", "not a key"),
            ("ED", "zz"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

const CASES: &[Case] = &[
    // Reading the file.
    case(
        "yaml_unknown_key",
        "source:\n  id: s\n  descripton: x\n",
        "3:3",
        Contains("unknown field `descripton`, expected one of"),
    ),
    case("yaml_syntax_error", "source: [\n", "1:9", Contains("expected mapping start")),
    case(
        "yaml_wrong_type",
        concat!(open!(), "  max_body_bytes: lots\n", route!()),
        "5:19",
        Exactly("invalid u64"),
    ),
    case("yaml_duplicate_key_in_a_map", map!("{a: 1, a: 2}"), "7:17", Contains("duplicate mapping key: a")),
    // The source section.
    case(
        "lookup_table_not_a_mapping",
        concat!(open!(), "lookups:\n  stage: [a, b]\n", route!()),
        "6:10",
        Exactly("a lookup table is a mapping of key: value (and optional `_default`)"),
    ),
    case(
        "source_id_invalid",
        "source:\n  id: Bad Id\n  description: test\n  verify: none\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n",
        "2:7",
        Exactly("source id `Bad Id` must be 1-64 of [a-z0-9_-]"),
    ),
    case(
        "dedup_path_and_header",
        source!("  dedup: {path: $.body.id, header: X-Id}\n"),
        "5:10",
        Exactly("dedup takes exactly one of `path` or `header`"),
    ),
    case(
        "event_type_neither_path_nor_header",
        source!("  event_type: {}\n"),
        "5:15",
        Exactly("event_type takes exactly one of `path` or `header`"),
    ),
    case(
        "dedup_path_invalid",
        source!("  dedup: {path: \"$.first name\"}\n"),
        "5:17",
        Contains("invalid JSONPath `$.first name`: "),
    ),
    case(
        "dedup_window_not_a_duration",
        source!("  dedup: {path: $.body.id, window: soon}\n"),
        "5:36",
        Contains("`soon` is not a duration like 30s, 5m, 24h, 7d: "),
    ),
    case(
        "event_type_window",
        source!("  event_type: {path: $.body.type, window: 1d}\n"),
        "5:43",
        Exactly("`window` applies to `dedup` only"),
    ),
    case(
        "public_url_scheme",
        source!("  public_url: ftp://x.test\n"),
        "5:15",
        Exactly("public_url must start with https:// or http://"),
    ),
    case(
        "max_body_bytes_zero",
        source!("  max_body_bytes: 0\n"),
        "5:19",
        Exactly("max_body_bytes must be positive"),
    ),
    case(
        "redact_header_invalid",
        source!("  redact: {headers: [\"X Bad\"]}\n"),
        "5:11",
        Exactly("`X Bad` is not a valid header name"),
    ),
    case(
        "redact_body_outside_the_body",
        source!("  redact:\n    body: [\"$.auth.token\"]\n"),
        "6:12",
        Exactly("`$.auth.token`: redact.body selectors start with `$.body`"),
    ),
    case(
        "redact_body_selector_invalid",
        source!("  redact: {body: [\"$.body[?\"]}\n"),
        "5:19",
        Contains("invalid JSONPath `$.body[?`: "),
    ),
    case(
        "redact_body_format_cannot_be_rewritten",
        source!("  format: xml\n  redact: {body: [$.body.a]}\n"),
        "6:11",
        Exactly(
            "redact.body rewrites JSON and form bodies; this source's format cannot keep a redacted body \
             readable (use `format: auto` to store such bodies as their JSON document)",
        ),
    ),
    // Verification and secrets.
    case(
        "unknown_provider",
        concat!("source:\n  id: s\n  provider: nope\n  secret: env:GH\n", route!()),
        "3:13",
        Contains("unknown provider `nope` (known: "),
    ),
    case(
        "tolerance_not_a_duration",
        concat!("source:\n  id: s\n  provider: github\n  secret: env:GH\n  tolerance: soon\n", route!()),
        "5:14",
        Contains("`soon` is not a duration like 30s, 5m, 24h, 7d: "),
    ),
    case(
        "secret_and_secrets",
        concat!("source:\n  id: s\n  provider: github\n  secret: env:GH\n  secrets: [env:GH]\n", route!()),
        "4:11",
        Exactly("give `secret` or `secrets`, not both"),
    ),
    case(
        "secret_inline_value",
        concat!("source:\n  id: s\n  provider: github\n  secret: abc\n", route!()),
        "4:11",
        Contains("`secret`: must be a secret reference `env:VARIABLE_NAME`, not a value"),
    ),
    case(
        "secret_not_set",
        concat!("source:\n  id: s\n  provider: github\n  secret: env:UNSET\n", route!()),
        "4:11",
        Exactly("secret `env:UNSET` is not set"),
    ),
    case(
        "secret_empty",
        concat!("source:\n  id: s\n  provider: github\n  secret: env:EMPTY\n", route!()),
        "4:11",
        Exactly("secret `env:EMPTY` is empty (an empty secret would let anyone sign)"),
    ),
    case(
        "verify_none_without_description",
        concat!("source:\n  id: s\n  verify: none\n", route!()),
        "3:11",
        Exactly(
            "`verify: none` accepts requests from anyone: give the source a `description` saying why it is open",
        ),
    ),
    case(
        "verify_none_with_a_secret",
        concat!(open!(), "  secret: env:GH\n", route!()),
        "5:11",
        Exactly("`secret` has no use with `verify: none`"),
    ),
    case(
        "provider_without_secret",
        concat!("source:\n  id: s\n  provider: github\n", route!()),
        "3:13",
        Exactly("provider `github` needs `secret: env:NAME` (or `secrets:`)"),
    ),
    case(
        "provider_without_legacy_signatures",
        concat!(
            "source:\n  id: s\n  provider: stripe\n  secret: env:GH\n  allow_legacy_signatures: true\n",
            route!()
        ),
        "5:28",
        Exactly("provider `stripe` has no older signature versions to allow"),
    ),
    case(
        "provider_key_unusable",
        concat!("source:\n  id: s\n  provider: sendgrid\n  secret: env:SG\n", route!()),
        "3:13",
        Contains("provider `sendgrid`: "),
    ),
    case(
        "secret_without_provider",
        concat!("source:\n  id: s\n  secret: env:GH\n", route!()),
        "3:11",
        Exactly("`secret` needs a `provider` (or put it under `verify`)"),
    ),
    case(
        "no_verification",
        concat!("source:\n  id: s\n", route!()),
        "2:7",
        Exactly(
            "source has no verification: set `provider`, or `verify:` (write `verify: none` with a \
             `description` to accept requests from anyone)",
        ),
    ),
    case(
        "legacy_signatures_without_preset",
        concat!(
            "source:\n  id: s\n  verify: {hmac: {algorithm: sha256, header: X-Sig, secret: env:GH}}\n  allow_legacy_signatures: true\n",
            route!()
        ),
        "4:28",
        Exactly("`allow_legacy_signatures` applies to a `provider` preset only"),
    ),
    case(
        "url_signing_without_public_url",
        concat!("source:\n  id: s\n  provider: twilio\n  secret: env:T\n", route!()),
        "3:13",
        Exactly(
            "this scheme signs the URL the sender called: set `public_url` to this endpoint's URL as the \
             sender calls it (e.g. https://hooks.example.com/hooks/<id>)",
        ),
    ),
    case(
        "ip_allow_invalid",
        source!("  ip_allow: [nope]\n"),
        "5:13",
        Exactly("ip allow-list: `nope` is not an address or CIDR network"),
    ),
    case(
        "verify_without_secret",
        concat!("source:\n  id: s\n  verify: {hmac: {algorithm: sha256, header: X-Sig}}\n", route!()),
        "3:11",
        Exactly(
            "hmac verification needs a secret reference: `secret: env:NAME` (or `secrets:` for a rotation)",
        ),
    ),
    case(
        "hmac_header_invalid",
        concat!(
            "source:\n  id: s\n  verify: {hmac: {algorithm: sha256, header: \"X Sig\", secret: env:GH}}\n",
            route!()
        ),
        "3:46",
        Exactly("`X Sig` is not a valid header name"),
    ),
    case(
        "verify_scheme_unusable",
        concat!("source:\n  id: s\n  verify: {basic_auth: {username: \"a:b\", password: env:T}}\n", route!()),
        "3:11",
        Exactly("basic auth: the user name cannot contain ':'"),
    ),
    case(
        "token_location",
        concat!("source:\n  id: s\n  verify: {token: {secret: env:T}}\n", route!()),
        "3:11",
        Exactly("token takes exactly one of `query`, `header` or `body_field`"),
    ),
    // Retention.
    case("retention_zero", source!("  retention: 0s\n"), "5:14", Exactly("retention must be positive")),
    case(
        "retention_not_a_duration",
        source!("  retention: soon\n"),
        "5:14",
        Contains("`soon` is not a duration like 30s, 5m, 24h, 7d: "),
    ),
    case(
        "retention_shorter_than_max_age_at_retention",
        concat!(
            open!(),
            "  retention: 2d\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n    retry: {max_age: 3d}\n"
        ),
        "5:14",
        Exactly(
            "retention 2d is shorter than route `r`'s max_age 3d plus a margin of 1d: set `retention` to at least 4d",
        ),
    ),
    case(
        "retention_shorter_than_max_age_at_max_age",
        retry!("{max_age: 40d}"),
        "9:22",
        Exactly(
            "retention 30d is shorter than route `r`'s max_age 40d plus a margin of 1d: set `retention` to at least 41d",
        ),
    ),
    case(
        "dedup_window_longer_than_retention",
        source!("  dedup: {path: $.body.id, window: 40d}\n"),
        "5:36",
        Exactly("dedup window 40d is longer than the retention 30d: a key would outlive its event"),
    ),
    // Retry.
    case(
        "retry_max_attempts_zero",
        retry!("{max_attempts: 0}"),
        "9:27",
        Exactly("max_attempts must be at least 1"),
    ),
    case(
        "retry_multiplier_out_of_range",
        retry!("{multiplier: 20}"),
        "9:25",
        Exactly("multiplier must be between 1 and 10"),
    ),
    case(
        "retry_timeout_out_of_range",
        retry!("{timeout: 10m}"),
        "9:22",
        Exactly("timeout must be between 1ms and 5m"),
    ),
    case(
        "retry_delay_not_a_duration",
        retry!("{initial_delay: soon}"),
        "9:28",
        Contains("`soon` is not a duration like 30s, 5m, 24h, 7d: "),
    ),
    // Routes.
    case(
        "duplicate_route_id",
        concat!(open!(), route!(), "  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"),
        "9:9",
        Exactly("duplicate route id `r`"),
    ),
    case("no_routes", open!(), "2:3", Exactly("a mapping file needs at least one route under `routes`")),
    case(
        "trigger_key_in_source_route",
        concat!(
            open!(),
            "routes:\n  - id: r\n    on: {fact: x}\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"
        ),
        "7:9",
        Exactly(
            "`on` belongs to routes of an entity file (`entity: ...`); a source's route fires on each \
             webhook its `when` matches",
        ),
    ),
    case(
        "route_id_invalid",
        concat!(open!(), "routes:\n  - id: R 1\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"),
        "6:9",
        Exactly("route id `R 1` must be 1-64 of [a-z0-9_-]"),
    ),
    case(
        "for_each_invalid",
        concat!(
            open!(),
            "routes:\n  - id: r\n    for_each: \"$.body[\"\n    map: {a: 1}\n    to: {url: \"https://x.test/a\"}\n"
        ),
        "7:15",
        Contains("invalid JSONPath `$.body[`: "),
    ),
    case(
        "body_plan_missing",
        concat!(open!(), "routes:\n  - id: r\n    to: {url: \"https://x.test/a\"}\n"),
        "7:9",
        Exactly("a route needs exactly one of `map`, `to.body` or `to.raw: true`"),
    ),
    case(
        "content_type_with_map",
        to!("{url: \"https://x.test/a\", content_type: text/plain}"),
        "8:49",
        Exactly("`content_type` applies to `to.body` templates only (`map` sends JSON)"),
    ),
    case(
        "body_template_bypasses_escaping",
        concat!(
            open!(),
            "routes:\n  - id: r\n    to: {url: \"https://x.test/a\", body: '{\"a\": {{{body.a}}}}'}\n"
        ),
        "7:41",
        Exactly("`{{{...}}}` would bypass escaping; use `{{...}}` (or `{{{json x}}}` to embed JSON)"),
    ),
    case(
        "secret_url_not_a_url",
        to!("{url: env:NOT_URL}"),
        "8:15",
        Exactly("`env:NOT_URL` must hold a URL starting with https:// or http://"),
    ),
    case(
        "url_scheme",
        to!("{url: ftp://x.test}"),
        "8:15",
        Exactly(
            "url `ftp://x.test` must start with https:// or http:// (or be a secret reference `env:NAME`)",
        ),
    ),
    case(
        "url_templated_host",
        to!("{url: \"https://{{body.host}}/a\"}"),
        "8:15",
        Exactly(
            "the scheme and host of `to.url` must be written out (only its path and query may use \
             `{{...}}`), or the whole URL be a secret reference `env:NAME`",
        ),
    ),
    case(
        "url_template_invalid",
        to!("{url: \"https://x.test/{{shout body.a}}\"}"),
        "8:15",
        Exactly("unknown helper `shout`"),
    ),
    case(
        "method_invalid",
        to!("{url: \"https://x.test/a\", method: FETCH}"),
        "8:43",
        Exactly("method `FETCH` must be one of POST, PUT, PATCH, DELETE, GET"),
    ),
    case(
        "header_name_invalid",
        to!("{url: \"https://x.test/a\", headers: {\"X Bad\": v}}"),
        "8:54",
        Exactly("`X Bad` is not a valid header name"),
    ),
    case(
        "header_authorization",
        to!("{url: \"https://x.test/a\", headers: {Authorization: v}}"),
        "8:60",
        Exactly("set credentials with `auth:` (secret references), not a literal header"),
    ),
    case(
        "header_set_by_the_hub",
        to!("{url: \"https://x.test/a\", headers: {Idempotency-Key: v}}"),
        "8:62",
        Exactly(
            "`Idempotency-Key` is set by the hub on every request; use `idempotency_key:` to choose the \
             Idempotency-Key value",
        ),
    ),
    case(
        "header_template_invalid",
        to!("{url: \"https://x.test/a\", headers: {X-A: \"{{shout body.a}}\"}}"),
        "8:50",
        Exactly("unknown helper `shout`"),
    ),
    case(
        "idempotency_key_template_invalid",
        to!("{url: \"https://x.test/a\", idempotency_key: \"{{shout body.a}}\"}"),
        "8:52",
        Exactly("unknown helper `shout`"),
    ),
    case(
        "auth_over_plain_http",
        to!("{url: \"http://crm.test/a\", auth: {bearer: env:T}}"),
        "8:42",
        Exactly(
            "`auth` is sent over plain http:// only to a loopback host (the URL's host is `crm.test`); use https://",
        ),
    ),
    case(
        "auth_inline_secret",
        to!("{url: \"https://x.test/a\", auth: {bearer: abc}}"),
        "8:50",
        Contains("this value: must be a secret reference `env:VARIABLE_NAME`, not a value"),
    ),
    case(
        "auth_api_key_header_invalid",
        to!("{url: \"https://x.test/a\", auth: {api_key: {header: \"X Bad\", value: env:T}}}"),
        "8:41",
        Exactly("`X Bad` is not a valid header name"),
    ),
    case(
        "allow_net_invalid",
        to!("{url: \"http://10.1.2.3/a\", allow_net: [10.1.0.0/33]}"),
        "8:47",
        Exactly("allow_net: `10.1.0.0/33` is not an address or CIDR network (e.g. 10.1.0.0/16)"),
    ),
    // Conditions (`when`).
    case(
        "condition_not_a_mapping",
        when!("[a]"),
        "7:11",
        Exactly("a condition must be a mapping, found list"),
    ),
    case("condition_all_not_a_list", when!("{all: x}"), "7:17", Exactly("`all` takes a list of conditions")),
    case("condition_any_empty", when!("{any: []}"), "7:17", Exactly("`any` needs at least one condition")),
    case(
        "condition_path_not_a_string",
        when!("{path: 5, eq: 1}"),
        "7:18",
        Exactly("`path` must be a JSONPath string"),
    ),
    case(
        "condition_path_invalid",
        when!("{path: \"$.first name\", eq: 1}"),
        "7:18",
        Contains("invalid JSONPath `$.first name`: "),
    ),
    case(
        "condition_header_not_a_string",
        when!("{header: [x], eq: 1}"),
        "7:20",
        Exactly("`header` must be a header name"),
    ),
    case(
        "condition_two_operators",
        when!("{path: $.a, eq: 1, ne: 2}"),
        "7:34",
        Exactly("a condition takes exactly one operator; combine with `all`"),
    ),
    case(
        "condition_combinator_not_alone",
        when!("{path: $.a, not: {path: $.b, eq: 1}}"),
        "7:28",
        Exactly("`not` must be the only key of its condition"),
    ),
    case(
        "condition_unknown_key",
        when!("{path: $.a, equals: 1}"),
        "7:31",
        Exactly(
            "unknown key `equals` in condition, expected `path` or `header` and one of eq, ne, in, contains, \
             starts_with, ends_with, exists, gt, gte, lt, lte, regex, or all/any/not",
        ),
    ),
    case(
        "condition_without_target",
        when!("{eq: 1}"),
        "7:11",
        Exactly("condition needs `path` (JSONPath) or `header`"),
    ),
    case(
        "condition_without_operator",
        when!("{path: $.a}"),
        "7:11",
        Exactly(
            "condition needs an operator: one of eq, ne, in, contains, starts_with, ends_with, exists, gt, gte, \
             lt, lte, regex",
        ),
    ),
    case(
        "condition_number_expected",
        when!("{path: $.a, gt: abc}"),
        "7:27",
        Exactly("`gt` compares numbers; found string"),
    ),
    case(
        "condition_string_expected",
        when!("{path: $.a, starts_with: [a]}"),
        "7:36",
        Exactly("`starts_with` takes a string"),
    ),
    case(
        "condition_in_not_a_list",
        when!("{path: $.a, in: 5}"),
        "7:27",
        Exactly("`in` takes a list of values"),
    ),
    case(
        "condition_exists_not_a_boolean",
        when!("{path: $.a, exists: 1}"),
        "7:31",
        Exactly("`exists` takes true or false"),
    ),
    case("condition_regex_invalid", when!("{path: $.a, regex: \"(\"}"), "7:30", Contains("invalid regex: ")),
    // Map fields.
    case(
        "map_selector_invalid",
        map!("{a: \"$.first name\"}"),
        "7:14",
        Contains("(strings starting with `$` are JSONPath; write a literal as {value: ...})"),
    ),
    case(
        "map_template_invalid",
        map!("{a: \"{{shout body.a}}\"}"),
        "7:14",
        Exactly("unknown helper `shout`"),
    ),
    case(
        "field_path_not_a_string",
        map!("{a: {path: 5}}"),
        "7:21",
        Exactly("`path` must be a JSONPath string"),
    ),
    case(
        "field_path_invalid",
        map!("{a: {path: \"$.first name\"}}"),
        "7:21",
        Contains("invalid JSONPath `$.first name`: "),
    ),
    case(
        "field_template_not_a_string",
        map!("{a: {template: 5}}"),
        "7:25",
        Exactly("`template` must be a string"),
    ),
    case(
        "field_template_invalid",
        map!("{a: {template: \"{{shout body.a}}\"}}"),
        "7:25",
        Exactly("unknown helper `shout`"),
    ),
    case(
        "field_two_sources",
        map!("{a: {path: $.a, value: 1}}"),
        "7:33",
        Exactly("a field takes one of `path`, `template` or `value`"),
    ),
    case(
        "field_required_not_a_boolean",
        map!("{a: {path: $.a, required: yes}}"),
        "7:36",
        Exactly("`required` takes true or false"),
    ),
    case(
        "field_all_not_a_boolean",
        map!("{a: {path: $.a, all: 1}}"),
        "7:31",
        Exactly("`all` takes true or false"),
    ),
    case(
        "field_all_without_path",
        map!("{a: {value: 1, all: true}}"),
        "7:30",
        Exactly("`all` applies to `path` fields only"),
    ),
    case(
        "field_type_unknown",
        map!("{a: {path: $.a, type: float}}"),
        "7:32",
        Exactly("`type` is one of string, number, integer, boolean, json"),
    ),
    case(
        "field_unknown_key",
        map!("{a: {path: $.a, typo: 1}}"),
        "7:32",
        Exactly(
            "unknown key `typo` in field, expected one of path/template/value and default, required, all, type \
             (to build an object with a key named like these, wrap it as {value: ...})",
        ),
    ),
    // Templates.
    case(
        "template_syntax",
        map!("{a: \"{{#if body.a}}x\"}"),
        "7:14",
        Contains("template error at 1:16 of the template: invalid handlebars syntax"),
    ),
    case(
        "template_unknown_block_helper",
        map!("{a: \"{{#bogus body.a}}x{{/bogus}}\"}"),
        "7:14",
        Exactly("unknown block helper `#bogus` (block helpers: if, unless, each, with)"),
    ),
    case(
        "template_partial",
        map!("{a: \"{{> other}}\"}"),
        "7:14",
        Exactly("partials and decorators are not supported in mapping templates"),
    ),
    // Helper calls, checked at compile time.
    case(
        "helper_arity_exact",
        map!("{a: \"{{trim body.a body.b}}\"}"),
        "7:14",
        Exactly("trim: expects 1 argument, got 2"),
    ),
    case(
        "helper_arity_range",
        map!("{a: \"{{split body.a body.b body.c}}\"}"),
        "7:14",
        Exactly("split: expects 1 to 2 arguments, got 3"),
    ),
    case(
        "helper_no_named_arguments",
        map!("{a: \"{{trim body.a tz=1}}\"}"),
        "7:14",
        Exactly("trim: takes no named arguments, got `tz`"),
    ),
    case(
        "helper_unknown_named_argument",
        map!("{a: \"{{e164 body.a zone=1}}\"}"),
        "7:14",
        Exactly("e164: unknown named argument `zone` (allowed: region)"),
    ),
    case(
        "helper_split_empty_separator",
        map!("{a: '{{split body.a \"\"}}'}"),
        "7:14",
        Exactly("split: the separator must not be empty"),
    ),
    case(
        "helper_word_index",
        map!("{a: '{{word body.a \"x\"}}'}"),
        "7:14",
        Exactly("word: index must be an integer, got \"x\""),
    ),
    case(
        "helper_regex_not_literal",
        map!("{a: '{{regex_replace body.a body.p \"x\"}}'}"),
        "7:14",
        Exactly("regex_replace: the pattern must be a literal string"),
    ),
    case(
        "helper_regex_invalid",
        map!("{a: '{{regex_replace body.a \"(\" \"x\"}}'}"),
        "7:14",
        Contains("regex_replace: invalid regex `(`: "),
    ),
    case(
        "helper_e164_region",
        map!("{a: '{{e164 body.a \"XX\"}}'}"),
        "7:14",
        Exactly("e164: unknown region code `XX`"),
    ),
    case(
        "helper_time_zone",
        map!("{a: '{{format_date body.a \"%Y\" tz=\"Mars/Base\"}}'}"),
        "7:14",
        Exactly("format_date: unknown time zone `Mars/Base`"),
    ),
    case(
        "helper_date_format",
        map!("{a: '{{parse_date body.a \"%Y %!\"}}'}"),
        "7:14",
        Contains("parse_date: invalid date format `%Y %!`: "),
    ),
    case(
        "helper_date_literal",
        map!("{a: '{{format_date \"yesterday\" \"%Y\"}}'}"),
        "7:14",
        Exactly("format_date: cannot parse \"yesterday\" as a date"),
    ),
    case(
        "helper_lookup_unknown_table",
        map!("{a: '{{lookup \"stages\" body.a}}'}"),
        "7:14",
        Exactly("lookup: unknown lookup table `stages` (declared: none)"),
    ),
    case(
        "helper_lookup_not_a_table_name",
        map!("{a: '{{lookup 5 body.a}}'}"),
        "7:14",
        Exactly("lookup: the first argument must name a lookup table, got 5"),
    ),
    case(
        "helper_jp_not_literal",
        map!("{a: '{{jp body.p}}'}"),
        "7:14",
        Exactly("jp: the path must be a literal string"),
    ),
    case(
        "helper_jp_not_a_string",
        map!("{a: '{{jp 5}}'}"),
        "7:14",
        Exactly("jp: the path must be a string, got 5"),
    ),
    case(
        "helper_jp_invalid",
        map!("{a: '{{jp \"$.first name\"}}'}"),
        "7:14",
        Contains("jp: invalid JSONPath `$.first name`: "),
    ),
    case(
        "helper_to_number_literal",
        map!("{a: '{{to_number \"12abc\"}}'}"),
        "7:14",
        Exactly("to_number: \"12abc\" is not a number"),
    ),
    case("unknown_helper", map!("{a: \"{{shout body.a}}\"}"), "7:14", Exactly("unknown helper `shout`")),
];

/// Diagnostics made across files, by [`MappingSet`]: (case, file that is wrong, line:col, text).
const SET_CASES: &[(&str, &str, &str, Says)] = &[
    ("duplicate_source_id", "b.yaml", "2:7", Exactly("duplicate source id `s` (also in a.yaml:2:7)")),
    (
        "allow_net_not_granted",
        "a.yaml",
        "8:47",
        Exactly(
            "route `r` asks to reach 10.1.0.0/16, which this hub is not started to allow (add it to \
             --allow-net / HUB_ALLOW_NETS, or AllowNets on AWS)",
        ),
    ),
    ("duplicate_entity", "d.yaml", "1:9", Exactly("entity `contact` is declared twice (also in c.yaml:1:9)")),
];

/// Why a case failed, with the line each diagnostic points at and a caret under its column.
fn check(name: &str, text: &str, got: &[String], file: &str, at: &str, says: Says) -> Option<String> {
    let ok = match (got, says) {
        ([first, ..], Exactly(message)) => *first == format!("{file}:{at}: {message}"),
        ([first, ..], Contains(part)) => first.starts_with(&format!("{file}:{at}: ")) && first.contains(part),
        ([], _) => false,
    };
    let shown = |d: &String| {
        let mut parts = d.splitn(4, ':').skip(1).map(|p| p.parse::<usize>().unwrap_or(0));
        let (line, col) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let source = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        format!("    {d}\n      | {source}\n      | {}^", " ".repeat(col.saturating_sub(1)))
    };
    (!ok).then(|| {
        let got: Vec<String> = got.iter().map(shown).collect();
        format!("{name}: expected {file}:{at}: {says:?}\n  got:\n{}", got.join("\n"))
    })
}

#[test]
fn every_diagnostic_points_at_its_line_and_says_why() {
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).chain(SET_CASES.iter().map(|c| c.0)).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "case names are unique");

    let mut failures = Vec::new();
    for c in CASES {
        let got = match compile_file("m.yaml", c.file, &secrets()) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(ToString::to_string).collect(),
        };
        failures.extend(check(c.name, c.file, &got, "m.yaml", c.at, c.says));
    }

    let file = |text: &str| text.to_string();
    let one = file(concat!(open!(), route!()));
    let two = one.clone();
    let set = MappingSet::compile(&[("a.yaml".into(), one.clone()), ("b.yaml".into(), two)], &secrets());
    let got: Vec<String> = set.err().unwrap_or_default().iter().map(ToString::to_string).collect();
    let (name, f, at, says) = SET_CASES[0];
    failures.extend(check(name, &one, &got, f, at, says));

    let reach = file(to!("{url: \"http://10.1.2.3/a\", allow_net: [10.1.0.0/16]}"));
    let set = MappingSet::compile(&[("a.yaml".into(), reach.clone())], &secrets()).expect("compiles");
    let got: Vec<String> =
        set.check_reach(&[]).err().unwrap_or_default().iter().map(ToString::to_string).collect();
    let (name, f, at, says) = SET_CASES[1];
    failures.extend(check(name, &reach, &got, f, at, says));

    let entity = file("entity: contact\nfields:\n  plan: {from: x.y, value: $.fact.data.plan}\n");
    let set = MappingSet::compile(
        &[("c.yaml".into(), entity.clone()), ("d.yaml".into(), entity.clone())],
        &secrets(),
    );
    let got: Vec<String> = set.err().unwrap_or_default().iter().map(ToString::to_string).collect();
    let (name, f, at, says) = SET_CASES[2];
    failures.extend(check(name, &entity, &got, f, at, says));

    assert!(failures.is_empty(), "{} of {count} cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// Where the compiler's messages are written: each file and the functions in it that emit
/// diagnostics (`None`: the whole file).
const EMITTERS: &[(&str, &str, Option<&[&str]>)] = &[
    ("compile/mod.rs", include_str!("mod.rs"), Some(&["duration"])),
    ("compile/source.rs", include_str!("source.rs"), None),
    ("compile/verify.rs", include_str!("verify.rs"), None),
    ("compile/route.rs", include_str!("route.rs"), None),
    ("compile/retry.rs", include_str!("retry.rs"), None),
    ("compile/retention.rs", include_str!("retention.rs"), None),
    ("mod.rs", include_str!("../mod.rs"), Some(&["compile", "check_reach"])),
    ("condition.rs", include_str!("../condition.rs"), Some(&["compile", "compile_op"])),
    ("value.rs", include_str!("../value.rs"), Some(&["compile_string", "compile_field", "finish"])),
    // Its messages are the variants of `TemplateError`.
    ("template.rs", include_str!("../template.rs"), None),
    ("selector.rs", include_str!("../selector.rs"), None),
    ("helpers/mod.rs", include_str!("../helpers/mod.rs"), Some(&["check_call", "check_arity"])),
    (
        "helpers/text.rs",
        include_str!("../helpers/text.rs"),
        Some(&["check_split", "check_word", "check_regex_replace"]),
    ),
    ("helpers/phone_email.rs", include_str!("../helpers/phone_email.rs"), Some(&["check_e164"])),
    (
        "helpers/dates.rs",
        include_str!("../helpers/dates.rs"),
        Some(&["check_date", "time_zone", "check_strftime"]),
    ),
    ("helpers/lookup.rs", include_str!("../helpers/lookup.rs"), Some(&["check_lookup"])),
    ("helpers/numbers.rs", include_str!("../helpers/numbers.rs"), Some(&["check_to_number"])),
    ("helpers/json.rs", include_str!("../helpers/json.rs"), Some(&["check_jp"])),
];

/// Messages in the compiler's source without a case, and why: no mapping file can bring them
/// about, or they are not compile diagnostics.
const NO_CASE: &[(&str, &str)] = &[
    ("{reason} (template {l}:{c})", "the reason of a render failure, not a compile diagnostic"),
    ("secret not set ({e})", "a placeholder key: the source compiles, with a verifier that refuses"),
    ("field needs `path`, `template` or `value`", "a field is compiled only when it has one of them"),
    ("unknown operator `{name}`", "only the known operators reach compile_op"),
    ("template error: {0}", "handlebars gives every syntax error a position"),
    ("no registry", "every escape kind has a registry"),
    ("unsupported template construct", "every construct handlebars parses is matched above it"),
    ("unsupported sub-expression", "a sub-expression is always an expression"),
    (
        "expects at least {min} {}, got {got}",
        "a variadic helper needs at least one argument, and a call without any is a plain value",
    ),
    (
        "unknown helper `{name}`",
        "check_call is only called for known helpers; the template check says `unknown helper` itself",
    ),
];

/// The body of `fn name` in `text` (to the closing brace at its own indentation).
fn fn_body<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text
        .find(&format!("fn {name}("))
        .or_else(|| text.find(&format!("fn {name}<")))
        .unwrap_or_else(|| panic!("no fn {name}"));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = text[line_start..start].len() - text[line_start..start].trim_start().len();
    let close = format!("\n{}}}\n", " ".repeat(indent));
    let end = text[start..].find(&close).map_or(text.len(), |i| start + i + close.len());
    &text[start..end]
}

/// The message literals in `code`: the first argument of `format!`, `Err`, `ok_or`, `.at` and
/// `#[error]`, and whether it is a format string.
fn messages(code: &str) -> Vec<(String, bool)> {
    let code = code.split("#[cfg(test)]").next().unwrap_or(code);
    let mut out = Vec::new();
    for opener in ["format!(", "Err(", "ok_or(", ".at(", "#[error("] {
        let mut rest = code;
        while let Some(i) = rest.find(opener) {
            rest = &rest[i + opener.len()..];
            let mut args = rest.trim_start();
            if opener == ".at(" {
                // The location, then the message.
                let Some(comma) = args.find(',') else { continue };
                args = args[comma + 1..].trim_start();
            }
            let Some(lit) = args.strip_prefix('"') else { continue };
            let mut text = String::new();
            let mut chars = lit.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        // A line continuation drops the break and the next line's indentation.
                        Some('\n') => {
                            let skipped: String = chars.clone().take_while(|c| c.is_whitespace()).collect();
                            for _ in 0..skipped.chars().count() {
                                chars.next();
                            }
                        }
                        Some(other) => text.push(other),
                        None => {}
                    },
                    c => text.push(c),
                }
            }
            out.push((text, matches!(opener, "format!(" | "#[error(")));
        }
    }
    out
}

/// The literal parts of a message (between the `{...}` placeholders of a format string), as
/// they appear in its text.
fn fragments(message: &str, is_format: bool) -> Vec<String> {
    if !is_format {
        return vec![message.to_string()];
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                cur.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                cur.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                parts.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| p.len() >= 3).collect()
}

/// A message added to the compiler without a case above fails here.
#[test]
fn every_diagnostic_message_has_a_case() {
    let expected: Vec<&str> = CASES
        .iter()
        .map(|c| c.says)
        .chain(SET_CASES.iter().map(|c| c.3))
        .map(|s| match s {
            Exactly(t) | Contains(t) => t,
        })
        .collect();
    let mut uncovered = Vec::new();
    for (file, text, fns) in EMITTERS {
        let code: Vec<&str> = match fns {
            Some(names) => names.iter().map(|n| fn_body(text, n)).collect(),
            None => vec![*text],
        };
        for (message, is_format) in code.iter().flat_map(|c| messages(c)) {
            let parts = fragments(&message, is_format);
            if parts.is_empty() || NO_CASE.iter().any(|(m, _)| *m == message) {
                continue;
            }
            let covered = expected.iter().any(|e| parts.iter().all(|p| e.contains(p.as_str())));
            if !covered {
                uncovered.push(format!("{file}: \"{message}\""));
            }
        }
    }
    assert!(uncovered.is_empty(), "messages without a case in CASES:\n{}", uncovered.join("\n"));
}
