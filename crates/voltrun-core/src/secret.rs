//! Secrets (SPEC §12): what a valid name and value are, and what a function may name. The
//! values themselves never pass through core: the store seals and opens them (vault.rs).

/// Largest secret value (bytes).
pub const MAX_SECRET_VALUE_BYTES: usize = 32 * 1024;
/// Secrets one function may name.
pub const MAX_FUNCTION_SECRETS: usize = 50;

/// `^[A-Z_][A-Z0-9_]{0,127}$`: the name is also the environment variable a run sees.
pub fn is_valid_secret_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 128 && (b[0].is_ascii_uppercase() || b[0] == b'_') && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// The message of a bad secret name.
pub const SECRET_NAME_RULE: &str = "must match ^[A-Z_][A-Z0-9_]{0,127}$ (upper-case letters, digits and _)";

/// Variables a secret may not become: the ones every instance gets from the server (a secret
/// of that name would be silently ignored or would break the runtime).
pub fn is_reserved_variable(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "LANG" | "TZ" | "LAMBDA_TASK_ROOT" | "LAMBDA_RUNTIME_DIR" | "NODE_PATH" | "_HANDLER" | "AWS_EXECUTION_ENV" | "AWS_REGION" | "AWS_DEFAULT_REGION"
    ) || name.starts_with("VOLTRUN_")
        || name.starts_with("AWS_LAMBDA_")
}

/// Why a secret's value is refused, if it is: too large (the bool says so) or holding a NUL
/// (an environment variable cannot).
pub fn check_value(value: &str) -> Result<(), (bool, String)> {
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err((true, format!("value: at most {MAX_SECRET_VALUE_BYTES} bytes (32 KiB)")));
    }
    if value.contains('\0') {
        return Err((false, "value: must not contain NUL bytes".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        for ok in ["A", "_", "DB_PASSWORD", "X1", &format!("A{}", "B".repeat(127))] {
            assert!(is_valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "a", "1A", "A-B", "A B", "Ä", &format!("A{}", "B".repeat(128))] {
            assert!(!is_valid_secret_name(bad), "{bad}");
        }
        assert!(is_reserved_variable("VOLTRUN_FUNCTION_ID") && is_reserved_variable("PATH") && !is_reserved_variable("API_TOKEN"));
        assert!(check_value(&"x".repeat(MAX_SECRET_VALUE_BYTES)).is_ok());
        assert!(check_value(&"x".repeat(MAX_SECRET_VALUE_BYTES + 1)).unwrap_err().0);
        assert!(!check_value("a\0b").unwrap_err().0);
    }
}
