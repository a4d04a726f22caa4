//! `fulcrum simulate`: run a scenario file through the simulator.
