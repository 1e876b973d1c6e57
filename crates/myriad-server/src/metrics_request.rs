//! The request step of the `/metrics` endpoint, pure: what to answer to the
//! bytes received so far. `metrics::MetricsHttp::on_data` acts on it; the
//! `metrics_request` fuzz target feeds it arbitrary bytes.

/// A request head still incomplete past this many bytes is refused (431).
pub const MAX_REQUEST: usize = 8192;

/// What the bytes received so far call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The head is incomplete: wait for more bytes.
    Partial,
    /// The head is incomplete and already longer than [`MAX_REQUEST`]: 431.
    TooLarge,
    /// `GET /metrics` (a query string allowed): the exposition.
    Metrics,
    /// Any other complete request: 404.
    NotFound,
    /// Not an HTTP/1.x request (or more than 32 headers): 400.
    Bad,
}

/// Parses the request head at the start of `data`.
pub fn parse_request(data: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Partial) if data.len() > MAX_REQUEST => Request::TooLarge,
        Ok(httparse::Status::Partial) => Request::Partial,
        Ok(httparse::Status::Complete(_)) => {
            let metrics = matches!((req.method, req.path),
                (Some("GET"), Some(p)) if p == "/metrics" || p.starts_with("/metrics?"));
            if metrics {
                Request::Metrics
            } else {
                Request::NotFound
            }
        }
        Err(_) => Request::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(parse_request(get("/metrics").as_bytes()), Request::Metrics);
        assert_eq!(
            parse_request(get("/metrics?x=1").as_bytes()),
            Request::Metrics
        );
        assert_eq!(
            parse_request(get("/metricsx").as_bytes()),
            Request::NotFound
        );
        assert_eq!(parse_request(get("/").as_bytes()), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::NotFound
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n"),
            Request::Partial
        );
        assert_eq!(parse_request(b""), Request::Partial);
        assert_eq!(parse_request(b"\x16\x03\x01\x02\x00"), Request::Bad);
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..33 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many), Request::Bad);
    }

    #[test]
    fn an_incomplete_head_is_refused_past_the_limit() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_REQUEST, b'a');
        assert_eq!(parse_request(&head), Request::Partial);
        head.push(b'a');
        assert_eq!(parse_request(&head), Request::TooLarge);
    }
}
