//! Database and measurement name rules (COMPAT.md): both become object-store path segments and
//! SQL identifiers, so only a conservative ASCII alphabet is allowed.

use super::{IngestError, shorten};

/// Longest database name, in characters.
const MAX_DATABASE_NAME: usize = 64;

/// Longest measurement name, in characters.
const MAX_MEASUREMENT_NAME: usize = 128;

/// Checks a database name against `^[A-Za-z][A-Za-z0-9_-]{0,63}$`.
///
/// # Errors
///
/// [`IngestError::Invalid`] naming the database when it does not match.
pub fn validate_database_name(name: &str) -> Result<(), IngestError> {
    if is_valid_name(name, MAX_DATABASE_NAME) {
        return Ok(());
    }
    Err(IngestError::Invalid(format!(
        "invalid database name \"{}\": must start with a letter and contain only letters, \
         digits, '_' and '-', at most {MAX_DATABASE_NAME} characters",
        shorten(name)
    )))
}

/// Checks a measurement name against `^[A-Za-z][A-Za-z0-9_-]*$`, at most 128 characters.
///
/// # Errors
///
/// [`IngestError::Invalid`] naming the measurement when it does not match.
pub fn validate_measurement_name(name: &str) -> Result<(), IngestError> {
    if is_valid_name(name, MAX_MEASUREMENT_NAME) {
        return Ok(());
    }
    Err(IngestError::Invalid(format!(
        "invalid measurement name \"{}\": must start with a letter and contain only letters, \
         digits, '_' and '-', at most {MAX_MEASUREMENT_NAME} characters",
        shorten(name)
    )))
}

/// Returns whether `name` is `[A-Za-z][A-Za-z0-9_-]*` and at most `max_len` bytes (all allowed
/// characters are ASCII, so bytes and characters agree).
fn is_valid_name(name: &str, max_len: usize) -> bool {
    let bytes = name.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= max_len
        && first.is_ascii_alphabetic()
        && rest
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_accept_valid_database_names() {
        for name in ["a", "Z", "db_1", "my-db", &format!("a{}", "b".repeat(63))] {
            assert_eq!(validate_database_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn test_should_reject_invalid_database_names() {
        for name in [
            "",
            "1db",
            "_db",
            "-db",
            "db.x",
            "db x",
            "db/x",
            "dé",
            &format!("a{}", "b".repeat(64)),
        ] {
            let error = validate_database_name(name).unwrap_err();
            assert!(
                error.to_string().starts_with("invalid database name"),
                "{error}"
            );
        }
    }

    #[test]
    fn test_should_bound_measurement_names_at_128_characters() {
        let longest = format!("m{}", "x".repeat(127));
        assert_eq!(validate_measurement_name(&longest), Ok(()));
        let too_long = format!("m{}", "x".repeat(128));
        assert!(validate_measurement_name(&too_long).is_err());
    }

    #[test]
    fn test_should_reject_invalid_measurement_names() {
        for name in [
            "", "9cpu", "cpu load", "cpu,x", "cpu=x", "cpu.x", "ü", "cpu\n",
        ] {
            let error = validate_measurement_name(name).unwrap_err();
            assert!(
                error.to_string().starts_with("invalid measurement name"),
                "{error}"
            );
        }
        assert_eq!(validate_measurement_name("cpu_load-2"), Ok(()));
    }
}
