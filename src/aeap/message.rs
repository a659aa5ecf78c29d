//! AEAP message codec (sans-IO): one WebSocket text frame <-> one [`Message`].
//!
//! Follows Asterisk's `message_json.c` / `aeap.c` (spec section A.4):
//! * a frame is a JSON object; it is a **request** when it has a `"request"` key (even if it also
//!   has `"response"`), else a **response** when it has `"response"`; otherwise it has no kind and
//!   reaches no handler;
//! * the name is the string under `"response"` when that key exists, else under `"request"`;
//!   names compare case-insensitively ([`Message::is_named`]);
//! * `"id"` defaults to `""`; a string `"error_msg"` marks an error;
//! * text longer than [`MAX_TEXT_LEN`] (32767 bytes, Asterisk's 32768-byte receive buffer minus
//!   the NUL) is an error that means *disconnect*; invalid JSON is an error the caller drops
//!   silently.
//!
//! Key order matters on the wire (Asterisk's jansson keeps insertion order, and Asterisk reads
//! only the *first* key of `params`), so objects are kept as ordered lists ([`Json`]) instead of
//! `serde_json::Map` (which sorts keys unless serde_json's `preserve_order` is on).
//! Serialization is compact, in Asterisk's order: requests `{"request", body..., "id"}`,
//! responses `{"response", "id", body..., "error_msg"}`.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::fmt;

/// Longest accepted text message, in bytes.
pub const MAX_TEXT_LEN: usize = 32767;

/// The error reply Asterisk sends for names it has no handler for.
pub const UNSUPPORTED: &str = "Unsupported and/or un-handled message";

/// A JSON value whose objects keep their members in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    /// Members in document order. A duplicate key replaces the earlier value in place
    /// (what jansson does when loading).
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Json {
        Json::String(s.into())
    }
    pub fn int(i: i64) -> Json {
        Json::Number(i.into())
    }
    /// An object from `(key, value)` pairs, in the given order.
    pub fn object<K: Into<String>>(members: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }
    /// `json_integer_value`: the value of a JSON *integer*; reals, strings etc. are `None`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Json::Number(n) if !n.is_f64() => n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)),
            _ => None,
        }
    }
    /// Member `key` of an object (exact, case-sensitive, like jansson).
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    /// The first member of an object (`ast_json_object_iter`).
    pub fn first_member(&self) -> Option<(&str, &Json)> {
        self.as_object()?.first().map(|(k, v)| (k.as_str(), v))
    }
    /// Compact serialization (no whitespace), members in order.
    pub fn to_compact(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }
    /// Parse JSON text keeping object member order.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::String(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::String(s)
    }
}
impl From<i64> for Json {
    fn from(i: i64) -> Json {
        Json::int(i)
    }
}
impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(s),
            serde_json::Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => {
                Json::Object(o.into_iter().map(|(k, v)| (k, Json::from(v))).collect())
            }
        }
    }
}

impl From<&Json> for serde_json::Value {
    fn from(j: &Json) -> serde_json::Value {
        match j {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.clone()),
            Json::Array(a) => {
                serde_json::Value::Array(a.iter().map(serde_json::Value::from).collect())
            }
            Json::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_compact())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // JSON text cannot hold NaN/inf, so from_f64 only fails on values serde_json never yields.
        Ok(serde_json::Number::from_f64(v)
            .map(Json::Number)
            .unwrap_or(Json::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(e) = seq.next_element::<Json>()? {
            v.push(e);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            if let Some(slot) = members.iter_mut().find(|(key, _)| *key == k) {
                slot.1 = v;
            } else {
                members.push((k, v));
            }
        }
        Ok(Json::Object(members))
    }
}

/// Compact writer; strings escaped as serde_json / jansson do (UTF-8 kept, controls escaped).
fn write_json(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(n) => {
            use fmt::Write;
            let _ = write!(out, "{n}");
        }
        Json::String(s) => write_str(s, out),
        Json::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(e, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            out.push('{');
            for (i, (k, e)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_json(e, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                use fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

/// One AEAP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// `"response"` value if present, else `"request"` value (`""` when not a string).
    pub name: String,
    /// `""` when absent or not a string.
    pub id: String,
    /// Present (and a string) = this message reports an error.
    pub error_msg: Option<String>,
    /// Every other member, in document order.
    pub body: Vec<(String, Json)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_TEXT_LEN`]: Asterisk treats this as a read error and disconnects.
    #[error("message of {0} bytes exceeds the {MAX_TEXT_LEN}-byte limit")]
    TooLarge(usize),
    /// Not JSON: dropped silently, no reply.
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("message is not a JSON object")]
    NotObject,
    /// Neither `request` nor `response`: no handler sees it.
    #[error("message has neither 'request' nor 'response'")]
    NoKind,
}

/// Parse one text frame.
pub fn decode(text: &str) -> Result<Message, DecodeError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(DecodeError::TooLarge(text.len()));
    }
    let json = Json::parse(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Json::Object(members) = json else {
        return Err(DecodeError::NotObject);
    };
    let mut request: Option<Json> = None;
    let mut response: Option<Json> = None;
    let mut id = String::new();
    let mut error_msg = None;
    let mut body = Vec::with_capacity(members.len());
    for (k, v) in members {
        match k.as_str() {
            "request" => request = Some(v),
            "response" => response = Some(v),
            "id" => {
                if let Json::String(s) = v {
                    id = s;
                }
            }
            "error_msg" => {
                if let Json::String(s) = v {
                    error_msg = Some(s);
                }
            }
            _ => body.push((k, v)),
        }
    }
    let kind = if request.is_some() {
        Kind::Request
    } else if response.is_some() {
        Kind::Response
    } else {
        return Err(DecodeError::NoKind);
    };
    let name = match response.or(request) {
        Some(Json::String(s)) => s,
        _ => String::new(),
    };
    Ok(Message {
        kind,
        name,
        id,
        error_msg,
        body,
    })
}

/// A fresh request id: a lowercase 36-character UUID, as `ast_uuid_generate_str`.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `{"request":name, body..., "id":id}` (id last, as Asterisk sends it).
pub fn encode_request(name: &str, id: &str, body: &[(String, Json)]) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"request\":");
    write_str(name, &mut out);
    for (k, v) in body {
        out.push(',');
        write_str(k, &mut out);
        out.push(':');
        write_json(v, &mut out);
    }
    out.push_str(",\"id\":");
    write_str(id, &mut out);
    out.push('}');
    out
}

/// `{"response":name, "id":id, body..., ["error_msg":...]}`.
pub fn encode_response(
    name: &str,
    id: &str,
    body: &[(String, Json)],
    error_msg: Option<&str>,
) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"response\":");
    write_str(name, &mut out);
    out.push_str(",\"id\":");
    write_str(id, &mut out);
    for (k, v) in body {
        out.push(',');
        write_str(k, &mut out);
        out.push(':');
        write_json(v, &mut out);
    }
    if let Some(e) = error_msg {
        out.push_str(",\"error_msg\":");
        write_str(e, &mut out);
    }
    out.push('}');
    out
}

impl Message {
    pub fn request(name: impl Into<String>, body: Vec<(String, Json)>) -> Message {
        Message {
            kind: Kind::Request,
            name: name.into(),
            id: new_id(),
            error_msg: None,
            body,
        }
    }
    pub fn response(
        name: impl Into<String>,
        id: impl Into<String>,
        body: Vec<(String, Json)>,
    ) -> Message {
        Message {
            kind: Kind::Response,
            name: name.into(),
            id: id.into(),
            error_msg: None,
            body,
        }
    }
    pub fn is_request(&self) -> bool {
        self.kind == Kind::Request
    }
    pub fn is_response(&self) -> bool {
        self.kind == Kind::Response
    }
    /// `ast_aeap_message_is_named`: case-insensitive.
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
    /// Body member `key` (exact).
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.body.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn params(&self) -> Option<&Json> {
        self.get("params")
    }
    /// Compact text in Asterisk's key order.
    pub fn encode(&self) -> String {
        match self.kind {
            Kind::Request => {
                let mut s = encode_request(&self.name, &self.id, &self.body);
                if let Some(e) = &self.error_msg {
                    // Requests with error_msg are unusual; keep it before the closing brace.
                    s.pop();
                    s.push_str(",\"error_msg\":");
                    write_str(e, &mut s);
                    s.push('}');
                }
                s
            }
            Kind::Response => {
                encode_response(&self.name, &self.id, &self.body, self.error_msg.as_deref())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_kind_and_name() {
        let m = decode(r#"{"request":"set","id":"a","params":{"results":[]}}"#).unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.name, "set");
        assert_eq!(m.id, "a");
        assert!(m.error_msg.is_none());
        assert_eq!(m.params().unwrap().first_member().unwrap().0, "results");
    }

    #[test]
    fn both_keys_is_request_named_by_response() {
        let m = decode(r#"{"request":"set","response":"get","id":"x"}"#).unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.name, "get");
    }

    #[test]
    fn names_case_insensitive_and_defaults() {
        let m = decode(r#"{"response":"SeTuP"}"#).unwrap();
        assert!(m.is_named("setup"));
        assert!(m.is_response());
        assert_eq!(m.id, "");
        let m = decode(r#"{"response":5,"id":7}"#).unwrap();
        assert_eq!(m.name, "");
        assert_eq!(m.id, "");
    }

    #[test]
    fn error_msg_only_when_string() {
        let m = decode(r#"{"response":"get","id":"1","error_msg":"boom"}"#).unwrap();
        assert_eq!(m.error_msg.as_deref(), Some("boom"));
        let m = decode(r#"{"response":"get","id":"1","error_msg":3}"#).unwrap();
        assert!(m.error_msg.is_none());
    }

    #[test]
    fn decode_errors() {
        assert!(matches!(decode("{not json"), Err(DecodeError::Json(_))));
        assert_eq!(decode("[1,2]"), Err(DecodeError::NotObject));
        assert_eq!(decode(r#"{"id":"x"}"#), Err(DecodeError::NoKind));
        let pad = "x".repeat(MAX_TEXT_LEN);
        let big = format!(r#"{{"request":"set","p":"{pad}"}}"#);
        assert_eq!(decode(&big), Err(DecodeError::TooLarge(big.len())));
        // Exactly at the limit is fine (if valid).
        let fill = MAX_TEXT_LEN - r#"{"request":"x","p":""}"#.len();
        let ok = format!(r#"{{"request":"x","p":"{}"}}"#, "y".repeat(fill));
        assert_eq!(ok.len(), MAX_TEXT_LEN);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn object_order_kept_and_duplicates_replace_in_place() {
        let j = Json::parse(r#"{"z":1,"a":2,"z":3}"#).unwrap();
        assert_eq!(j.to_compact(), r#"{"z":3,"a":2}"#);
        let m = decode(r#"{"request":"set","params":{"zeta":"1","alpha":"2"}}"#).unwrap();
        assert_eq!(m.params().unwrap().first_member().unwrap().0, "zeta");
    }

    #[test]
    fn integer_only() {
        assert_eq!(Json::parse("87").unwrap().as_integer(), Some(87));
        assert_eq!(Json::parse("-3").unwrap().as_integer(), Some(-3));
        assert_eq!(Json::parse("0.87").unwrap().as_integer(), None);
        assert_eq!(Json::parse("87.0").unwrap().as_integer(), None);
        assert_eq!(Json::parse("\"87\"").unwrap().as_integer(), None);
    }

    #[test]
    fn encode_request_order_and_compact() {
        let body = vec![
            ("version".to_string(), Json::str("0.1.0")),
            (
                "codecs".to_string(),
                Json::Array(vec![Json::object([("name", Json::str("ulaw"))])]),
            ),
            ("params".to_string(), Json::Object(vec![])),
        ];
        let s = encode_request("setup", "0b6f0c8e-2d1c-4e54-9a0c-5f0d3f5f7a11", &body);
        assert_eq!(
            s,
            r#"{"request":"setup","version":"0.1.0","codecs":[{"name":"ulaw"}],"params":{},"id":"0b6f0c8e-2d1c-4e54-9a0c-5f0d3f5f7a11"}"#
        );
    }

    #[test]
    fn encode_response_order() {
        assert_eq!(
            encode_response("set", "7d2a", &[], None),
            r#"{"response":"set","id":"7d2a"}"#
        );
        assert_eq!(
            encode_response("foo", "1", &[], Some(UNSUPPORTED)),
            r#"{"response":"foo","id":"1","error_msg":"Unsupported and/or un-handled message"}"#
        );
    }

    #[test]
    fn string_escaping_matches_serde() {
        let s = "a\"b\\c\n\u{1}é/\u{7f}";
        let mine = Json::str(s).to_compact();
        assert_eq!(mine, serde_json::to_string(s).unwrap());
        assert_eq!(Json::parse(&mine).unwrap(), Json::str(s));
    }

    #[test]
    fn roundtrip_message() {
        let text = r#"{"request":"get","params":["results"],"id":"abc"}"#;
        let m = decode(text).unwrap();
        assert_eq!(m.encode(), text);
        let text = r#"{"response":"get","id":"abc","params":{"language":"en-US"},"error_msg":"x"}"#;
        assert_eq!(decode(text).unwrap().encode(), text);
    }

    #[test]
    fn ids_are_uuids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_ascii_lowercase());
        assert_ne!(id, new_id());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(matches!(decode(&deep), Err(DecodeError::Json(_))));
    }

    #[test]
    fn every_prefix_and_mutation_is_handled() {
        let samples = [
            r#"{"request":"set","id":"7d2a","params":{"results":[{"text":"h\u00e9llo \"w\"","score":87,"grammar":"g1","best":0}]}}"#,
            r#"{"response":"setup","id":"1","codecs":[{"name":"ulaw","attributes":[]}],"params":{"a":1e5,"b":[true,null]}}"#,
        ];
        for s in samples {
            for i in 0..=s.len() {
                if !s.is_char_boundary(i) {
                    continue;
                }
                let prefix = &s[..i];
                if let Ok(m) = decode(prefix) {
                    assert_eq!(decode(&m.encode()).unwrap(), m);
                }
                for b in [b'"', b'{', b'}', b',', b':', b'[', b'0'] {
                    let mut v = s.as_bytes().to_vec();
                    if i < v.len() {
                        v[i] = b;
                        if let Ok(t) = std::str::from_utf8(&v) {
                            if let Ok(m) = decode(t) {
                                assert_eq!(decode(&m.encode()).unwrap(), m, "{t}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn serde_value_conversion() {
        let v: serde_json::Value = serde_json::json!({"a":[1,2.5,"x",null,true]});
        let j = Json::from(v.clone());
        assert_eq!(serde_json::Value::from(&j), v);
        assert_eq!(serde_json::to_string(&j).unwrap(), j.to_compact());
    }
}
