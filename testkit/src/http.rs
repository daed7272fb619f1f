//! HTTP clients as the tests need them, and sign-in through a login form.

/// A client with its own cookie jar that never follows redirects: a test
/// sees the 303 of a sign-in and keeps the session cookie.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building a reqwest client")
}

/// Posts `username=<user>` to `<base>/login` with `client` (its cookie jar,
/// if any, keeps the session).
pub async fn sign_in(client: &reqwest::Client, base: &str, user: &str) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/login"))
        .form(&[("username", user)])
        .send()
        .await
}

/// Signs in `user` (expecting the form's 303) and returns the session cookie
/// (`name=value`) to send back in a `Cookie` header: for clients without a
/// jar, such as many simulated users on one client.
pub async fn login_cookie(client: &reqwest::Client, base: &str, user: &str) -> Result<String, String> {
    let resp = sign_in(client, base, user)
        .await
        .map_err(|e| format!("POST /login: {e}"))?;
    if resp.status() != 303 {
        return Err(format!("POST /login: {}", resp.status()));
    }
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("POST /login: no set-cookie")?;
    Ok(cookie.to_owned())
}

/// A server under test as one browser sees it: its base URL and a client
/// with its own cookie jar that does not follow redirects.
pub struct Site {
    pub address: String,
    pub client: reqwest::Client,
}

impl Site {
    /// `address` is the base URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(address: String) -> Self {
        Self {
            address,
            client: new_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Signs in through the form with the site's own client.
    pub async fn login(&self, username: &str) -> reqwest::Response {
        self.login_with(&self.client, username).await
    }

    /// Signs in through the form with another client (another browser).
    pub async fn login_with(&self, client: &reqwest::Client, username: &str) -> reqwest::Response {
        let resp = sign_in(client, &self.address, username).await;
        resp.unwrap_or_else(|e| panic!("POST /login as {username}: {e}"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let resp = self.client.get(self.url(path)).send().await;
        resp.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        let resp = self.client.post(self.url(path)).send().await;
        resp.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// A response header as text (empty if absent or not text).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    let value = resp.headers().get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or_default().to_owned()
}
