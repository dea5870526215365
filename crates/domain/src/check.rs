//! Field checks shared by the domain processors, each returning a [`Rejection`] that names the
//! field.

use evalstream_audit::chain::MAX_OCCURRED_AT_MS;

use crate::reject::Rejection;

/// Largest amount in minor units: 2^53 − 1, the largest integer every JSON reader (and the
/// RFC 8785 canonical form that proofs and digests use) represents exactly.
pub const MAX_AMOUNT_MINOR: i64 = (1 << 53) - 1;

/// `value` must not be empty (or only whitespace).
pub fn non_empty(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::field(field, "must not be empty"));
    }
    Ok(())
}

/// An event time: positive, and small enough to be an exact JSON number (it becomes the
/// `occurred_at` of audit events, which the chain requires to be at most 2^53 − 1).
pub fn event_time(field: &str, ms: i64) -> Result<(), Rejection> {
    if ms <= 0 || ms > MAX_OCCURRED_AT_MS {
        return Err(Rejection::field(
            field,
            format!("{ms} is not a time in milliseconds since the epoch (1 ..= 2^53 - 1)"),
        ));
    }
    Ok(())
}

/// An amount in minor units: positive and at most [`MAX_AMOUNT_MINOR`].
pub fn amount(field: &str, minor: i64) -> Result<(), Rejection> {
    if minor <= 0 || minor > MAX_AMOUNT_MINOR {
        return Err(Rejection::field(field, format!("{minor} is not in 1 ..= 2^53 - 1")));
    }
    Ok(())
}

/// An ISO 4217 alphabetic code: three upper-case ASCII letters.
pub fn currency(field: &str, code: &str) -> Result<(), Rejection> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Rejection::field(
            field,
            format!("{code:?} is not an ISO 4217 code (three upper-case letters)"),
        ));
    }
    Ok(())
}

/// The record key must equal the natural id `id` (named `id_field`).
pub fn key_is(key: Option<&str>, id_field: &str, id: &str) -> Result<(), Rejection> {
    if key != Some(id) {
        return Err(Rejection::key(key, id_field, id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field() {
        assert!(non_empty("model_id", "m").is_ok());
        assert_eq!(non_empty("model_id", " ").unwrap_err().detail, "model_id: must not be empty");
        assert!(event_time("t", 1).is_ok());
        assert!(event_time("t", 0).is_err());
        assert!(event_time("t", MAX_OCCURRED_AT_MS + 1).is_err());
        assert!(amount("a", MAX_AMOUNT_MINOR).is_ok());
        assert!(amount("a", 0).is_err());
        assert!(amount("a", MAX_AMOUNT_MINOR + 1).is_err());
        assert!(currency("c", "EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(currency("c", bad).is_err(), "{bad}");
        }
        assert!(key_is(Some("a"), "id", "a").is_ok());
        assert_eq!(key_is(Some("b"), "id", "a").unwrap_err().code, "key_mismatch");
        assert_eq!(key_is(None, "id", "a").unwrap_err().code, "key_mismatch");
    }
}
