//! A catalog of hostile and malformed requests, one row each: whatever
//! arrives, the server answers with a sensible 4xx (or the normal answer),
//! never a 5xx, and keeps serving.
//!
//! Every row is sent by hand over a fresh TCP connection ([`raw_request`]),
//! so paths like `/widgets/../1`, bytes that no HTTP client would send, and
//! contradictory framing headers reach the server exactly as written.

use std::time::Duration;

use percache::routes::invalidate::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{new_client, spawn_app, StoreKind, TestApp};

const SECRET: &str = "test-webhook-secret";

/// A session key other than the one of [`crate::helpers::SESSION_KEY`]: cookies it
/// makes must be refused by the usual test instances.
pub const FOREIGN_SESSION_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (a whole HTTP/1.1 message, written by hand) to `addr`
/// (`host:port`) on a new connection and reads the answer until the server
/// closes it. The request should say `Connection: close`.
///
/// Writing and reading run side by side: for an oversized request the server
/// may answer (and close) before it has read everything.
pub async fn raw_request(addr: &str, request: &[u8]) -> Result<RawResponse, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let write = async move {
        // A server that answers early and closes makes the rest of the write fail: fine.
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    };
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the answer was read still leaves a usable answer.
                Err(_) if !buf.is_empty() => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(buf)
    };
    let (_writer, read) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?;
    parse_response(&read?)
}

fn parse_response(raw: &[u8]) -> Result<RawResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_str = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_str:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = raw.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(data);
        raw = raw.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// Which `Cookie` header a row sends.
#[derive(Debug, Clone)]
enum CookieMode {
    /// No `Cookie` header.
    None,
    /// alice's valid session cookie.
    SignedIn,
    /// This exact `Cookie` header value (bytes: it may be anything).
    Custom(Vec<u8>),
}

/// A check beyond the status code.
type Check = fn(&RawResponse) -> Result<(), String>;

/// One hostile request and what it must get.
struct Row {
    what: String,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    cookie: CookieMode,
    /// Send no `Host` header (the row's own headers may still carry one).
    omit_host: bool,
    expect: u16,
    check: Option<Check>,
}

fn row(what: impl Into<String>, method: &str, path: impl Into<String>, expect: u16) -> Row {
    Row {
        what: what.into(),
        method: method.to_owned(),
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        cookie: CookieMode::None,
        omit_host: false,
        expect,
        check: None,
    }
}

impl Row {
    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// `n` small extra headers.
    fn headers_n(mut self, n: usize) -> Self {
        for i in 0..n {
            self.headers.push((format!("x-h{i}"), b"1".to_vec()));
        }
        self
    }

    fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// A sign-in form with this username, encoded as a browser would.
    fn username(self, username: &str) -> Self {
        let body = format!("username={}", form_encode(username));
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    fn signed_in(mut self) -> Self {
        self.cookie = CookieMode::SignedIn;
        self
    }

    /// `Cookie: percache_session=<value>`.
    fn session(mut self, value: &str) -> Self {
        self.cookie = CookieMode::Custom(format!("percache_session={value}").into_bytes());
        self
    }

    fn cookie_header(mut self, value: impl AsRef<[u8]>) -> Self {
        self.cookie = CookieMode::Custom(value.as_ref().to_vec());
        self
    }

    fn without_host(mut self) -> Self {
        self.omit_host = true;
        self
    }

    fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// The bytes on the wire.
    fn request(&self, host: &str, session_cookie: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        let has = |name: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !self.omit_host && !has("host") {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        match &self.cookie {
            CookieMode::None => {}
            CookieMode::SignedIn => {
                out.extend_from_slice(format!("Cookie: {session_cookie}\r\n").as_bytes());
            }
            CookieMode::Custom(value) => {
                out.extend_from_slice(b"Cookie: ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        let framed = has("content-length") || has("transfer-encoding");
        if !framed && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")) {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Headers of a webhook call signed with `secret` at `timestamp`.
fn signed(row: Row, secret: &str, timestamp: &str) -> Row {
    let signature = sign(secret.as_bytes(), timestamp, &row.body);
    row.header("content-type", "application/json")
        .header("x-percache-timestamp", timestamp)
        .header("x-percache-signature", signature)
}

// Checks beyond the status code.

fn to_login(resp: &RawResponse) -> Result<(), String> {
    match resp.header("location").as_deref() {
        Some("/login") => Ok(()),
        other => Err(format!("Location {other:?}, expected /login")),
    }
}

fn to_dashboard(resp: &RawResponse) -> Result<(), String> {
    match resp.header("location").as_deref() {
        Some("/dashboard") => Ok(()),
        other => Err(format!("Location {other:?}, expected /dashboard")),
    }
}

fn hx_redirect(resp: &RawResponse) -> Result<(), String> {
    match resp.header("hx-redirect").as_deref() {
        Some("/login") => Ok(()),
        other => Err(format!("HX-Redirect {other:?}, expected /login")),
    }
}

fn refused_without_session(resp: &RawResponse) -> Result<(), String> {
    if resp.header("set-cookie").is_some() {
        return Err("a refused sign-in must not set a cookie".into());
    }
    Ok(())
}

/// The username `alice\r\nSet-Cookie: x=y` must not produce a header.
fn no_injected_header(resp: &RawResponse) -> Result<(), String> {
    refused_without_session(resp)?;
    let injected = resp
        .headers
        .iter()
        .any(|(n, v)| n == "x" || String::from_utf8_lossy(v).contains("x=y"));
    if injected {
        return Err(format!("injected header in {:?}", resp.headers));
    }
    Ok(())
}

/// A 405 whose `Allow` lists exactly these methods.
fn allow(resp: &RawResponse, expected: &str) -> Result<(), String> {
    match resp.header("allow") {
        Some(allow) if allow == expected => Ok(()),
        other => Err(format!("Allow {other:?}, expected {expected:?}")),
    }
}

fn allow_get(resp: &RawResponse) -> Result<(), String> {
    allow(resp, "GET")
}

fn allow_post(resp: &RawResponse) -> Result<(), String> {
    allow(resp, "POST")
}

fn allow_get_post(resp: &RawResponse) -> Result<(), String> {
    allow(resp, "GET, POST")
}

/// The sign-in form again, saying the username is not valid text, and no session.
fn not_utf8(resp: &RawResponse) -> Result<(), String> {
    refused_without_session(resp)?;
    let body = resp.text();
    // A lossy decoder would have signed in "\u{FFFD}\u{FFFD}" and shown it.
    if body.contains(r#"<form method="post" action="/login">"#)
        && body.contains("not valid text (UTF-8)")
        && !body.contains('\u{FFFD}')
    {
        Ok(())
    } else {
        Err(format!("expected the form and a message, got {body:.300}"))
    }
}

/// A 403 that says why, and no session.
fn cross_site_refused(resp: &RawResponse) -> Result<(), String> {
    refused_without_session(resp)?;
    if resp.text().contains("was refused") {
        Ok(())
    } else {
        Err(format!("expected a message, got {}", resp.text()))
    }
}

/// A 400 that explains the parameter and carries nobody's data.
fn refused_parameter(resp: &RawResponse) -> Result<(), String> {
    let body = resp.text();
    let explains = body.contains("parameter");
    let no_data = !body.contains("bob") && !body.contains("alice") && !body.contains("\"data\"");
    if explains && no_data {
        Ok(())
    } else {
        Err(format!("expected a refusal that names the parameter, got {body}"))
    }
}

fn alices_json(resp: &RawResponse) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| format!("JSON: {e}"))?;
    if json["data"]["userId"] == "alice" && json["data"]["name"] == "alice" {
        Ok(())
    } else {
        Err(format!("expected alice's data, got {json}"))
    }
}

fn alices_dashboard(resp: &RawResponse) -> Result<(), String> {
    if resp
        .text()
        .contains("Signed in as <strong class=\"username\">alice</strong>")
    {
        Ok(())
    } else {
        Err("expected alice's dashboard".into())
    }
}

/// No response header echoes the garbage that was sent.
fn nothing_echoed(resp: &RawResponse) -> Result<(), String> {
    let echoed = resp.headers.iter().any(|(_, v)| {
        let v = String::from_utf8_lossy(v);
        v.contains("<script>") || v.contains("../")
    });
    if echoed {
        return Err(format!("garbage echoed in {:?}", resp.headers));
    }
    Ok(())
}

/// The session cookie of `username` signed in on `app` (`percache_session=...`).
pub async fn session_cookie(app: &TestApp, username: &str) -> String {
    let resp = app.login_with(&new_client(), username).await;
    assert_eq!(resp.status(), 303, "{username} signs in");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("percache_session="), "{set_cookie}");
    pair
}

/// The catalog: built once the app runs (webhook rows need its clock, cookie
/// rows a real and a foreign cookie).
fn catalog(now_secs: i64, valid: &str, foreign: &str) -> Vec<Row> {
    let valid_value = valid.trim_start_matches("percache_session=");
    let foreign_value = foreign.trim_start_matches("percache_session=");
    let truncated = &valid_value[..valid_value.len() / 2];
    let tampered = {
        // Flip one character in the middle of the ciphertext.
        let mut chars: Vec<char> = valid_value.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let oversized = "QUFB".repeat(2100); // 8.4 KB of base64
    let now = now_secs.to_string();
    let old = (now_secs - 3600).to_string();
    let deep_json = format!("{}{}", "[".repeat(8000), "]".repeat(8000));
    let big_json = format!(r#"{{"userId":"alice","pad":"{}"}}"#, "x".repeat(17 * 1024));

    let mut rows = vec![
        // Widget ids other than 1 to 5: 404, signed in or not.
        row("widget 0", "GET", "/widgets/0", 404).signed_in(),
        row("widget 6", "GET", "/widgets/6", 404).signed_in(),
        row("widget -1", "GET", "/widgets/-1", 404).signed_in(),
        row("widget abc", "GET", "/widgets/abc", 404).signed_in(),
        row("widget 1.5", "GET", "/widgets/1.5", 404).signed_in(),
        row("widget 01", "GET", "/widgets/01", 404).signed_in(),
        row(
            "widget of 200 digits",
            "GET",
            format!("/widgets/{}", "9".repeat(200)),
            404,
        )
        .signed_in(),
        row("widget %00", "GET", "/widgets/%00", 404).signed_in(),
        row("widget ..%2F1", "GET", "/widgets/..%2F1", 404).signed_in(),
        row("widget %2e%2e%2f1", "GET", "/widgets/%2e%2e%2f1", 404).signed_in(),
        row("raw ../ in the path", "GET", "/widgets/../1", 404).signed_in(),
        row("raw ../ up to the API", "GET", "/widgets/../api/widgets/1", 404).signed_in(),
        row("empty widget id", "GET", "/widgets/", 404).signed_in(),
        row("JSON widget 0", "GET", "/api/widgets/0", 404).signed_in(),
        row("JSON widget %00", "GET", "/api/widgets/%00", 404).signed_in(),
        row("JSON widget 6", "GET", "/api/widgets/6", 404).signed_in(),
        row("JSON widget abc", "GET", "/api/widgets/abc", 404).signed_in(),
        row(
            "JSON widget of 32 digits",
            "GET",
            format!("/api/widgets/{}", "9".repeat(32)),
            404,
        )
        .signed_in(),
        row("refresh of widget 6", "POST", "/widgets/6/refresh", 404).signed_in(),
        row("refresh of widget 0", "POST", "/widgets/0/refresh", 404).signed_in(),
        row("refresh of widget abc", "POST", "/widgets/abc/refresh", 404).signed_in(),
        row("unknown widget while signed out", "GET", "/widgets/6", 404),
        row("a space in the request target", "GET", "/widgets/ 1", 400).signed_in(),
        // Usernames: valid ones sign in (303), invalid ones get the form back (422).
        row("empty username", "POST", "/login", 422)
            .username("")
            .check(refused_without_session),
        row("whitespace-only username", "POST", "/login", 422)
            .username(" \t \u{3000} ")
            .check(refused_without_session),
        row("NEL-only username (whitespace)", "POST", "/login", 422).username("\u{85}"),
        row("65-character username", "POST", "/login", 422)
            .username(&"a".repeat(65))
            .check(refused_without_session),
        row("65 two-byte characters", "POST", "/login", 422).username(&"é".repeat(65)),
        row("username with BEL", "POST", "/login", 422).username("ali\u{7}ce"),
        row("username with NUL", "POST", "/login", 422).username("ali\u{0}ce"),
        row("username with an ANSI escape", "POST", "/login", 422).username("\u{1b}[2Jalice"),
        row("username with CRLF Set-Cookie", "POST", "/login", 422)
            .username("alice\r\nSet-Cookie: x=y")
            .check(no_injected_header),
        row("username <script>", "POST", "/login", 303)
            .username("<script>alert(1)</script>")
            .check(to_dashboard),
        row("username with quotes", "POST", "/login", 303)
            .username(r#"o'brien "the" `one`"#)
            .check(to_dashboard),
        row("username *", "POST", "/login", 303).username("*"),
        row("username with key syntax :", "POST", "/login", 303).username("alice:w:1"),
        row("username with hash tag {}", "POST", "/login", 303).username("{u:alice}"),
        row("username with RTL override", "POST", "/login", 303).username("\u{202e}ecila"),
        row("username of emoji", "POST", "/login", 303).username("😀🎉"),
        row("64 emoji", "POST", "/login", 303).username(&"😀".repeat(64)),
        row("zero-width space inside", "POST", "/login", 303).username("a\u{200b}b"),
        // Path segments that RFC 3986 normalisers read as "here" and "up"
        // (issue 25): refused with the form's message.
        row("username .", "POST", "/login", 422)
            .username(".")
            .check(refused_without_session),
        row("username ..", "POST", "/login", 422)
            .username("..")
            .check(refused_without_session),
        row("username .. padded", "POST", "/login", 422).username("  ..  "),
        row("username %2E%2E", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=%2E%2E"),
        row("username ...", "POST", "/login", 303).username("..."),
        // Sign-in bodies.
        row("form body over 4 KiB", "POST", "/login", 413).username(&"a".repeat(5000)),
        row("JSON instead of a form", "POST", "/login", 415)
            .header("content-type", "application/json")
            .body(r#"{"username":"alice"}"#),
        row("form without content type", "POST", "/login", 415).body("username=alice"),
        row("multipart with no boundary", "POST", "/login", 415)
            .header("content-type", "multipart/form-data; boundary=")
            .body("--\r\n"),
        row("binary form body", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body([0xff, 0x00, b'=', 0x01, 0xfe, b'&', b'%']),
        row("username field twice", "POST", "/login", 400)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=alice&username=bob"),
        // Bytes that are not UTF-8 once decoded: the form again, not a user
        // named U+FFFD.
        row("invalid UTF-8 percent-escapes", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=%FF%FE")
            .check(not_utf8),
        row("raw invalid UTF-8 in the username", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b"username=ali\xc3(ce")
            .check(not_utf8),
        row("overlong UTF-8 slash %C0%AF", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=..%C0%AF..")
            .check(not_utf8),
        row("UTF-16 surrogate %ED%A0%80", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=%ED%A0%80")
            .check(not_utf8),
        row("invalid UTF-8 in another field", "POST", "/login", 422)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=alice&%FF=1")
            .check(not_utf8),
        row("form in Latin-1", "POST", "/login", 415)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=iso-8859-1",
            )
            .body("username=%E9"),
        row("percent-encoded UTF-8 é", "POST", "/login", 303)
            .header("content-type", "application/x-www-form-urlencoded; charset=UTF-8")
            .body("username=%C3%A9")
            .check(to_dashboard),
        row("negative Content-Length", "POST", "/login", 400)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "-1")
            .body("username=alice"),
        row("Content-Length and chunked together", "POST", "/login", 400)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "14")
            .header("transfer-encoding", "chunked")
            .body("e\r\nusername=alice\r\n0\r\n\r\n"),
        row("bad chunk size", "POST", "/login", 400)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("transfer-encoding", "chunked")
            .body("zz\r\nusername=alice\r\n0\r\n\r\n"),
        // Wrong methods on known paths: 405 with `Allow`; unknown paths: 404.
        row("PUT /login", "PUT", "/login", 405)
            .username("alice")
            .check(allow_get_post),
        row("DELETE /login", "DELETE", "/login", 405).check(allow_get_post),
        row("PATCH /login", "PATCH", "/login", 405)
            .username("alice")
            .check(allow_get_post),
        row("PUT /widgets/1", "PUT", "/widgets/1", 405)
            .signed_in()
            .check(allow_get),
        row("DELETE /widgets/1", "DELETE", "/widgets/1", 405)
            .signed_in()
            .check(allow_get),
        row("PATCH /widgets/1", "PATCH", "/widgets/1", 405)
            .signed_in()
            .check(allow_get),
        row("DELETE /widgets/6 (unknown id)", "DELETE", "/widgets/6", 405).check(allow_get),
        row("GET /logout", "GET", "/logout", 405)
            .signed_in()
            .check(allow_post),
        row("GET /api/invalidate", "GET", "/api/invalidate", 405).check(allow_post),
        row("GET /widgets/1/refresh", "GET", "/widgets/1/refresh", 405)
            .signed_in()
            .check(allow_post),
        row("POST /dashboard", "POST", "/dashboard", 405)
            .signed_in()
            .check(allow_get),
        row("OPTIONS /api/widgets/1", "OPTIONS", "/api/widgets/1", 405).check(allow_get),
        row("PUT /assets/app.css", "PUT", "/assets/app.css", 405).check(allow_get),
        row("made-up method", "BREW", "/healthz", 405).check(allow_get),
        row("POST to an unknown path", "POST", "/nope", 404),
        row(
            "DELETE an unknown deep path",
            "DELETE",
            "/widgets/1/refresh/x",
            404,
        ),
        row("made-up method, unknown path", "BREW", "/coffee", 404),
        // Cross-site posts to the browser's routes: 403 (the webhook is exempt).
        row("cross-site sign-in", "POST", "/login", 403)
            .username("mallory")
            .header("sec-fetch-site", "cross-site")
            .check(cross_site_refused),
        row("sign-in from a foreign Origin", "POST", "/login", 403)
            .username("mallory")
            .header("origin", "https://evil.example")
            .check(cross_site_refused),
        row("sign-out from a foreign Origin", "POST", "/logout", 403)
            .signed_in()
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site"),
        row("refresh from Origin: null", "POST", "/widgets/1/refresh", 403)
            .signed_in()
            .header("origin", "null"),
        row("refresh from a sibling site", "POST", "/widgets/1/refresh", 403)
            .signed_in()
            .header("sec-fetch-site", "same-site"),
        row("cross-site GET is fine", "GET", "/widgets/1", 200)
            .signed_in()
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site"),
        signed(
            row("webhook from anywhere (exempt)", "POST", "/api/invalidate", 200)
                .body(r#"{"userId":"carol","widgets":[2]}"#)
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site"),
            SECRET,
            &now,
        ),
        // The webhook.
        signed(
            row("webhook body over 16 KiB", "POST", "/api/invalidate", 413).body(&big_json),
            SECRET,
            &now,
        ),
        row("webhook, not JSON, unsigned", "POST", "/api/invalidate", 401).body("userId=alice"),
        signed(
            row("webhook, not JSON, signed", "POST", "/api/invalidate", 422).body("userId=alice"),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, no userId", "POST", "/api/invalidate", 422).body(r#"{"widgets":[1]}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, userId empty", "POST", "/api/invalidate", 422)
                .body(r#"{"userId":"","widgets":[1]}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, userId a number", "POST", "/api/invalidate", 422).body(r#"{"userId":5}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, empty userId", "POST", "/api/invalidate", 422).body(r#"{"userId":" "}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, widget 9", "POST", "/api/invalidate", 422)
                .body(r#"{"userId":"alice","widgets":[9]}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, widget 300", "POST", "/api/invalidate", 422)
                .body(r#"{"userId":"alice","widgets":[300]}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, widgets a string", "POST", "/api/invalidate", 422)
                .body(r#"{"userId":"alice","widgets":"all"}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, unknown field", "POST", "/api/invalidate", 422)
                .body(r#"{"userId":"alice","all":true}"#),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, 8000-deep JSON", "POST", "/api/invalidate", 422).body(&deep_json),
            SECRET,
            &now,
        ),
        signed(
            row("webhook, wrong secret", "POST", "/api/invalidate", 401).body(r#"{"userId":"alice"}"#),
            "not-the-secret",
            &now,
        ),
        signed(
            row("webhook, an hour old", "POST", "/api/invalidate", 401).body(r#"{"userId":"alice"}"#),
            SECRET,
            &old,
        ),
        signed(
            row("webhook, timestamp not a number", "POST", "/api/invalidate", 401)
                .body(r#"{"userId":"alice"}"#),
            SECRET,
            "soon",
        ),
        signed(
            row("webhook, timestamp i64::MAX", "POST", "/api/invalidate", 401).body(r#"{"userId":"alice"}"#),
            SECRET,
            &i64::MAX.to_string(),
        ),
        row("webhook, signature not hex", "POST", "/api/invalidate", 401)
            .header("x-percache-timestamp", &now)
            .header("x-percache-signature", "sha256=zz<script>")
            .body(r#"{"userId":"alice"}"#),
        // The user comes from the session, never from the query string: a
        // `userId` is an undeclared parameter, refused with no data at all.
        row("?userId=bob on a fragment", "GET", "/widgets/1?userId=bob", 400)
            .signed_in()
            .check(refused_parameter),
        row("?userId=bob on the JSON", "GET", "/api/widgets/1?userId=bob", 400)
            .signed_in()
            .check(refused_parameter),
        row(
            "?user=bob&userId[]=bob&%00",
            "GET",
            "/api/widgets/1?user=bob&userId[]=bob&%00=1",
            400,
        )
        .signed_in()
        .check(refused_parameter),
        row(
            "?days=30 on a widget without parameters",
            "GET",
            "/widgets/1?days=30",
            400,
        )
        .signed_in()
        .check(refused_parameter),
        row(
            "?days=31 on the analytics widget",
            "GET",
            "/api/widgets/3?days=31",
            400,
        )
        .signed_in()
        .check(refused_parameter),
        row("?days=7&days=7", "GET", "/widgets/3?days=7&days=7", 400)
            .signed_in()
            .check(refused_parameter),
        row("?days=%FF", "GET", "/widgets/3?days=%FF", 400)
            .signed_in()
            .check(refused_parameter),
        // Query strings that do not parse.
        row("/updates with since=abc", "GET", "/updates?since=abc", 400).signed_in(),
        row(
            "/updates with since past i64",
            "GET",
            "/updates?since=99999999999999999999",
            400,
        )
        .signed_in(),
        row("/updates signed out", "GET", "/updates?since=0", 401).check(hx_redirect),
        row("/updates with seen=abc", "GET", "/updates?seen=abc", 400).signed_in(),
        row("/updates with seen=1:x", "GET", "/updates?seen=1:x", 400).signed_in(),
        // A page from before a change of the widgets file: the unknown id
        // is ignored, and the page gets the cards it lacks.
        row(
            "/updates with seen of an unknown widget",
            "GET",
            "/updates?seen=9:1",
            200,
        )
        .signed_in(),
        // Headers.
        row("Host with markup", "GET", "/dashboard", 200)
            .header("host", "<script>alert(1)</script>:99999")
            .signed_in()
            .check(alices_dashboard),
        row("Host with raw bytes", "GET", "/healthz", 200).header("host", [0xff, 0xfe, b'x']),
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is a 400.
        row("two Host headers", "GET", "/healthz", 400)
            .header("host", "a.example")
            .header("host", "b.example"),
        row("no Host header", "GET", "/healthz", 400).without_host(),
        row("a 200 KB header", "GET", "/healthz", 431).header("x-big", "a".repeat(200 * 1024)),
        row("120 headers", "GET", "/healthz", 431).headers_n(120),
        row("garbage X-Request-Id", "GET", "/dashboard", 200)
            .header("x-request-id", b"../../\xff<script>\t")
            .header("request-id", "\"; drop table")
            .header("traceparent", "00-zz-zz-zz")
            .signed_in()
            .check(nothing_echoed),
        row("garbage forwarding headers", "GET", "/widgets/1", 200)
            .header("x-forwarded-for", "<script>, 999.1.1.1, ::::")
            .header("forwarded", "for=\"[::1\";proto=gopher;host=../")
            .header("x-forwarded-host", "../../")
            .signed_in()
            .check(nothing_echoed),
        row("garbage HX headers", "GET", "/widgets/1", 200)
            .header("hx-request", "maybe")
            .header("hx-current-url", "javascript:alert(1)")
            .header("accept-encoding", "gzip;q=abc, *;q=-1")
            .header("accept", "*/*;q=<script>")
            .signed_in(),
        row("DEL in a header value", "GET", "/widgets/1", 400)
            .header("accept", "\u{7f}/\u{7f}")
            .signed_in(),
        // Session cookies: anything but a valid one is signed out, never an error.
        row("no cookie, dashboard", "GET", "/dashboard", 303).check(to_login),
        row("no cookie, fragment", "GET", "/widgets/1", 401).check(hx_redirect),
        row("truncated cookie, dashboard", "GET", "/dashboard", 303)
            .session(truncated)
            .check(to_login),
        row("truncated cookie, fragment", "GET", "/widgets/1", 401)
            .session(truncated)
            .check(hx_redirect),
        row("tampered cookie, dashboard", "GET", "/dashboard", 303)
            .session(&tampered)
            .check(to_login),
        row("tampered cookie, fragment", "GET", "/widgets/1", 401)
            .session(&tampered)
            .check(hx_redirect),
        row("foreign-key cookie, dashboard", "GET", "/dashboard", 303)
            .session(foreign_value)
            .check(to_login),
        row("foreign-key cookie, fragment", "GET", "/widgets/1", 401)
            .session(foreign_value)
            .check(hx_redirect),
        row("foreign-key cookie, JSON", "GET", "/api/widgets/1", 401).session(foreign_value),
        row("foreign-key cookie, refresh", "POST", "/widgets/1/refresh", 401).session(foreign_value),
        row("8 KB cookie, dashboard", "GET", "/dashboard", 303)
            .session(&oversized)
            .check(to_login),
        row("8 KB cookie, fragment", "GET", "/widgets/1", 401)
            .session(&oversized)
            .check(hx_redirect),
        row("empty cookie value", "GET", "/dashboard", 303)
            .session("")
            .check(to_login),
        row("percent garbage cookie", "GET", "/widgets/1", 401).session("%zz%00%"),
        row("cookie header of raw bytes", "GET", "/dashboard", 303)
            .cookie_header([b'p', b'=', 0xff, 0xc3, 0x28, b';', b' ', 0x80])
            .check(to_login),
        row("cookie name in upper case", "GET", "/dashboard", 303)
            .cookie_header(format!("PERCACHE_SESSION={valid_value}"))
            .check(to_login),
        row("cookie without a name", "GET", "/widgets/1", 401).cookie_header(format!("={valid_value}")),
        // Two session cookies: the first one is the one read.
        row("garbage cookie before the valid one", "GET", "/dashboard", 303)
            .cookie_header(format!("percache_session=garbage; {valid}"))
            .check(to_login),
        row("valid cookie before garbage", "GET", "/dashboard", 200)
            .cookie_header(format!("{valid}; percache_session=garbage; percache_session="))
            .check(alices_dashboard),
    ];
    rows.push(
        row("valid cookie, for reference", "GET", "/api/widgets/1", 200)
            .signed_in()
            .check(alices_json),
    );
    rows
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_the_server_keeps_serving() {
    // Arrange: alice is signed in; an instance with another session key made a cookie too.
    let app = spawn_app(StoreKind::Memory).await;
    let valid = session_cookie(&app, "alice").await;
    let other = spawn_app(StoreKind::Memory)
        .settings(|s| s.session_key = Some(FOREIGN_SESSION_KEY.into()))
        .await;
    let foreign = session_cookie(&other, "alice").await;
    assert_ne!(valid, foreign);
    let host = app.address.trim_start_matches("http://").to_owned();
    let rows = catalog(app.cache.now() / 1000, &valid, &foreign);
    assert!(rows.len() >= 45, "the catalog has {} rows", rows.len());

    // Act + Assert: every row, collecting every failure.
    let mut failures = Vec::new();
    let mut server_errors = Vec::new();
    for r in &rows {
        let request = r.request(&host, &valid);
        match raw_request(&host, &request).await {
            Err(e) => failures.push(format!("{}: no answer: {e}", r.what)),
            Ok(resp) => {
                if resp.status >= 500 {
                    server_errors.push(format!("{}: {}", r.what, resp.status));
                }
                if resp.status != r.expect {
                    failures.push(format!(
                        "{} ({} {}): status {}, expected {}; body {:.200}",
                        r.what,
                        r.method,
                        r.path.chars().take(60).collect::<String>(),
                        resp.status,
                        r.expect,
                        resp.text()
                    ));
                } else if let Some(Err(e)) = r.check.map(|check| check(&resp)) {
                    failures.push(format!("{}: {e}", r.what));
                }
            }
        }
    }

    // The server still serves, and alice is still signed in.
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200, "/healthz after the catalog");
    let again = raw_request(
        &host,
        &row("after", "GET", "/api/widgets/2", 200)
            .signed_in()
            .request(&host, &valid),
    )
    .await
    .expect("an answer after the catalog");
    assert_eq!(again.status, 200);
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:#?}");
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// A correctly signed call whose timestamp is at the far end of `i64` is too
/// old: 401, like any other expired timestamp. (`now - ts` must not overflow:
/// in a debug build that panics and takes the worker thread down with every
/// connection it holds.)
#[tokio::test]
async fn webhook_timestamps_at_the_ends_of_i64_are_refused() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut failures = Vec::new();
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX] {
        let request = signed(
            row("extreme timestamp", "POST", "/api/invalidate", 401).body(r#"{"userId":"alice"}"#),
            SECRET,
            &ts.to_string(),
        )
        .request(&host, "");
        match raw_request(&host, &request).await {
            Ok(resp) if resp.status == 401 => {}
            Ok(resp) => failures.push(format!("timestamp {ts}: status {}", resp.status)),
            Err(e) => failures.push(format!("timestamp {ts}: no answer ({e})")),
        }
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert!(failures.is_empty(), "{failures:#?}");
}
