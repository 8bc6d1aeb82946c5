//! A minimal HTTP/1.1 client (placeholder until the net branch lands).
use super::{NetError, NetOptions, Url};

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

pub async fn post_json(_url: &Url, _body: &serde_json::Value, _headers: &[(String, String)], _opts: &NetOptions) -> Result<HttpResponse, NetError> {
    Err(NetError::Http("not implemented".into()))
}
