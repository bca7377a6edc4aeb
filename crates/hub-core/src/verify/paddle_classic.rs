//! Paddle Classic webhooks (alerts): RSA PKCS#1 v1.5 / SHA-1 signature in the `p_signature` form
//! field over the PHP `serialize()` of all other fields, sorted by name, every value a string.
//! <https://developer.paddle.com/classic/webhook-reference/verifying-webhooks>
//!
//! The signed payload carries no verifiable timestamp (`event_time` is an unsigned-format local
//! date), so there is no freshness check.

use super::{ConfigError, Scheme, VerifyError, VerifyInput};
use crate::secret::Secret;
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::{Digest, Sha1};
use std::borrow::Cow;
use std::time::Duration;

const FIELD: &str = "p_signature";

/// ASN.1 DigestInfo prefix for SHA-1 (RFC 8017 §9.2, note 1). Built here rather than through
/// rsa's `sha1` feature, which would pull a second, older `sha1`/`digest` into the tree.
const SHA1_DIGEST_INFO_PREFIX: [u8; 15] =
    [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];

/// Verifies Paddle Classic alerts with the vendor public key(s) (several during a rotation).
#[derive(Clone, Debug)]
pub struct PaddleClassic {
    keys: Vec<RsaPublicKey>,
}

impl PaddleClassic {
    /// `secrets`: the public key from the Paddle dashboard as PEM (`PUBLIC KEY`, or PKCS#1
    /// `RSA PUBLIC KEY`); literal `\n` escapes (as keys often arrive through environment
    /// variables) are accepted. `_tolerance` is ignored: nothing signed carries a timestamp.
    pub fn new(secrets: Vec<Secret>, _tolerance: Option<Duration>) -> Result<Self, ConfigError> {
        if secrets.is_empty() {
            return Err(ConfigError::NoKey {
                scheme: "paddle-classic",
                text: "no public key configured".into(),
            });
        }
        let keys = super::parse_keys("paddle-classic", "public key", &secrets, parse_key)?;
        Ok(Self { keys })
    }
}

fn parse_key(text: &str) -> Result<RsaPublicKey, &'static str> {
    let pem: Cow<'_, str> =
        if text.contains("\\n") { Cow::Owned(text.replace("\\n", "\n")) } else { Cow::Borrowed(text) };
    let pem = pem.trim();
    // rsa caps the modulus at 4096 bits, which bounds the cost of every verification.
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| "not a PEM RSA public key (expected -----BEGIN PUBLIC KEY-----)")
}

impl Scheme for PaddleClassic {
    fn verify(&self, input: &VerifyInput<'_>) -> Result<(), VerifyError> {
        let mut fields: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(input.body).collect();
        let sig_at =
            fields.iter().position(|(k, _)| k == FIELD).ok_or_else(|| VerifyError::Missing(FIELD.into()))?;
        let (_, sig_b64) = fields.swap_remove(sig_at);
        fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // PHP's `$_POST` keeps only the last of repeated names while our body parser makes an
        // array of them: refuse the ambiguity (Paddle never repeats a field).
        if let Some(w) = fields.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(VerifyError::Malformed(w[0].0.clone().into_owned()));
        }
        if fields.iter().any(|(k, _)| k == FIELD) {
            return Err(VerifyError::Malformed(FIELD.into()));
        }
        // A `+` sent unencoded arrives as a space; spaces are never base64, so mapping them back
        // cannot make a wrong signature pass.
        let sig_b64 = sig_b64.trim().replace(' ', "+");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64.as_bytes())
            .map_err(|_| VerifyError::Malformed(FIELD.into()))?;

        let digest = Sha1::digest(php_serialize(&fields));
        let scheme = || Pkcs1v15Sign { hash_len: Some(20), prefix: Box::new(SHA1_DIGEST_INFO_PREFIX) };
        if self.keys.iter().any(|k| k.verify(scheme(), &digest, &sig).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// PHP `serialize()` of an array of string keys to string values:
/// `a:N:{s:len:"key";s:len:"value";...}`, lengths in bytes.
fn php_serialize(fields: &[(Cow<'_, str>, Cow<'_, str>)]) -> Vec<u8> {
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(format!("a:{}:{{", fields.len()).as_bytes());
    for (k, v) in fields {
        for s in [k, v] {
            out.extend_from_slice(format!("s:{}:\"", s.len()).as_bytes());
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\";");
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;
    use crate::time::UnixMillis;

    // pay-rails/pay test fixture (subscription_cancelled) and the Paddle Classic key it uses.
    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA3CGT82ixrOTpCjAyY9pI
GthIx4HzZtnO519VECl7wouV4nSD/09YDkyeujygarlYuKjILra4/yuwHoQGD/En
EdADYfNgBNYMuiUhsiXArPQRuqRKSi3xboZEkeDLaeABtxr/5VWyHFtxbSe8FMa6
st0Lm6zrOauYkYRbWF+8+6pp4CVNsFSBjP8PLum0zN9Uh44DyFI6qlJ3xA5Uxcr/
Ew/Fp3eDPloqqa2MNCZnkJwft5rLVz/B5YWf5jY515OKl+OU/t+FCtxKpjj74ug7
9Vk5cZsA3044VClsusI3qj/iRXPWtBNKUpj0tknT5Q9J94twv3kfa+XMu61uOw3k
Vjhf62W6CYt5jtQdk/HgxzMP64ouvf0zVDKHoJtprU524IXOYxK7tiDXuktpVAw3
SnNh/bpN0qD2D7TGVzHeajgcppxjBYJc6OzXHToiyIiLGqZdP0ewzfOIKGkW9tOi
Y/1kSzlkJrQ6sfM5aKg6SSsos0+TBY9t7/UZFVKKe7J4ijSRmsFd+DVmc2KHHReK
rd1tEBa2GQeJU9F0iM5EVcYnXeXzHRNha54snsp5ZYXSAmsYZCAutdh+gWI2Alni
P97ZBsCbv7RHLQOY60CXkKnILEPhu4u5Kp7P1Ez1deGf/mcnZz21RCdC7PhqPXtm
WtpkNrCK6BeRMj0XZG7oB3MCAwEAAQ==
-----END PUBLIC KEY-----
";
    const BODY: &str = "alert_id=1440248908&alert_name=subscription_cancelled&cancellation_effective_date=2020-11-18+11%3A18%3A16&checkout_id=7-1bfa34cf3136556-972299a6b8&currency=USD&email=wilkinson.cicero%40example.net&event_time=2020-11-16+16%3A45%3A09&linked_subscriptions=6%2C+1%2C+6&marketing_consent=&passthrough=%7B%22owner_sgid%22%3A+%22BAh7CEkiCGdpZAY6BkVUSSIiZ2lkOi8vZHVtbXkvVXNlci8xP2V4cGlyZXNfaW4GOwBUSSIMcHVycG9zZQY7AFRJIhJwYWRkbGVfMTIzNDU2BjsAVEkiD2V4cGlyZXNfYXQGOwBUMA%3D%3D--0ee181d81896a7e0ef25d322c6081df1ec534cdd%22%7D&quantity=49&status=deleted&subscription_id=7&subscription_plan_id=9&unit_price=unit_price&user_id=9&p_signature=17ffO2bIL20TjljrhhETh3PfpNyDi8WLvx%2BcK1DVy1EEDUPPCT3CCAITuUraVKJjWD3hWsOx1%2FKVNUaqzqMWAA5GWa4cPf%2FiaAXDUGXCpsNwZQR7XeZXmQnD8xXHH2%2FBaL7BStGJ4iyGqbZynzJM0gIV%2B2j6ZXa3uvkReZMVlU9AUZoF1I4su3U15509bsjcPw%2F2UOhj6GFKH0WNwcsPkhzd9Xzfxcof5NWDlmIpiEnHgnBUGbdqpHp46ey2uavA5hpIFTs8chJgAQGh%2FsuDuuK%2BGKE0CyIRCnuJP7Jd57qqCUVIWPgucMErKJWeiO3QOyQPRegIF0RlfJhT%2Fi87hg1iJ5loxpc%2Ba%2BljNvQcrPpi6fUE6EGiaqOhaSmAD2%2F%2BVDy%2By5UGwl0E9GU4fPND9lmS9WISbdO9L1Z0tVpb3%2FLJOXRk%2Frxkpp3ss4%2FZoC91Fak0TD%2FbKmS48K8KWsb7s3DiMPONGuSJCKtJzAnDHFrr6XN%2Fn%2B5HZS4xor6AFkH8UtZlBZD03o76i8dCORc%2FUBhuVfzmjICQbLUAzvu5M8I%2F4hR21ev9wmaShTNSe8FAjMWV%2Fk2nAmLfDJGNRvoYAqOdGwxij3CviU2ArnIboqbrgu9lA1TNTM55OgAKFOphlHp0tGlfa0WOPtMdB5oYSvpIdnJ1O7%2BWrnNRcaAl374%3D";

    fn run(key: &str, body: &str) -> Result<(), VerifyError> {
        let headers = Headers::new();
        let input = VerifyInput {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
            now: UnixMillis(0),
            remote_ip: None,
        };
        PaddleClassic::new(vec![Secret::new(key)], None).expect("key").verify(&input)
    }

    #[test]
    fn fixture_verifies_in_any_field_order_and_with_escaped_pem() {
        assert_eq!(run(KEY, BODY), Ok(()));
        let (head, sig) = BODY.split_once("&p_signature=").expect("signature field");
        let reordered = format!("p_signature={sig}&{head}");
        assert_eq!(run(KEY, &reordered), Ok(()));
        assert_eq!(run(&KEY.replace('\n', "\\n"), BODY), Ok(()));
    }

    #[test]
    fn tampered_missing_and_duplicate_fields_fail() {
        assert_eq!(run(KEY, &BODY.replace("quantity=49", "quantity=50")), Err(VerifyError::Mismatch));
        assert_eq!(run(KEY, &format!("{BODY}&extra=1")), Err(VerifyError::Mismatch));
        assert_eq!(run(KEY, "alert_id=1"), Err(VerifyError::Missing(FIELD.into())));
        assert_eq!(run(KEY, "alert_id=1&p_signature=%%%"), Err(VerifyError::Malformed(FIELD.into())));
        assert_eq!(run(KEY, &format!("{BODY}&user_id=9")), Err(VerifyError::Malformed("user_id".into())));
    }

    #[test]
    fn serialization_matches_php() {
        let f = [(Cow::Borrowed("a"), Cow::Borrowed("é")), (Cow::Borrowed("b"), Cow::Borrowed(""))];
        assert_eq!(php_serialize(&f), b"a:2:{s:1:\"a\";s:2:\"\xc3\xa9\";s:1:\"b\";s:0:\"\";}".to_vec());
        assert!(PaddleClassic::new(vec![Secret::new("-----BEGIN PUBLIC KEY-----\nAAAA\n")], None).is_err());
    }
}
