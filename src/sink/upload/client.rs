//! The hyper client: HTTP/1.1, pooled connections, and with the `tls` feature rustls with
//! the `ring` provider passed explicitly (never the process default, which panics when an
//! application's graph enables both `ring` and `aws-lc-rs`), webpki roots plus the
//! configured extra roots. Redirects are never followed (hyper's client does not), so
//! credentials never travel to another host.

#[cfg(feature = "tls")]
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::config::UploadConfig;
use super::request::Prepared;
use crate::error::StartError;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// Bytes of an error answer kept for the log.
const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// How long an idle pooled connection is kept (uploads come every ~10 s).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's answer to one attempt.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: http::StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) location: Option<String>,
    /// The start of the body (at most [`MAX_ANSWER_BYTES`]), lossy UTF-8.
    pub(crate) body: String,
}

/// Why an attempt got no answer.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// No answer within the request timeout.
    Timeout,
    /// The request could not be built (a header value the HTTP library refused).
    Request(http::Error),
    /// Connecting, writing or reading failed.
    Failed(hyper_util::client::legacy::Error),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within the request timeout"),
            Self::Request(err) => write!(f, "building the request: {err}"),
            // hyper-util's top-level error alone says little ("client error (Connect)"):
            // the causes go on the same line, for the log.
            Self::Failed(err) => {
                write!(f, "{err}")?;
                let mut source = std::error::Error::source(err);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Timeout => None,
            Self::Request(err) => Some(err),
            Self::Failed(err) => Some(err),
        }
    }
}

/// The uploader's HTTP client.
pub(crate) struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// Builds the client (and the TLS configuration) on the calling thread, so that its
    /// errors reach `start()`.
    pub(crate) fn new(config: &UploadConfig) -> Result<Self, StartError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.request_timeout));
        http.set_nodelay(true);
        #[cfg(feature = "tls")]
        let connector = {
            // The TLS layer decides between http and https; the inner connector must let
            // https URIs through.
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(&config.tls_roots)?)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        #[cfg(not(feature = "tls"))]
        let connector = http;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Self {
            client,
            timeout: config.request_timeout,
        })
    }

    /// Sends one attempt and reads the answer, all within the request timeout.
    pub(crate) async fn send(&self, prepared: &Prepared) -> Result<Answer, TransportError> {
        let mut request = http::Request::post(prepared.uri.clone())
            .body(Full::new(prepared.body.clone()))
            .map_err(TransportError::Request)?;
        *request.headers_mut() = prepared.headers.clone();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(TransportError::Failed)?;
            let (parts, body) = response.into_parts();
            let header = |name: http::header::HeaderName| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header(http::header::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let location = header(http::header::LOCATION);
            // Read the whole answer so the connection can be reused; keep its start.
            let body = match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                Err(_) => String::from("(answer longer than 4 KiB or cut off)"),
            };
            Ok(Answer {
                status: parts.status,
                retry_after,
                location,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout),
        }
    }
}

#[cfg(feature = "tls")]
fn tls_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, StartError> {
    use std::sync::Arc;

    let tls_error = |source: io::Error| StartError::Os {
        operation: "configuring TLS for uploads",
        source,
    };
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|err| tls_error(io::Error::new(io::ErrorKind::InvalidInput, err)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(io::Error::other(err)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection refused on loopback: the error keeps hyper's error as its source and
    /// its message names the cause.
    #[test]
    fn a_refused_connection_keeps_its_cause_as_the_source() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = crate::Profiler::builder()
            .application_name("client-test")
            .server_address(format!("http://127.0.0.1:{port}"))
            .validate()
            .unwrap()
            .upload
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async {
            let client = HttpClient::new(&config).unwrap();
            let prepared = Prepared {
                uri: format!("http://127.0.0.1:{port}/push.v1.PusherService/Push")
                    .parse()
                    .unwrap(),
                headers: http::HeaderMap::new(),
                body: Bytes::from_static(b""),
            };
            client.send(&prepared).await.unwrap_err()
        });
        assert!(matches!(err, TransportError::Failed(_)), "{err:?}");
        let source = std::error::Error::source(&err).expect("hyper's error is the source");
        assert!(source.source().is_some(), "and its cause below it: {err:?}");
        assert!(
            err.to_string().to_lowercase().contains("refused"),
            "the message names the cause: {err}"
        );
    }
}
