//! L7: the HTTP request path.
//!
//! ```text
//! request -> framing check -> Route match (rate limit, redirect) -> Cluster snapshot
//!   -> Selector pick (skip tried backends) -> upstream (pooled, timeouts)
//!   -> stream response back; outcome feeds Load
//!   -> connect failure with the body unread: try another backend
//! ```

mod error;
mod grpc;
mod routing;
pub mod server;
mod service;
pub mod upgrade;

pub use error::ProxyError;
pub use service::{handle, ConnInfo};
