//! The OpenTelemetry resource as the SDK's environment detectors build it
//! (`opentelemetry_sdk` 0.33 `resource/env.rs`): `OTEL_RESOURCE_ATTRIBUTES` is `k=v`
//! pairs split at `,`, each key and value trimmed, no percent-decoding, the last pair of a
//! key wins. Read by `ProfilerBuilder::from_env` and by `ProfilingTracerProvider::new`, so
//! that the profiler and the traces agree on `service.name` and `service.namespace`.

/// The variable the SDK reads resource attributes from.
pub(crate) const RESOURCE_ATTRIBUTES_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The value of `key` in an `OTEL_RESOURCE_ATTRIBUTES`-style list (`None` when absent or
/// empty: the SDK treats an empty value as no value for our purposes).
pub(crate) fn attribute(attributes: &str, key: &str) -> Option<String> {
    attributes
        .split_terminator(',')
        .filter_map(|pair| pair.split_once('='))
        .rfind(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `key` of the process's resource attributes.
#[cfg(feature = "otel")]
pub(crate) fn attribute_from_env(key: &str) -> Option<String> {
    std::env::var(RESOURCE_ATTRIBUTES_VAR)
        .ok()
        .and_then(|attrs| attribute(&attrs, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_split_and_trimmed_like_the_sdk_and_the_last_pair_wins() {
        let attrs = "service.name = shop-api , service.namespace=shop,deployment.environment=prod,service.namespace=store";
        assert_eq!(
            attribute(attrs, "service.name").as_deref(),
            Some("shop-api")
        );
        assert_eq!(
            attribute(attrs, "service.namespace").as_deref(),
            Some("store")
        );
        assert_eq!(attribute(attrs, "host.name"), None);
        assert_eq!(attribute("service.namespace=", "service.namespace"), None);
        assert_eq!(attribute("a=b=c", "a").as_deref(), Some("b=c"));
    }
}
