//! `ProfilerBuilder::from_env()`: the environment variables, parsed into builder calls.
//! The table of variables is in `from_env`'s documentation (the one place it is written).

use std::time::Duration;

use super::ProfilerBuilder;
use crate::error::BuildError;
use crate::resource::{attribute, RESOURCE_ATTRIBUTES_VAR};

/// `SPAN_PROFILER_ENABLED`: the switch read by every `start()`.
pub(crate) const ENABLED_VAR: &str = "SPAN_PROFILER_ENABLED";

impl ProfilerBuilder {
    /// Defaults, then the `PYROSCOPE_*` environment variables, then the builder calls made after it
    /// (a later call replaces a variable's value). Empty variables count as unset. A
    /// malformed value is reported by [`start`](Self::start) as a
    /// [`BuildError`](crate::BuildError) naming the variable; nothing here panics.
    ///
    /// The variables and their formats are listed once, in the crate docs'
    /// [environment-variable table](crate#environment-variables).
    ///
    /// `SPAN_PROFILER_ENABLED` is honoured however the builder was made, so profiling can
    /// be switched off in production without a rebuild.
    ///
    /// ```no_run
    /// let profiler = span_profiler::ProfilerBuilder::from_env()
    ///     .tag("region", "eu-west-1")
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_env() -> Self {
        Self::default().apply_env(&|name| std::env::var(name).ok())
    }

    /// Applies the variables read through `env` (tests pass a map).
    pub(crate) fn apply_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut first_error = None;
        let mut fail = |err: BuildError| {
            first_error.get_or_insert(err);
        };
        if let Some(address) = get("PYROSCOPE_SERVER_ADDRESS") {
            self = self.server_address(address.trim());
            self.note_env("server_address", "PYROSCOPE_SERVER_ADDRESS");
        }
        let resource = get(RESOURCE_ATTRIBUTES_VAR);
        let from_resource = |key: &str| resource.as_deref().and_then(|r| attribute(r, key));
        if let Some(name) = get("PYROSCOPE_APPLICATION_NAME") {
            self = self.application_name(name.trim());
            self.note_env("application_name", "PYROSCOPE_APPLICATION_NAME");
        } else if let Some(name) = from_resource("service.name") {
            // The SDK's resource: `service.name` there wins over `OTEL_SERVICE_NAME`.
            self = self.application_name(name);
            self.note_env("application_name", RESOURCE_ATTRIBUTES_VAR);
        }
        if let Some(namespace) = from_resource("service.namespace") {
            self = self.service_namespace(namespace);
            self.note_env("service_namespace", RESOURCE_ATTRIBUTES_VAR);
        }
        match (get("PYROSCOPE_BASIC_AUTH_USER"), get("PYROSCOPE_BASIC_AUTH_PASSWORD")) {
            (Some(user), Some(password)) => {
                self = self.basic_auth(user, password);
                self.note_env("basic_auth", "PYROSCOPE_BASIC_AUTH_USER");
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => fail(BuildError::invalid(
                "PYROSCOPE_BASIC_AUTH_USER",
                "only one of PYROSCOPE_BASIC_AUTH_USER and PYROSCOPE_BASIC_AUTH_PASSWORD is set; set both or neither".into(),
            )),
        }
        if let Some(token) = get("PYROSCOPE_AUTH_TOKEN") {
            self = self.bearer_token(token);
            self.note_env("bearer_token", "PYROSCOPE_AUTH_TOKEN");
        }
        if let Some(tenant) = get("PYROSCOPE_TENANT_ID") {
            self = self.tenant_id(tenant.trim());
            self.note_env("tenant_id", "PYROSCOPE_TENANT_ID");
        }
        if let Some(labels) = get("PYROSCOPE_LABELS") {
            match parse_labels(&labels) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        self = self.tag(k, v);
                    }
                    self.note_env("tag", "PYROSCOPE_LABELS");
                }
                Err(err) => fail(err),
            }
        }
        if let Some(interval) = get("PYROSCOPE_UPLOAD_INTERVAL") {
            match parse_duration(interval.trim()) {
                Some(d) => {
                    self = self.upload_interval(d);
                    self.note_env("upload_interval", "PYROSCOPE_UPLOAD_INTERVAL");
                }
                None => fail(BuildError::invalid(
                    "PYROSCOPE_UPLOAD_INTERVAL",
                    format!("`{interval}` is not a duration; write e.g. `10s`, `1m30s` or `500ms`"),
                )),
            }
        }
        if let Some(rate) = get("PYROSCOPE_SAMPLE_RATE") {
            match rate.trim().parse::<u32>() {
                Ok(hz) => {
                    self = self.sample_rate(hz);
                    self.note_env("sample_rate", "PYROSCOPE_SAMPLE_RATE");
                }
                Err(_) => fail(BuildError::invalid(
                    "PYROSCOPE_SAMPLE_RATE",
                    format!("`{rate}` is not a whole number of Hz; write e.g. `100`"),
                )),
            }
        }
        let (builder, otlp_error) = self.apply_otlp_env(&get);
        self = builder;
        if let Some(err) = otlp_error {
            fail(err);
        }
        if self.env_error.is_none() {
            self.env_error = first_error;
        }
        self
    }
}

/// An option whose value came from an environment variable, with that value as the
/// builder held it then: a later builder call that changes the option makes the error
/// name the option instead of the variable.
#[derive(Debug, Clone)]
pub(crate) struct EnvOrigin {
    option: &'static str,
    var: &'static str,
    value: String,
}

impl ProfilerBuilder {
    /// The option's current value, for comparing with the value set from the environment.
    fn option_value(&self, option: &str) -> String {
        match option {
            "server_address" => format!("{:?}", self.server_address),
            "application_name" => format!("{:?}", self.application_name),
            "service_namespace" => format!("{:?}", self.service_namespace),
            "basic_auth" | "bearer_token" => format!("{:?}", self.auth),
            "tenant_id" => format!("{:?}", self.tenant_id),
            "tag" => format!("{:?}", self.tags),
            "upload_interval" => format!("{:?}", self.upload_interval),
            "sample_rate" => self.sample_rate.to_string(),
            _ => String::new(),
        }
    }

    fn note_env(&mut self, option: &'static str, var: &'static str) {
        let value = self.option_value(option);
        self.env_origins.retain(|o| o.option != option);
        self.env_origins.push(EnvOrigin { option, var, value });
    }

    /// The variables whose values the options still hold: `(option, variable)`.
    pub(crate) fn env_options(&self) -> Vec<(&'static str, &'static str)> {
        self.env_origins
            .iter()
            .filter(|o| self.option_value(o.option) == o.value)
            .map(|o| (o.option, o.var))
            .collect()
    }
}

/// Makes an error about an option whose value came from the environment name the
/// variable, so the user knows where to fix it.
pub(crate) fn name_the_variable(
    err: BuildError,
    env_options: &[(&'static str, &'static str)],
) -> BuildError {
    let BuildError::InvalidOption { option, reason } = err;
    match env_options.iter().find(|(o, _)| *o == option) {
        Some((option, var)) => {
            BuildError::invalid(var, format!("{reason} (the value of `{option}`)"))
        }
        None => BuildError::InvalidOption { option, reason },
    }
}

/// Reads `SPAN_PROFILER_ENABLED` (unset or empty: enabled).
pub(crate) fn enabled(env: &dyn Fn(&str) -> Option<String>) -> Result<bool, BuildError> {
    let Some(value) = env(ENABLED_VAR) else {
        return Ok(true);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(BuildError::invalid(
            ENABLED_VAR,
            format!("`{value}` is not a switch; use `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`)"),
        )),
    }
}

/// `k=v,k=v` (spaces around pairs ignored, empty pairs skipped). Keys and values are
/// checked by the tag rules at start.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, BuildError> {
    let mut pairs = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((key, value)) = item.split_once('=') else {
            return Err(BuildError::invalid(
                "PYROSCOPE_LABELS",
                format!("`{item}` has no `=`; write the labels as `key=value,key=value`"),
            ));
        };
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// Go-style durations: one or more `<number><unit>` with units `h`, `m`, `s`, `ms`, `us`
/// (`µs`), `ns`, e.g. `10s`, `1m30s`, `1.5s`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        // Longest unit first, so `ms` is not read as `m` followed by `s`.
        let (unit, scale) = UNITS
            .iter()
            .filter(|(unit, _)| rest.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        rest = &rest[unit.len()..];
        total += number * scale;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sink::upload::{Auth, Protocol};

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn durations_are_read_like_go_writes_them() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "10x", "1..5s", "-1s", "10 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_variable_of_the_table_sets_its_option() {
        let env = env_of(&[
            ("PYROSCOPE_SERVER_ADDRESS", "http://127.0.0.1:4040"),
            ("PYROSCOPE_APPLICATION_NAME", "checkout"),
            ("PYROSCOPE_BASIC_AUTH_USER", "123"),
            ("PYROSCOPE_BASIC_AUTH_PASSWORD", "glc_secret"),
            ("PYROSCOPE_TENANT_ID", "team-a"),
            ("PYROSCOPE_LABELS", "region=eu, pod=p-1,"),
            ("PYROSCOPE_UPLOAD_INTERVAL", "15s"),
            ("PYROSCOPE_SAMPLE_RATE", "250"),
        ]);
        let b = ProfilerBuilder::default().apply_env(&env);
        assert_eq!(b.server_address.as_deref(), Some("http://127.0.0.1:4040"));
        assert_eq!(b.application_name.as_deref(), Some("checkout"));
        assert!(
            matches!(&b.auth, Auth::Basic { user, password } if user == "123" && password.expose() == "glc_secret")
        );
        assert_eq!(b.tenant_id.as_deref(), Some("team-a"));
        assert_eq!(
            b.tags,
            vec![
                ("region".to_string(), "eu".to_string()),
                ("pod".to_string(), "p-1".to_string())
            ]
        );
        assert_eq!(b.upload_interval, Duration::from_secs(15));
        assert_eq!(b.sample_rate, 250);
        assert!(!format!("{b:?}").contains("glc_secret"));
        let config = b.validate_with(&env).unwrap();
        let upload = config.upload.expect("a server address was set");
        assert_eq!(upload.tags.len(), 2);
        assert!(
            !config.write_files,
            "files only when output_dir is set explicitly"
        );
        let token =
            ProfilerBuilder::default().apply_env(&env_of(&[("PYROSCOPE_AUTH_TOKEN", "t0k")]));
        assert!(matches!(&token.auth, Auth::Bearer(t) if t.expose() == "t0k"));
    }

    #[test]
    fn builder_calls_after_from_env_win() {
        let env = env_of(&[
            ("PYROSCOPE_SAMPLE_RATE", "250"),
            ("PYROSCOPE_LABELS", "region=eu"),
        ]);
        let b = ProfilerBuilder::default()
            .apply_env(&env)
            .sample_rate(99)
            .tag("region", "us");
        assert_eq!(b.sample_rate, 99);
        assert_eq!(b.tags, vec![("region".to_string(), "us".to_string())]);
    }

    #[test]
    fn malformed_variables_are_build_errors_naming_the_variable() {
        let cases = [
            ("PYROSCOPE_SAMPLE_RATE", "fast", "not a whole number"),
            ("PYROSCOPE_UPLOAD_INTERVAL", "10", "not a duration"),
            ("PYROSCOPE_LABELS", "region", "has no `=`"),
            ("PYROSCOPE_BASIC_AUTH_USER", "u", "set both or neither"),
        ];
        for (var, value, rule) in cases {
            let env = env_of(&[(var, value), ("PYROSCOPE_APPLICATION_NAME", "app")]);
            let err = ProfilerBuilder::default()
                .apply_env(&env)
                .validate_with(&env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(var) && err.contains(rule), "{var}: {err}");
        }
        let env = env_of(&[
            ("PYROSCOPE_SERVER_ADDRESS", "localhost:4040"),
            ("PYROSCOPE_APPLICATION_NAME", "app"),
        ]);
        let err = ProfilerBuilder::default()
            .apply_env(&env)
            .validate_with(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server_address") && err.contains("no scheme"),
            "{err}"
        );
    }

    #[test]
    fn the_switch_turns_off_any_builder_without_checking_its_options() {
        for off in ["false", "0", "No", "OFF"] {
            let env = env_of(&[(ENABLED_VAR, off)]);
            // An invalid builder: no application name, a bad address.
            let config = ProfilerBuilder::default()
                .server_address("nonsense")
                .validate_with(&env)
                .unwrap();
            assert!(!config.enabled && config.upload.is_none() && !config.write_files);
        }
        for on in ["true", "1", "", "yes"] {
            let env = env_of(&[(ENABLED_VAR, on)]);
            assert!(
                ProfilerBuilder::default()
                    .application_name("a")
                    .validate_with(&env)
                    .unwrap()
                    .enabled
            );
        }
        let env = env_of(&[(ENABLED_VAR, "maybe")]);
        let err = ProfilerBuilder::default()
            .validate_with(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(ENABLED_VAR) && err.contains("`maybe`"),
            "{err}"
        );
    }

    #[test]
    fn range_errors_of_values_from_the_environment_name_the_variable() {
        let cases = [
            ("PYROSCOPE_SERVER_ADDRESS", "ftp://x", "scheme `ftp`"),
            ("PYROSCOPE_UPLOAD_INTERVAL", "0s", "out of range"),
            ("PYROSCOPE_SAMPLE_RATE", "0", "use 1 to"),
            ("PYROSCOPE_APPLICATION_NAME", "a{b", "contains `{`"),
            ("PYROSCOPE_LABELS", "__x=1", "reserves"),
            ("PYROSCOPE_TENANT_ID", "t\u{7f}x", "tenant"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.namespace=a}b",
                "contains `}`",
            ),
        ];
        for (var, value, rule) in cases {
            let value = value.to_string();
            let env = env_of(&[
                (var, value.as_str()),
                (
                    "PYROSCOPE_APPLICATION_NAME",
                    if var == "PYROSCOPE_APPLICATION_NAME" {
                        value.as_str()
                    } else {
                        "app"
                    },
                ),
                (
                    "PYROSCOPE_SERVER_ADDRESS",
                    if var == "PYROSCOPE_SERVER_ADDRESS" {
                        value.as_str()
                    } else {
                        "http://127.0.0.1:4040"
                    },
                ),
            ]);
            let b = ProfilerBuilder::default().apply_env(&env);
            // `/ingest` for the grammar cases.
            let b = if rule.contains('{') || rule.contains('}') {
                b.protocol(Protocol::Ingest)
            } else {
                b
            };
            let err = b.validate_with(&env).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{var}`")) && err.contains(rule),
                "{var}: {err}"
            );
        }
        // A builder call after `from_env` that replaces the value: the error names the option.
        let env = env_of(&[
            ("PYROSCOPE_SAMPLE_RATE", "100"),
            ("PYROSCOPE_APPLICATION_NAME", "app"),
        ]);
        let err = ProfilerBuilder::default()
            .apply_env(&env)
            .sample_rate(0)
            .validate_with(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sample_rate`") && !err.contains("PYROSCOPE"),
            "{err}"
        );
        // `OTEL_SERVICE_NAME`, read at start when no name was given.
        let env = env_of(&[
            ("OTEL_SERVICE_NAME", "a:b"),
            ("PYROSCOPE_SERVER_ADDRESS", "http://127.0.0.1:4040"),
        ]);
        let err = ProfilerBuilder::default()
            .apply_env(&env)
            .protocol(Protocol::Ingest)
            .validate_with(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`OTEL_SERVICE_NAME`"), "{err}");
    }

    #[test]
    fn the_resource_attributes_give_the_name_and_the_namespace_like_the_sdk() {
        let env = env_of(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=shop-api, service.namespace = shop",
        )]);
        let b = ProfilerBuilder::default().apply_env(&env);
        assert_eq!(b.application_name.as_deref(), Some("shop-api"));
        assert_eq!(b.service_namespace.as_deref(), Some("shop"));
        // PYROSCOPE_APPLICATION_NAME wins over the resource's name.
        let env = env_of(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop-api"),
            ("PYROSCOPE_APPLICATION_NAME", "checkout"),
        ]);
        let b = ProfilerBuilder::default().apply_env(&env);
        assert_eq!(b.application_name.as_deref(), Some("checkout"));
        assert_eq!(b.service_namespace, None);
    }

    #[test]
    fn tags_that_meet_after_dots_become_underscores_are_listed_with_the_versions() {
        use crate::profiler::builder::validate::legacy_label_collisions;
        let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let found = legacy_label_collisions(
            &tags(&[("a.b", "1"), ("a_b", "2"), ("c", "3")]),
            Protocol::Push,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0.as_str(), found[0].1.as_str()), ("a.b", "a_b"));
        assert!(found[0].2.contains("v1.x"));
        // A tag named like a fixed label after the rewrite.
        let found = legacy_label_collisions(&tags(&[("otel_scope_name", "x")]), Protocol::Push);
        assert_eq!(found[0].0, "otel.scope.name");
        assert!(
            legacy_label_collisions(&tags(&[("otel_scope_name", "x")]), Protocol::Ingest)
                .is_empty()
        );
        assert!(
            legacy_label_collisions(&tags(&[("a.b", "1"), ("c_d", "2")]), Protocol::Push)
                .is_empty()
        );
    }

    #[test]
    fn ingest_tags_are_checked_against_the_ingest_grammar() {
        let env = env_of(&[]);
        let b = ProfilerBuilder::default()
            .application_name("app")
            .server_address("http://127.0.0.1:4040")
            .protocol(Protocol::Ingest)
            .tag("path", "a,b");
        let err = b.clone().validate_with(&env).unwrap_err().to_string();
        assert!(
            err.contains("`tag`") && err.contains("contains `,`"),
            "{err}"
        );
        assert!(b.protocol(Protocol::Push).validate_with(&env).is_ok());
    }
}
