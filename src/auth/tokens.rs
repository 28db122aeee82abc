//! JWT issue and verification: HS256 pinned, times checked against the configured [`Clock`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthConfig, Clock, RejectReason};

/// The largest token accepted; ours are ~400 bytes, so anything this long is hostile.
pub const MAX_TOKEN_LEN: usize = 4096;

/// How many verified access tokens are remembered before the memo is cleared.
const VERIFIED_MEMO_CAP: usize = 16_384;

/// A user's database id.
pub type UserId = i64;

/// `typ` claim: what a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenType {
    /// Authenticates requests.
    Access,
    /// Buys a new pair at `/auth/refresh`, once.
    Refresh,
}

/// The claims redkit issues.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Claims<'a> {
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: &'a str,
    pub sid: &'a str,
    pub typ: TokenType,
    pub iss: &'a str,
    pub aud: &'a str,
}

/// The claims as received: every one optional so a missing claim is told apart from a
/// mistyped one (a wrong type fails the whole parse: `malformed-claims`).
#[derive(Debug, Deserialize)]
struct Received {
    sub: Option<String>,
    iat: Option<u64>,
    nbf: Option<u64>,
    exp: Option<u64>,
    jti: Option<String>,
    sid: Option<String>,
    typ: Option<TokenType>,
    iss: Option<String>,
    aud: Option<String>,
}

/// A verified token's identity: who, which session, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The user.
    pub user_id: UserId,
    /// The session (one per login).
    pub sid: String,
    /// The token's own id.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// Keys, validation and lifetimes: everything to issue and verify tokens without I/O.
#[derive(Clone)]
pub(crate) struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Arc<Validation>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub leeway: i64,
    pub clock: Arc<dyn Clock>,
    /// Access tokens whose signature and claims already verified, by their exact text: a
    /// repeat request skips HMAC and JSON (only `exp` is re-checked; time only moves forward,
    /// so `nbf` and `iat` stay satisfied). Bounded: cleared when full.
    verified: Arc<RwLock<HashMap<Box<str>, Principal>>>,
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // unwrap: the OS random source does not fail on supported platforms; without it no secure
    // token can be made, so stopping is right.
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes
}

/// A random 128-bit id as 32 hex digits (session and token ids).
pub(crate) fn random_id() -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in random_bytes::<16>() {
        // unwrap: writing to a String cannot fail.
        write!(s, "{b:02x}").unwrap();
    }
    s
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        // Pinned: only HS256, whatever the header says. Times, iss and aud are checked below
        // against our clock, so the crate's own wall-clock checks are off.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(config.secret.bytes()),
            decoding: DecodingKey::from_secret(config.secret.bytes()),
            validation: Arc::new(validation),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: secs(config.access_ttl),
            refresh_ttl: secs(config.refresh_ttl),
            leeway: secs(config.leeway),
            clock: config.clock.clone(),
            verified: Arc::default(),
        }
    }

    fn ttl(&self, typ: TokenType) -> i64 {
        match typ {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        }
    }

    /// Signs the token with exactly these claims: the same arguments give the same bytes (the
    /// header and the claims serialise in a fixed order, and HS256 is deterministic), which is
    /// how every instance answers the same successor to a refresh replayed within the grace
    /// window.
    pub fn sign(
        &self,
        user: UserId,
        sid: &str,
        typ: TokenType,
        jti: &str,
        iat: i64,
        exp: i64,
    ) -> Result<String, String> {
        let claims = Claims {
            sub: user.to_string(),
            iat: iat.max(0).unsigned_abs(),
            nbf: iat.max(0).unsigned_abs(),
            exp: exp.max(0).unsigned_abs(),
            jti,
            sid,
            typ,
            iss: &self.issuer,
            aud: &self.audience,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// The jti of the refresh token that succeeds `jti` in session `sid`: a keyed hash (HMAC
    /// with the signing secret), so that it is stored nowhere, every instance derives the same,
    /// and nobody without the secret can predict it. The message has a NUL byte, which no
    /// JWT signing input has, so it is never a token's signature.
    pub fn successor_jti(&self, sid: &str, jti: &str) -> Result<String, String> {
        let message = format!("redkit refresh successor\0{sid}\0{jti}");
        let mac = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::HS256)
            .map_err(|e| e.to_string())?;
        // 32 base64url characters: 192 bits, as unguessable as a random jti.
        Ok(mac.chars().take(32).collect())
    }

    /// [`verify`](Self::verify) for access tokens, remembering tokens that verified.
    pub fn verify_access(&self, token: &str) -> Result<Principal, RejectReason> {
        let memo = self
            .verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned();
        if let Some(p) = memo {
            if p.exp.saturating_add(self.leeway) <= self.clock.now_secs() {
                return Err(RejectReason::Expired);
            }
            return Ok(p);
        }
        let p = self.verify(token, TokenType::Access)?;
        let mut memo = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if memo.len() >= VERIFIED_MEMO_CAP {
            memo.clear();
        }
        memo.insert(token.into(), p.clone());
        Ok(p)
    }

    /// Verifies signature, shape, times, issuer, audience and type. No revocation check.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Principal, RejectReason> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(RejectReason::TooLong);
        }
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(RejectReason::Malformed);
        }
        let data = jsonwebtoken::decode::<Received>(token, &self.decoding, &self.validation)
            .map_err(|e| classify(token, &e))?;
        let c = data.claims;
        let exp = c.exp.ok_or(RejectReason::MissingClaim("exp"))?;
        let jti = c.jti.ok_or(RejectReason::MissingClaim("jti"))?;
        let typ = c.typ.ok_or(RejectReason::MissingClaim("typ"))?;
        let iat = c.iat.ok_or(RejectReason::MissingClaim("iat"))?;
        let sid = c.sid.ok_or(RejectReason::MissingClaim("sid"))?;
        let sub = c.sub.ok_or(RejectReason::MissingClaim("sub"))?;
        let nbf = c.nbf.unwrap_or(iat);
        // Out-of-range numbers cannot be real times: treat them as mistyped.
        let to_i64 = |v: u64| i64::try_from(v).map_err(|_| RejectReason::MalformedClaims);
        let (exp, iat, nbf) = (to_i64(exp)?, to_i64(iat)?, to_i64(nbf)?);
        if c.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(RejectReason::WrongIssuer);
        }
        if c.aud.as_deref() != Some(self.audience.as_str()) {
            return Err(RejectReason::WrongAudience);
        }
        if typ != expected {
            return Err(RejectReason::WrongType);
        }
        let now = self.clock.now_secs();
        if exp.saturating_add(self.leeway) <= now {
            return Err(RejectReason::Expired);
        }
        if nbf > now + self.leeway || iat > now + self.leeway {
            return Err(RejectReason::NotYetValid);
        }
        if exp.saturating_sub(iat) > self.ttl(typ) {
            return Err(RejectReason::LifetimeTooLong);
        }
        let user_id = sub
            .parse::<UserId>()
            .map_err(|_| RejectReason::MalformedClaims)?;
        Ok(Principal {
            user_id,
            sid,
            jti,
            iat,
            exp,
        })
    }
}

/// Maps a decoding failure to a reason; runs only on the failure path.
fn classify(token: &str, err: &jsonwebtoken::errors::Error) -> RejectReason {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => RejectReason::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => RejectReason::WrongAlgorithm,
        ErrorKind::Json(_) => {
            // Either the header (e.g. `alg: none`, unknown to the crate) or the claims.
            use base64::Engine;
            let header = token.split('.').next().unwrap_or_default();
            let parsed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            match parsed {
                Some(h) if h.get("alg").and_then(|a| a.as_str()) != Some("HS256") => {
                    RejectReason::WrongAlgorithm
                }
                Some(_) => RejectReason::MalformedClaims,
                None => RejectReason::Malformed,
            }
        }
        _ => RejectReason::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auth::SecretKey, clock::ManualClock};

    fn tokens(secret: &[u8]) -> Tokens {
        let config = AuthConfig {
            secret: SecretKey::given(secret).unwrap(),
            clock: Arc::new(ManualClock::starting_now()),
            ..AuthConfig::default()
        };
        Tokens::new(&config)
    }

    /// A successor jti depends on the secret, the session and the spent jti, and on nothing
    /// else: two instances with one secret derive the same, and sign the same bytes.
    #[test]
    fn successors_are_derived_not_stored() {
        let (a, b) = (tokens(&[7; 32]), tokens(&[7; 32]));
        let other = tokens(&[8; 32]);
        let jti = a.successor_jti("s1", "j1").unwrap();
        assert_eq!(jti.len(), 32);
        assert_eq!(jti, b.successor_jti("s1", "j1").unwrap());
        assert_ne!(jti, a.successor_jti("s2", "j1").unwrap());
        assert_ne!(jti, a.successor_jti("s1", "j2").unwrap());
        assert_ne!(jti, other.successor_jti("s1", "j1").unwrap());
        let sign = |t: &Tokens| t.sign(1, "s1", TokenType::Refresh, &jti, 100, 200).unwrap();
        assert_eq!(sign(&a), sign(&b));
        assert_ne!(sign(&a), sign(&other));
    }
}
