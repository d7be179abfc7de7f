//! Accounts and bearer tokens: register, login, the current user, logout.
//!
//! Passwords are hashed with Argon2id on the blocking pool, at most `HASH_CONCURRENCY` at once. Tokens are 32 random bytes handed
//! to the client in hex; the database keeps only their HMAC-SHA-256 under `TOKEN_SECRET`, so a
//! copy of the database does not hold a usable token, and logout revokes the row. Login answers
//! unknown emails and wrong passwords with the same error after the same amount of work.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use genesis_model::{self as model, PasswordCost};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;

use crate::migrate::hex;
use crate::{ApiError, AppState};

/// How long a token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Bounds the work one request can ask of the KDF.
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_EMAIL_BYTES: usize = 254;

/// The body of register and login. `Debug` hides the password.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct User {
    id: i64,
    email: String,
    created_at: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// RFC 3339 in UTC, computed by PostgreSQL so that no date library is needed.
const CREATED_AT: &str =
    r#"to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

/// `POST /auth/register`.
pub(crate) async fn register(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let email = normalise_email(&body.email)?;
    check_password(&body.password)?;
    let cost = state.password_cost();
    let hash = state
        .hashing()
        .run(move || hash_password(&body.password, cost))
        .await??;
    let client = state.pool().get().await?;
    let sql = format!(
        "insert into users (email, password_hash) values ($1, $2)
         on conflict (email) do nothing
         returning id, email, {CREATED_AT}"
    );
    let row = client
        .query_opt(&sql, &[&email, &hash])
        .await?
        .ok_or(ApiError::EmailTaken)?;
    let user = User {
        id: row.get(0),
        email: row.get(1),
        created_at: row.get(2),
    };
    tracing::info!(user_id = user.id, "registered");
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /auth/login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Credentials>,
) -> Result<Json<TokenResponse>, ApiError> {
    // An address that cannot exist is answered like any unknown one.
    let email = normalise_email(&body.email).unwrap_or_default();
    if body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::InvalidCredentials);
    }
    // The connection goes back to the pool while the password is checked.
    let row = state
        .pool()
        .get()
        .await?
        .query_opt(
            "select id, password_hash from users where email = $1",
            &[&email],
        )
        .await?;
    let (user_id, stored) = match row {
        Some(row) => (Some(row.get::<_, i64>(0)), Some(row.get::<_, String>(1))),
        None => (None, None),
    };
    // Without a user, verify against a dummy hash anyway so that the answer takes as long.
    let password = body.password;
    let cost = state.password_cost();
    let verified = state
        .hashing()
        .run(move || {
            let stored = stored.unwrap_or_else(|| dummy_hash(cost).to_owned());
            verify_password(&password, &stored)
        })
        .await?;
    let Some(user_id) = user_id.filter(|_| verified) else {
        return Err(ApiError::InvalidCredentials);
    };

    let token = new_token();
    let ttl = TOKEN_TTL.as_secs_f64();
    state
        .pool()
        .get()
        .await?
        .execute(
            "insert into auth_tokens (user_id, token_hash, expires_at)
             values ($1, $2, now() + make_interval(secs => $3))",
            &[&user_id, &token_hash(&state, &token), &ttl],
        )
        .await?;
    tracing::info!(user_id, "logged in");
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "bearer",
        expires_in: TOKEN_TTL.as_secs(),
    }))
}

/// `GET /auth/me`.
pub(crate) async fn me(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
) -> Result<Json<User>, ApiError> {
    let client = state.pool().get().await?;
    let sql = format!(
        "select u.id, u.email, {} from auth_tokens t join users u on u.id = t.user_id
         where t.token_hash = $1 and t.revoked_at is null and t.expires_at > now()",
        CREATED_AT.replace("created_at", "u.created_at")
    );
    let row = client
        .query_opt(&sql, &[&token_hash(&state, &token)])
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(User {
        id: row.get(0),
        email: row.get(1),
        created_at: row.get(2),
    }))
}

/// `POST /auth/logout`: revokes the token it is called with.
pub(crate) async fn logout(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
) -> Result<StatusCode, ApiError> {
    let client = state.pool().get().await?;
    let revoked = client
        .execute(
            "update auth_tokens set revoked_at = now()
             where token_hash = $1 and revoked_at is null and expires_at > now()",
            &[&token_hash(&state, &token)],
        )
        .await?;
    if revoked == 0 {
        return Err(ApiError::Unauthorized);
    }
    tracing::info!("logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// The one form of an address that is stored and compared: trimmed, NFC, case-folded, then NFC
/// again (folding can undo it). Its shape is checked, not its deliverability.
///
/// Refused rather than mapped: invisible characters (Unicode's Default_Ignorable_Code_Point,
/// which holds the zero-width and bidi controls) and compatibility forms such as fullwidth
/// letters, which NFKC would change; a mail server would not read them as we would.
pub(crate) fn normalise_email(raw: &str) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::Validation(format!("email is not a valid address: {why}"));
    let trimmed = raw.trim();
    if trimmed.chars().any(is_default_ignorable) {
        return Err(invalid("it holds an invisible or bidi control character"));
    }
    let nfc: String = trimmed.nfc().collect();
    if nfc.nfkc().ne(nfc.chars()) {
        return Err(invalid(
            "it holds a compatibility character (such as a fullwidth letter); \
             write it in its usual form",
        ));
    }
    let email: String = caseless::default_case_fold_str(&nfc).nfc().collect();
    let well_formed = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with(['.', '-'])
                && !domain.ends_with(['.', '-'])
                && !domain.contains("..")
        }
        None => false,
    };
    let clean = !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed && clean && email.len() <= MAX_EMAIL_BYTES {
        Ok(email)
    } else {
        Err(invalid("expected name@domain.tld"))
    }
}

/// Unicode 15's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters that
/// render as nothing, among them U+200B..U+200F and the bidi controls U+202A..U+202E and
/// U+2066..U+2069.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::Validation(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::Validation(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, at the configured cost
/// (`PASSWORD_HASH_COST`). A hash records its own cost, so verifying needs no setting.
fn hash_password(password: &str, cost: PasswordCost) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|err| ApiError::Internal(format!("argon2 parameters {}: {err}", cost.name)))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| ApiError::Internal(format!("hash a password: {err}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password at `cost`, so that an unknown email costs what a known one does.
fn dummy_hash(cost: PasswordCost) -> &'static str {
    static DUMMY: [OnceLock<String>; model::PASSWORD_COSTS.len()] =
        [const { OnceLock::new() }; model::PASSWORD_COSTS.len()];
    let slot = model::PASSWORD_COSTS
        .iter()
        .position(|known| *known == cost)
        .expect("the settings only give the model's costs");
    DUMMY[slot].get_or_init(|| {
        let mut password = [0u8; 32];
        OsRng.fill_bytes(&mut password);
        hash_password(&hex(&password), cost).expect("hashing a random password succeeds")
    })
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn token_hash(state: &AppState, token: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(state.token_secret().expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The token of an `Authorization: Bearer <token>` header; anything else is a 401.
#[derive(Debug)]
pub(crate) struct BearerToken(String);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::Unauthorized)?;
        let token = token.trim();
        // Tokens are 64 hex digits; anything else cannot be one and is not looked up.
        if !scheme.eq_ignore_ascii_case("bearer")
            || token.len() != 64
            || !token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ApiError::Unauthorized);
        }
        Ok(BearerToken(token.to_ascii_lowercase()))
    }
}

/// `Json<T>` whose rejections use the API's error shape.
#[derive(Debug)]
pub(crate) struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state)
            .await
            .map_err(|rejection: JsonRejection| ApiError::from(rejection))?;
        Ok(ValidJson(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_email(raw: &str, expected: Option<&str>) {
        assert_eq!(
            normalise_email(raw).ok().as_deref(),
            expected,
            "input: {raw:?}"
        );
    }

    #[test]
    fn emails() {
        check_email(" Alice@Example.COM ", Some("alice@example.com"));
        check_email("a.b+tag@sub.example.org", Some("a.b+tag@sub.example.org"));
        check_email("no-at-sign.example.com", None);
        check_email("@example.com", None);
        check_email("a@localhost", None);
        check_email("a@b@example.com", None);
        check_email("a b@example.com", None);
        check_email("a@example..com", None);
        check_email("a@.example.com", None);
        check_email("", None);
        check_email(&format!("{}@example.com", "x".repeat(65)), None);
        // NFD and NFC spellings are one address; so are cases, also beyond ASCII.
        check_email("Jose\u{301}@example.com", Some("jos\u{e9}@example.com"));
        check_email("jos\u{e9}@example.com", Some("jos\u{e9}@example.com"));
        check_email("STRASSE@example.com", Some("strasse@example.com"));
        check_email("stra\u{df}e@example.com", Some("strasse@example.com"));
        check_email(
            "\u{3a3}\u{3c9}\u{3c2}@example.com",
            Some("\u{3c3}\u{3c9}\u{3c3}@example.com"),
        );
        // Invisible and bidi controls are refused, not stripped.
        for invisible in [
            '\u{200B}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{202E}',
            '\u{2066}',
            '\u{AD}',
            '\u{E0041}',
        ] {
            check_email(&format!("ali{invisible}ce@example.com"), None);
        }
        // Fullwidth and other compatibility forms are refused, not mapped.
        check_email("\u{FF41}lice@example.com", None);
        check_email("alice@example\u{FF0E}com", None);
        check_email("\u{FB01}@example.com", None);
    }

    #[test]
    fn passwords() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        // Characters, not bytes: seven two-byte characters are too short.
        assert!(check_password("ééééééé").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn hashes_verify_and_differ() {
        for (cost, phc) in [
            (
                model::PASSWORD_COST_PRODUCTION,
                "$argon2id$v=19$m=19456,t=2,p=1$",
            ),
            (model::PASSWORD_COST_MINIMUM, "$argon2id$v=19$m=8,t=1,p=1$"),
        ] {
            let a = hash_password("correct horse", cost).unwrap();
            let b = hash_password("correct horse", cost).unwrap();
            assert!(a.starts_with(phc), "{a}");
            assert_ne!(a, b, "each hash has its own salt");
            assert!(verify_password("correct horse", &a));
            assert!(!verify_password("wrong horse", &a));
            assert!(!verify_password("correct horse", "not a phc string"));
            assert!(!verify_password("anything", dummy_hash(cost)));
            assert!(dummy_hash(cost).starts_with(phc));
        }
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
