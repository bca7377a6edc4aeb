//! URL rules shared by compilation and rendering: origins, plain-http hosts, dot segments.

/// The scheme and authority of an `http(s)://` URL (`https://host:port`), or the whole text of
/// anything else (a secret reference `env:NAME`).
pub fn url_origin(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else { return url };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + 3 + i);
    &url[..end]
}

/// The host of an `http://` origin unless it is loopback (`127.0.0.0/8`, `::1`, `localhost`).
pub(super) fn non_loopback_http_host(origin: &str) -> Option<String> {
    let authority = origin.strip_prefix("http://")?;
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| format!("`{host}`"))
}

/// A rendered URL whose path has a `.` or `..` segment would address another resource than
/// the route was written for (URL parsers resolve them, `%2e` forms included).
pub(super) fn check_rendered_url(url: &str) -> Result<(), String> {
    let rest = &url[url_origin(url).len()..];
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    for seg in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(format!("the URL would contain the path segment `{seg}`, which is refused"));
        }
    }
    Ok(())
}
