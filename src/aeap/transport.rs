//! WebSocket client transport for AEAP, with the opening handshake done the way Asterisk's
//! `res_http_websocket.c` does it (spec A.3):
//! * `GET /<path>[?query]` with `Host: host:port` (port always present), optional
//!   `Authorization: Basic` from the URL userinfo, `Sec-WebSocket-Protocol: <protocol>`;
//! * the server's `Sec-WebSocket-Protocol` is **optional** (tungstenite's own client rejects a
//!   101 without it, which would break engines built on Go's gorilla or Python websockets that
//!   do not echo it), but if present it must be the one offered;
//! * any `Sec-WebSocket-Extensions` in the answer fails the connection (no compression);
//! * TCP connect bounded by the connect timeout, the upgrade by twice that (as Asterisk).
//!
//! The handshake is a sans-IO [`ClientHandshake`]; [`connect`] is the tokio shell.

use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The client socket type.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest upgrade response accepted.
const MAX_RESPONSE_HEADER: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("invalid URL '{0}': {1}")]
    Url(String, String),
    #[error("connect to {0} failed: {1}")]
    Connect(String, String),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, String),
    #[error("WebSocket upgrade with {0} failed: {1}")]
    Handshake(String, String),
    #[error("WebSocket upgrade with {0} timed out")]
    HandshakeTimeout(String),
}

/// Sans-IO client side of the opening handshake.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    /// The request bytes to send.
    pub request: String,
    accept: String,
    protocol: Option<String>,
}

/// What a complete, valid upgrade response told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeDone {
    /// Bytes of the response head; anything after them is WebSocket data.
    pub header_len: usize,
    pub protocol: Option<String>,
}

impl ClientHandshake {
    /// Build the upgrade request for `url` with the given key (`generate_key()` in real use).
    pub fn new(
        url: &url::Url,
        protocol: Option<&str>,
        key: &str,
    ) -> Result<ClientHandshake, String> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            None => return Err("no host".into()),
        };
        let port = url.port_or_known_default().ok_or("no port")?;
        let mut target = url.path().to_string();
        if target.is_empty() {
            target.push('/');
        }
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: {host}:{port}\r\n"
        );
        if !url.username().is_empty() || url.password().is_some() {
            let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy();
            let pass = percent_encoding::percent_decode_str(url.password().unwrap_or(""))
                .decode_utf8_lossy();
            let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req.push_str(&format!("Authorization: Basic {cred}\r\n"));
        }
        let protocol = protocol
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        if let Some(p) = &protocol {
            if p.contains(['\r', '\n']) {
                return Err("protocol contains a line break".into());
            }
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        req.push_str(&format!("Sec-WebSocket-Key: {key}\r\n\r\n"));
        Ok(ClientHandshake {
            request: req,
            accept: derive_accept_key(key.as_bytes()),
            protocol,
        })
    }

    /// Check the response received so far: `Ok(None)` = incomplete, read more.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<HandshakeDone>, String> {
        let Some(end) = find_header_end(buf) else {
            if buf.len() > MAX_RESPONSE_HEADER {
                return Err("response header too large".into());
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| "response header is not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        let mut parts = status.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP response: '{status}'"));
        }
        if code != "101" {
            return Err(format!("server answered '{status}' instead of 101"));
        }
        let mut upgrade = false;
        let mut connection = false;
        let mut accept_ok = false;
        let mut protocol = None;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("malformed header line '{line}'"));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
                "connection" => {
                    connection = value
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
                }
                "sec-websocket-accept" => accept_ok = value == self.accept,
                "sec-websocket-protocol" => protocol = Some(value.to_string()),
                "sec-websocket-extensions" => {
                    return Err(format!(
                        "server negotiated extensions '{value}', which are not supported"
                    ));
                }
                _ => {}
            }
        }
        if !upgrade {
            return Err("missing or wrong 'Upgrade: websocket'".into());
        }
        if !connection {
            return Err("missing or wrong 'Connection: Upgrade'".into());
        }
        if !accept_ok {
            return Err("wrong or missing Sec-WebSocket-Accept".into());
        }
        if let Some(p) = &protocol {
            if self.protocol.as_deref() != Some(p.as_str()) {
                return Err(format!(
                    "server chose subprotocol '{p}', which was not offered"
                ));
            }
        }
        Ok(Some(HandshakeDone {
            header_len: end,
            protocol,
        }))
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Limits on what an AEAP peer may send us: frames up to 64 KiB (Asterisk's
/// `AST_WEBSOCKET_MAX_RX_PAYLOAD_SIZE`); messages a bit larger than the 32767-byte text limit so
/// the codec can report an oversize message clearly (it then disconnects, as Asterisk).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(65535))
        .max_message_size(Some(256 * 1024))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Connect to `url` (ws:// or wss://) and do the upgrade. `connect_timeout` bounds the TCP
/// connect; the TLS + upgrade exchange gets twice that.
pub async fn connect(
    url: &str,
    protocol: Option<&str>,
    connect_timeout: Duration,
) -> Result<WsStream, TransportError> {
    let parsed =
        url::Url::parse(url).map_err(|e| TransportError::Url(url.to_string(), e.to_string()))?;
    let tls = match parsed.scheme() {
        "ws" => false,
        "wss" => true,
        s => {
            return Err(TransportError::Url(
                url.to_string(),
                format!("scheme '{s}' is not ws or wss"),
            ))
        }
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(TransportError::Url(url.to_string(), "no host".into())),
    };
    let port = parsed
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let tcp = match tokio::time::timeout(connect_timeout, tcp_connect(&host, port)).await {
        Err(_) => return Err(TransportError::ConnectTimeout(url.to_string())),
        Ok(Err(e)) => return Err(TransportError::Connect(url.to_string(), e)),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let hs = ClientHandshake::new(&parsed, protocol, &key)
        .map_err(|e| TransportError::Url(url.to_string(), e))?;
    let upgrade = async {
        let mut stream = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| TransportError::Tls(url.to_string(), e.to_string()))?;
            let config = tls_config().map_err(|e| TransportError::Tls(url.to_string(), e))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| TransportError::Tls(url.to_string(), e.to_string()))?;
            MaybeTlsStream::Rustls(s)
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        let hs_err = |e: String| TransportError::Handshake(url.to_string(), e);
        stream
            .write_all(hs.request.as_bytes())
            .await
            .map_err(|e| hs_err(e.to_string()))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        let done = loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| hs_err(e.to_string()))?;
            if n == 0 {
                return Err(hs_err("connection closed during the upgrade".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(done) = hs.parse_response(&buf).map_err(hs_err)? {
                break done;
            }
        };
        let rest = buf.split_off(done.header_len);
        Ok(
            WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(ws_config()))
                .await,
        )
    };
    match tokio::time::timeout(connect_timeout * 2, upgrade).await {
        Err(_) => Err(TransportError::HandshakeTimeout(url.to_string())),
        Ok(r) => r,
    }
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    let mut last = format!("no address for {host}");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn hs(url: &str, proto: Option<&str>) -> ClientHandshake {
        ClientHandshake::new(&url::Url::parse(url).unwrap(), proto, KEY).unwrap()
    }

    #[test]
    fn request_like_asterisk() {
        let h = hs("ws://127.0.0.1:9099", Some("speech_to_text"));
        assert_eq!(
            h.request,
            "GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: 127.0.0.1:9099\r\nSec-WebSocket-Protocol: speech_to_text\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let h = hs("wss://user:p%40ss@stt.example.com/v1/aeap?lang=en", None);
        assert!(h.request.starts_with("GET /v1/aeap?lang=en HTTP/1.1\r\n"));
        assert!(h.request.contains("Host: stt.example.com:443\r\n"));
        let cred = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
        assert!(h
            .request
            .contains(&format!("Authorization: Basic {cred}\r\n")));
        assert!(!h.request.contains("Sec-WebSocket-Protocol"));
        let h = hs("ws://[::1]/x", Some("p"));
        assert!(h.request.contains("Host: [::1]:80\r\n"));
    }

    fn resp(extra: &str) -> String {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n")
    }

    #[test]
    fn protocol_is_optional_but_must_match() {
        let h = hs("ws://a:1", Some("speech_to_text"));
        let r = resp("");
        assert_eq!(
            h.parse_response(r.as_bytes()).unwrap(),
            Some(HandshakeDone {
                header_len: r.len(),
                protocol: None
            })
        );
        let r = resp("Sec-WebSocket-Protocol: speech_to_text\r\n");
        assert_eq!(
            h.parse_response(r.as_bytes())
                .unwrap()
                .unwrap()
                .protocol
                .as_deref(),
            Some("speech_to_text")
        );
        let r = resp("Sec-WebSocket-Protocol: other\r\n");
        assert!(h.parse_response(r.as_bytes()).is_err());
    }

    #[test]
    fn rejects_bad_answers() {
        let h = hs("ws://a:1", Some("speech_to_text"));
        assert!(h
            .parse_response(resp("Sec-WebSocket-Extensions: permessage-deflate\r\n").as_bytes())
            .is_err());
        assert!(h
            .parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        let bad = resp("").replace(ACCEPT, "nope");
        assert!(h.parse_response(bad.as_bytes()).is_err());
        let bad = resp("").replace("Upgrade: websocket\r\n", "");
        assert!(h.parse_response(bad.as_bytes()).is_err());
        assert!(h.parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn incomplete_then_complete_with_trailing_data() {
        let h = hs("ws://a:1", None);
        let r = resp("");
        assert_eq!(h.parse_response(&r.as_bytes()[..20]).unwrap(), None);
        let mut full = r.clone().into_bytes();
        full.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(
            h.parse_response(&full).unwrap().unwrap().header_len,
            r.len()
        );
        assert!(h
            .parse_response(&vec![b'a'; MAX_RESPONSE_HEADER + 1])
            .is_err());
    }

    #[tokio::test]
    async fn connect_refused_and_timeout() {
        // Bind then drop to get a closed port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = connect(
            &format!("ws://127.0.0.1:{port}"),
            Some("x"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, TransportError::Connect(..)), "{e}");
        // A server that accepts but never answers the upgrade.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let e = connect(&format!("ws://{addr}"), None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::HandshakeTimeout(_)), "{e}");
    }
}
