//! fulcrum-config
