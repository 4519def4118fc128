//! The healer's API: state, actions, approvals, pause and resets.
