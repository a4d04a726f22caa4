//! fulcrum-testbed
