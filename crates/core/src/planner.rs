//! The scaling planner: pool state and events in, actions out. Filled in by issue #4.
