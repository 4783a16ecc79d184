//! Identities and tokens: SpacetimeDB's identity derivation from a JWT's `iss`/`sub`, and the
//! server's own ES256 key that signs tokens for anonymous clients (SPEC §7).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value as Json};

/// The issuer of tokens this server mints.
pub const LOCAL_ISSUER: &str = "localhost";
/// Longest `iss` / `sub` accepted.
pub const MAX_CLAIM_BYTES: usize = 128;

/// A 32-byte identity, kept big-endian (the hex form clients see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(pub [u8; 32]);

impl Identity {
    /// `Identity::from_claims`: blake3 of `"{iss}|{sub}"`, a checksum, and the `c200` prefix.
    pub fn from_claims(iss: &str, sub: &str) -> Identity {
        let h1 = blake3::hash(format!("{iss}|{sub}").as_bytes());
        let id = &h1.as_bytes()[..26];
        let mut checksum_input = vec![0xC2, 0x00];
        checksum_input.extend_from_slice(id);
        let c = blake3::hash(&checksum_input);
        let mut out = [0u8; 32];
        out[0] = 0xC2;
        out[1] = 0x00;
        out[2..6].copy_from_slice(&c.as_bytes()[..4]);
        out[6..].copy_from_slice(id);
        Identity(out)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Identity> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(s).ok()?;
        Some(Identity(bytes.try_into().ok()?))
    }

    /// The ABI / BSATN form: little-endian.
    pub fn to_le(self) -> [u8; 32] {
        let mut b = self.0;
        b.reverse();
        b
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("tokens from issuer `{0}` are not accepted by this server")]
    UnknownIssuer(String),
    #[error("token expired")]
    Expired,
    #[error("invalid claims: {0}")]
    BadClaims(String),
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Identity,
    /// The token's payload, as signed (for the guest's `get_jwt`).
    pub payload: String,
    pub token: String,
}

/// The server's signing key.
pub struct Keys {
    signing: SigningKey,
    verifying: VerifyingKey,
    public_pem: String,
}

fn now_secs() -> i64 {
    crate::logs::now_micros() / 1_000_000
}

impl Keys {
    /// Loads `<dir>/id_ecdsa.pem`, creating a fresh P-256 key (mode 0600, fsync'd) if absent.
    pub fn load_or_create(dir: &Path) -> Result<Keys, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("id_ecdsa.pem");
        let signing = match std::fs::read_to_string(&path) {
            Ok(pem) => SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                let key = loop {
                    getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
                    if let Ok(k) = SigningKey::from_slice(&seed) {
                        break k;
                    }
                };
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
                write_private(&path, pem.as_bytes())?;
                key
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let verifying = *signing.verifying_key();
        let public_pem = verifying.to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())?;
        Ok(Keys { signing, verifying, public_pem })
    }

    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Mints a token for a new anonymous identity.
    pub fn mint_anonymous(&self) -> Result<Verified, String> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
        // UUID v4 layout.
        raw[6] = (raw[6] & 0x0f) | 0x40;
        raw[8] = (raw[8] & 0x3f) | 0x80;
        let h = hex::encode(raw);
        let sub = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        let identity = Identity::from_claims(LOCAL_ISSUER, &sub);
        let claims = json!({
            "hex_identity": identity.to_hex(),
            "sub": sub,
            "iss": LOCAL_ISSUER,
            "aud": ["spacetimedb"],
            "iat": now_secs(),
            "exp": null,
        });
        Ok(self.sign(claims, identity))
    }

    /// Re-signs a verified caller's claims with a 60 s expiry (`/identity/websocket-token`).
    pub fn short_lived(&self, caller: &Verified) -> Result<Verified, String> {
        let mut claims: Json = serde_json::from_str(&caller.payload).map_err(|e| e.to_string())?;
        let iat = now_secs();
        claims["iat"] = json!(iat);
        claims["exp"] = json!(iat + 60);
        Ok(self.sign(claims, caller.identity))
    }

    fn sign(&self, claims: Json, identity: Identity) -> Verified {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        // The 1.3 CLI decodes the payload with the standard alphabet: pick a spelling of the
        // JSON whose base64url has no `-`/`_` (padding the `sub`-free end with spaces).
        let mut payload = claims.to_string();
        for pad in 0..64 {
            let enc = URL_SAFE_NO_PAD.encode(payload.as_bytes());
            if !enc.contains(['-', '_']) || pad == 63 {
                break;
            }
            payload.push(' ');
        }
        let body = URL_SAFE_NO_PAD.encode(payload.as_bytes());
        let signing_input = format!("{header}.{body}");
        let sig: Signature = self.signing.sign(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Verified { identity, payload, token }
    }

    /// Verifies a bearer token signed by this server.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts".into()));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .or_else(|_| STANDARD_NO_PAD.decode(part.trim_end_matches('=')))
                .map_err(|e| AuthError::Malformed(format!("{what}: {e}")))
        };
        let header: Json = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        if header["alg"] != "ES256" {
            return Err(AuthError::Malformed(format!("unsupported algorithm {}", header["alg"])));
        }
        let payload_bytes = decode(p, "payload")?;
        let payload =
            String::from_utf8(payload_bytes).map_err(|e| AuthError::Malformed(format!("payload: {e}")))?;
        let claims: Json =
            serde_json::from_str(&payload).map_err(|e| AuthError::Malformed(format!("payload: {e}")))?;
        let iss = claims["iss"].as_str().unwrap_or_default();
        let sub = claims["sub"].as_str().unwrap_or_default();
        if iss.is_empty() || sub.is_empty() || iss.len() > MAX_CLAIM_BYTES || sub.len() > MAX_CLAIM_BYTES {
            return Err(AuthError::BadClaims("iss and sub must be non-empty and at most 128 bytes".into()));
        }
        if iss != LOCAL_ISSUER {
            return Err(AuthError::UnknownIssuer(iss.to_string()));
        }
        let sig_bytes = decode(s, "signature")?;
        let sig = Signature::from_slice(&sig_bytes).map_err(|_| AuthError::BadSignature)?;
        self.verifying.verify(format!("{h}.{p}").as_bytes(), &sig).map_err(|_| AuthError::BadSignature)?;
        if let Some(exp) = claims["exp"].as_i64() {
            if exp < now_secs() {
                return Err(AuthError::Expired);
            }
        }
        let identity = Identity::from_claims(iss, sub);
        if let Some(hex) = claims["hex_identity"].as_str() {
            if Identity::from_hex(hex) != Some(identity) {
                return Err(AuthError::BadClaims("hex_identity does not match iss/sub".into()));
            }
        }
        Ok(Verified { identity, payload, token: token.trim().to_string() })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_has_the_checksummed_prefix() {
        let id = Identity::from_claims("localhost", "some-subject");
        let hex = id.to_hex();
        assert!(hex.starts_with("c200"), "{hex}");
        assert_eq!(Identity::from_hex(&hex), Some(id));
        // The checksum covers the 26 id bytes.
        let c = blake3::hash(&[&[0xC2u8, 0x00][..], &id.0[6..]].concat());
        assert_eq!(&id.0[2..6], &c.as_bytes()[..4]);
        assert_ne!(id, Identity::from_claims("localhost", "other"));
    }

    #[test]
    fn minted_tokens_verify_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let v = keys.mint_anonymous().unwrap();
        let back = keys.verify(&v.token).unwrap();
        assert_eq!(back.identity, v.identity);
        let payload_b64 = v.token.split('.').nth(1).unwrap();
        assert!(!payload_b64.contains(['-', '_']), "payload must decode with the standard alphabet");
        // Same key after reload.
        let again = Keys::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&v.token).is_ok());
        let mut forged = v.token.clone();
        forged.pop();
        forged.push(if v.token.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.verify(&forged).is_err());
        assert!(matches!(keys.verify("a.b"), Err(AuthError::Malformed(_))));
        let other = Keys::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.verify(&v.token).unwrap_err(), AuthError::BadSignature);
        let short = keys.short_lived(&v).unwrap();
        assert_eq!(keys.verify(&short.token).unwrap().identity, v.identity);
    }

    // Known answers from the official crate (`spacetimedb-lib`, Apache-2.0): identities must
    // match bit for bit, or a client's stored identity would change between servers.
    #[test]
    fn identities_match_the_official_derivation() {
        for (iss, sub) in [
            ("localhost", "d5d7fbb8-6a1b-4b4c-9b55-6f3b5d4c9e21"),
            ("https://auth.spacetimedb.com", "user|1234"),
            ("a", "b"),
            ("iss with spaces", "ünïcödé sub"),
        ] {
            let ours = Identity::from_claims(iss, sub);
            let official = spacetimedb_lib::Identity::from_claims(iss, sub);
            assert_eq!(ours.to_hex(), official.to_hex().to_string(), "iss={iss:?} sub={sub:?}");
            assert_eq!(ours.to_le(), official.to_byte_array(), "little-endian ABI form");
        }
    }

    // Signed tokens whose claims are wrong are refused with the reason: expired, an
    // `hex_identity` that is not the one `iss`/`sub` derive, another issuer.
    #[test]
    fn signed_tokens_with_bad_claims_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let identity = Identity::from_claims(LOCAL_ISSUER, "someone");
        let claims = |exp: Json, hex: &str, iss: &str| json!({"hex_identity": hex, "sub": "someone", "iss": iss, "iat": now_secs(), "exp": exp});
        let good = keys.sign(claims(json!(now_secs() + 60), &identity.to_hex(), LOCAL_ISSUER), identity);
        assert_eq!(keys.verify(&good.token).unwrap().identity, identity);
        let expired = keys.sign(claims(json!(now_secs() - 1), &identity.to_hex(), LOCAL_ISSUER), identity);
        assert_eq!(keys.verify(&expired.token).unwrap_err(), AuthError::Expired);
        let other = Identity::from_claims(LOCAL_ISSUER, "someone else").to_hex();
        let mismatched = keys.sign(claims(Json::Null, &other, LOCAL_ISSUER), identity);
        assert!(matches!(keys.verify(&mismatched.token), Err(AuthError::BadClaims(_))));
        let foreign = keys.sign(claims(Json::Null, &identity.to_hex(), "https://elsewhere"), identity);
        assert!(matches!(keys.verify(&foreign.token), Err(AuthError::UnknownIssuer(_))));
    }
}
