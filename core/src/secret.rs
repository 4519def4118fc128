//! A value that must never reach a log: its `Debug` says only that it is there, so a struct
//! holding one can derive `Debug` and be logged whole. The value is read with
//! [`Secret::expose`], which makes every place that uses it easy to find.

use serde::{Deserialize, Serialize};

/// A password, token or key. Serialized as the bare value (config files and the spec
/// handed to a child need it); never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: for the one place that sends, compares or hashes it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_keeps_it() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Login {
            user: String,
            password: Secret<String>,
        }
        let login = Login { user: "ann".into(), password: Secret::new("hunter2".into()) };
        let printed = format!("{login:?} {login:#?}");
        assert!(!printed.contains("hunter2") && printed.contains("ann"), "{printed}");
        let json = serde_json::to_string(&login).expect("json");
        assert_eq!(json, r#"{"user":"ann","password":"hunter2"}"#);
        let back: Login = serde_json::from_str(&json).expect("back");
        assert_eq!(back.password.expose(), "hunter2");
    }
}
