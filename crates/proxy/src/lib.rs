//! fulcrum-proxy
