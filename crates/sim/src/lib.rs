//! fulcrum-sim
