//! Log lines as the collector's `/api/v1/logs` returns them.
