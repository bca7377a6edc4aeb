//! Network lists written in mapping files and flags: `192.0.2.0/24`, `2001:db8::/32` or a
//! single address.

use ipnet::IpNet;
use std::net::IpAddr;

/// Parses a network or a single address (a host network); host bits of a CIDR are dropped.
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>().map(|n| n.trunc()).ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `net` lies wholly inside one of `within`.
pub fn is_within(net: &IpNet, within: &[IpNet]) -> bool {
    within.iter().any(|outer| outer.contains(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_parse_and_nest() {
        let n = parse_network(" 10.1.2.3/16 ").expect("cidr");
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert_eq!(parse_network("10.1.2.3").expect("host").to_string(), "10.1.2.3/32");
        assert_eq!(parse_network("::1").expect("v6 host").to_string(), "::1/128");
        assert!(parse_network("10.1.2.300").is_none());
        assert!(parse_network("example.com").is_none());
        let wide = [parse_network("10.0.0.0/8").expect("wide")];
        assert!(is_within(&n, &wide));
        assert!(!is_within(&parse_network("10.0.0.0/7").expect("wider"), &wide));
        assert!(!is_within(&parse_network("192.168.0.0/24").expect("other"), &wide));
    }
}
