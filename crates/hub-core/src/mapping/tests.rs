//! Route compile and rendering rules: destinations, hub-set headers, per-event caps.

use super::*;
use crate::secret::MapSecrets;

fn secrets() -> MapSecrets {
    MapSecrets(
        [("TOKEN", "t0k"), ("HOOK_URL", "http://hooks.example/x"), ("LOCAL_URL", "http://127.0.0.1:9/x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn file(routes: &str) -> String {
    format!("source:\n  id: src\n  description: test\n  verify: none\nroutes:\n{routes}")
}

fn compile(routes: &str) -> Result<CompiledSource, Vec<Diagnostic>> {
    compile_file("m.yaml", &file(routes), &secrets()).map(|(s, _)| s)
}

fn errors(routes: &str) -> String {
    compile(routes)
        .map(|_| ())
        .expect_err("must not compile")
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn request(body: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        path: "/hooks/src".into(),
        query: None,
        headers: [("content-type", "application/json")].into_iter().collect(),
        body: Bytes::from(body.to_string()),
        received_at: UnixMillis(0),
        remote_addr: None,
    }
}

fn render(src: &CompiledSource, body: &str) -> Result<Vec<Rendered>, RenderError> {
    let req = request(body);
    let parsed: Value = serde_json::from_str(body).expect("json");
    let env = src.envelope(&EventId::new("evt_1"), UnixMillis(0), &req.headers, None, parsed);
    let mut n = 0;
    src.evaluate(&env, &req, &mut || {
        n += 1;
        DeliveryId::new(format!("dlv_{n}"))
    })
}

#[test]
fn hub_set_headers_are_refused_in_to_headers() {
    for h in ["Idempotency-Key", "X-Hub-Event-Id"] {
        let e = errors(&format!(
            "  - id: r\n    map: {{a: 1}}\n    to:\n      url: https://x.example/a\n      headers: {{{h}: \"{{{{body.id}}}}\"}}\n"
        ));
        assert!(e.starts_with("m.yaml:10:") && e.contains("idempotency_key"), "{e}");
    }
}

#[test]
fn idempotency_key_sets_the_header_and_never_the_delivery_id() {
    let src = compile(
        "  - id: r\n    for_each: $.body.items[*]\n    map: {a: 1}\n    to:\n      url: https://x.example/a\n      idempotency_key: \"order-{{body.id}}\"\n",
    )
    .expect("compiles");
    let out = render(&src, r#"{"id": 7, "items": [1, 2]}"#).expect("renders");
    let ids: Vec<&str> = out.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids, ["dlv_1", "dlv_2"], "each for_each item is its own delivery");
    for r in &out {
        let req = r.result.as_ref().expect("rendered");
        assert_eq!(req.header("idempotency-key"), Some("order-7"));
        assert_eq!(req.headers.iter().filter(|(k, _)| k == "idempotency-key").count(), 1);
    }
}

#[test]
fn templated_scheme_or_host_is_a_compile_error() {
    for url in ["https://{{body.host}}/a", "https://api.{{body.host}}/a", "https://x.example:{{body.port}}/a"]
    {
        let e = errors(&format!("  - id: r\n    map: {{a: 1}}\n    to:\n      url: \"{url}\"\n"));
        assert!(e.starts_with("m.yaml:9:") && e.contains("scheme and host"), "{url}: {e}");
    }
    compile(
        "  - id: r\n    map: {a: 1}\n    to:\n      url: \"https://x.example/a/{{body.id}}?q={{body.id}}\"\n",
    )
    .expect("a templated path and query compile");
}

#[test]
fn dot_segments_from_values_are_a_render_error() {
    let src = compile(
        "  - id: r\n    map: {a: 1}\n    to:\n      url: \"https://x.example/api/deals/{{body.id}}\"\n",
    )
    .expect("compiles");
    for bad in [".", ".."] {
        let out = render(&src, &format!(r#"{{"id": "{bad}"}}"#)).expect("within limits");
        let e = out[0].result.as_ref().expect_err("refused");
        assert!(e.0.contains("path segment"), "{e}");
        assert_eq!(e.kind(), RenderErrorKind::Request);
    }
    for ok in ["...", "a.b", "..x"] {
        let out = render(&src, &format!(r#"{{"id": "{ok}"}}"#)).expect("within limits");
        assert!(out[0].result.is_ok(), "{ok}");
    }
}

#[test]
fn auth_over_plain_http_is_refused_unless_loopback() {
    let e = errors(
        "  - id: r\n    map: {a: 1}\n    to:\n      url: http://crm.example/a\n      auth: {bearer: env:TOKEN}\n",
    );
    assert!(e.starts_with("m.yaml:10:") && e.contains("loopback"), "{e}");
    let e = errors(
        "  - id: r\n    map: {a: 1}\n    to:\n      url: env:HOOK_URL\n      auth: {bearer: env:TOKEN}\n",
    );
    assert!(e.contains("loopback"), "{e}");
    for url in [
        "http://127.0.0.1:8080/a",
        "http://localhost/a",
        "http://[::1]:1/a",
        "https://crm.example/a",
        "env:LOCAL_URL",
    ] {
        compile(&format!(
            "  - id: r\n    map: {{a: 1}}\n    to:\n      url: {url}\n      auth: {{bearer: env:TOKEN}}\n"
        ))
        .unwrap_or_else(|d| panic!("{url}: {d:?}"));
    }
}

#[test]
fn fan_out_across_routes_is_capped_per_event() {
    let route = |id: &str| {
        format!(
            "  - id: {id}\n    for_each: $.body.items[*]\n    map: {{a: 1}}\n    to:\n      url: https://x.example/a\n"
        )
    };
    let src = compile(&format!("{}{}", route("r1"), route("r2"))).expect("compiles");
    let items: Vec<u32> = (0..600).collect();
    let body = serde_json::to_string(&json!({ "items": items })).expect("json");
    let e = render(&src, &body).expect_err("1200 deliveries are over the cap");
    assert_eq!(e.kind(), RenderErrorKind::EventCap);
    assert!(e.0.contains("more than 1000 deliveries"), "{e}");
    let body = serde_json::to_string(&json!({ "items": (0..500).collect::<Vec<u32>>() })).expect("json");
    assert_eq!(render(&src, &body).expect("1000 fit").len(), 1000);
}

#[test]
fn rendered_bytes_are_capped_per_event() {
    let src = compile("  - id: r\n    for_each: $.body.items[*]\n    map: {big: \"{{body.big}}\"}\n    to:\n      url: https://x.example/a\n")
        .expect("compiles");
    let big = "x".repeat(1024 * 1024);
    let body =
        serde_json::to_string(&json!({ "big": big, "items": (0..40).collect::<Vec<u32>>() })).expect("json");
    let e = render(&src, &body).expect_err("40 MB rendered");
    assert!(e.0.contains("bytes"), "{e}");
}

#[test]
fn for_each_items_see_their_own_item_and_index() {
    let src = compile(
        "  - id: r\n    for_each: $.body.items[*]\n    when: {path: $.item.keep, eq: true}\n    map: {n: \"{{item.n}}\", i: \"{{index}}\", e: \"{{event.id}}\"}\n    to:\n      url: https://x.example/a\n",
    )
    .expect("compiles");
    let out = render(
        &src,
        r#"{"items": [{"n": "a", "keep": true}, {"n": "b", "keep": false}, {"n": "c", "keep": true}]}"#,
    )
    .expect("renders");
    let bodies: Vec<Value> = out.iter().map(|r| r.result.as_ref().expect("ok").body_for_display()).collect();
    assert_eq!(
        bodies,
        [json!({"n": "a", "i": "0", "e": "evt_1"}), json!({"n": "c", "i": "2", "e": "evt_1"})]
    );
}

#[test]
fn redact_body_selectors_are_checked_at_compile_time() {
    let f = "source:\n  id: src\n  description: test\n  verify: none\n  redact:\n    body: [\"$.auth.token\"]\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.example/a\"}\n";
    let e = compile_file("m.yaml", f, &secrets()).map(|_| ()).expect_err("must start with $.body");
    assert!(e[0].to_string().starts_with("m.yaml:6:") && e[0].message.contains("$.body"), "{e:?}");
    let f = "source:\n  id: src\n  description: test\n  verify: none\n  format: xml\n  redact:\n    body: [\"$.body.a\"]\nroutes:\n  - id: r\n    map: {a: 1}\n    to: {url: \"https://x.example/a\"}\n";
    let e = compile_file("m.yaml", f, &secrets()).map(|_| ()).expect_err("xml bodies are not rewritten");
    assert!(e[0].message.contains("JSON and form"), "{e:?}");
}

#[test]
fn allow_net_is_compiled_per_route_and_a_bad_network_is_a_compile_error() {
    let src = compile(
        "  - id: onprem\n    map: {a: 1}\n    to:\n      url: http://10.1.2.3/a\n      allow_net: [10.1.0.0/16, 10.1.2.3, 10.1.9.9/16]\n  - id: public\n    map: {a: 1}\n    to: {url: https://crm.example/a}\n",
    )
    .expect("compiles");
    let onprem = src.route(&RouteId::new("onprem")).expect("route");
    assert_eq!(
        onprem.allow_net.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.1.0.0/16", "10.1.2.3/32"],
        "host bits dropped, duplicates merged"
    );
    assert!(src.route(&RouteId::new("public")).expect("route").allow_net.is_empty());
    let e = errors(
        "  - id: r\n    map: {a: 1}\n    to:\n      url: http://10.1.2.3/a\n      allow_net: [10.1.0.0/33]\n",
    );
    assert!(e.starts_with("m.yaml:10:") && e.contains("`10.1.0.0/33`"), "{e}");
}

#[test]
fn a_route_may_ask_only_for_networks_the_hub_allows() {
    let files = vec![(
        "m.yaml".to_string(),
        file(
            "  - id: onprem\n    map: {a: 1}\n    to:\n      url: http://10.1.2.3/a\n      allow_net: [10.1.0.0/16]\n  - id: public\n    map: {a: 1}\n    to: {url: https://crm.example/a}\n",
        ),
    )];
    let set = MappingSet::compile(&files, &secrets()).expect("compiles");
    let net = |t: &str| crate::net::parse_network(t).expect("net");
    set.check_reach(&[net("10.0.0.0/8")]).expect("inside the grant");
    set.check_reach(&[net("10.1.0.0/16")]).expect("exactly the grant");
    for granted in [vec![], vec![net("10.1.0.0/24")], vec![net("192.168.0.0/16")]] {
        let diags = set.check_reach(&granted).expect_err("outside the grant");
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = diags[0].to_string();
        assert!(
            d.starts_with("m.yaml:10:")
                && d.contains("`onprem`")
                && d.contains("10.1.0.0/16")
                && d.contains("--allow-net"),
            "{d}"
        );
    }
}
