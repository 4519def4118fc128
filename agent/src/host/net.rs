//! Network families, as node_exporter's netdev, netclass, netstat, sockstat and conntrack
//! collectors report them. (Being written.)

use std::path::Path;

use hale_core::metrics::Family;

/// Appends the network families read under `root` (`/` on a host).
pub fn collect(_root: &Path, _out: &mut Vec<Family>) {}
