//! A minimal HTTP/1.1 client: one request per connection, JSON bodies,
//! `Content-Length` in bytes, responses read by length, chunks or close,
//! with a size cap and a deadline.
