//! The switch's brain, apart from any file descriptor: which ports a frame goes to
//! (MAC learning, as a bridge does), and what the links do to it on the way (cut,
//! dropped, delayed). Pure, so its rules are tested frame by frame.

use std::collections::HashMap;
use std::time::Duration;

use crate::links::Links;

/// Where a frame goes, and how late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub port: usize,
    pub delay: Duration,
}

/// Frames counted by fate, for the lab's own report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub forwarded: u64,
    pub cut: u64,
    pub lost: u64,
    pub malformed: u64,
}

/// Ports are hosts, in the order the lab gave them.
pub struct Fabric {
    hosts: Vec<String>,
    macs: HashMap<[u8; 6], usize>,
    /// `cut[a][b]`: frames between ports a and b are dropped.
    cut: Vec<Vec<bool>>,
    delay: Vec<Duration>,
    /// Chance in [0, 1] that a frame a port sends is dropped.
    loss: Vec<f64>,
    rng: u64,
    pub counts: Counts,
}

/// An Ethernet header: destination and source MAC, EtherType.
const HEADER: usize = 14;

impl Fabric {
    pub fn new(hosts: Vec<String>, seed: u64) -> Fabric {
        let n = hosts.len();
        Fabric {
            hosts,
            macs: HashMap::new(),
            cut: vec![vec![false; n]; n],
            delay: vec![Duration::ZERO; n],
            loss: vec![0.0; n],
            rng: seed | 1,
            counts: Counts::default(),
        }
    }

    /// Takes on the links' current state.
    pub fn set_links(&mut self, links: &Links) {
        for (a, host_a) in self.hosts.iter().enumerate() {
            for (b, host_b) in self.hosts.iter().enumerate() {
                self.cut[a][b] = links.cut(host_a, host_b);
            }
            let link = links.hosts.get(host_a);
            self.delay[a] = Duration::from_millis(link.map_or(0, |l| l.delay_ms));
            self.loss[a] = link.map_or(0.0, |l| l.loss_percent / 100.0);
        }
    }

    /// Routes one frame that port `from` sent: the deliveries go into `out` (cleared).
    pub fn route(&mut self, from: usize, frame: &[u8], out: &mut Vec<Delivery>) {
        out.clear();
        if frame.len() < HEADER || from >= self.hosts.len() {
            self.counts.malformed += 1;
            return;
        }
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        // Learn where the sender is (a group address never sends).
        if src[0] & 1 == 0 {
            self.macs.insert(src, from);
        }
        // netem's loss acts on a frame as its sender's link sends it: once per frame.
        if self.loss[from] > 0.0 && self.chance() < self.loss[from] {
            self.counts.lost += 1;
            return;
        }
        let delay = self.delay[from];
        let known = (dst[0] & 1 == 0).then(|| self.macs.get(&dst).copied()).flatten();
        match known {
            Some(port) if port == from => {}
            Some(port) => self.deliver(from, port, delay, out),
            // Broadcast, multicast or not yet learned: flooded, as a bridge does.
            None => (0..self.hosts.len()).filter(|&p| p != from).for_each(|p| self.deliver(from, p, delay, out)),
        }
    }

    fn deliver(&mut self, from: usize, to: usize, delay: Duration, out: &mut Vec<Delivery>) {
        if self.cut[from][to] {
            self.counts.cut += 1;
        } else {
            self.counts.forwarded += 1;
            out.push(Delivery { port: to, delay });
        }
    }

    /// A uniform draw in [0, 1) (xorshift64*: loss needs no more than that).
    fn chance(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkCommand;

    fn hosts() -> Vec<String> {
        ["control", "node-1", "node-2"].map(String::from).to_vec()
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(b"payload");
        f
    }

    const BROADCAST: [u8; 6] = [0xff; 6];
    fn mac(n: u8) -> [u8; 6] {
        [0x02, 0, 0, 0, 0, n]
    }

    fn ports(out: &[Delivery]) -> Vec<usize> {
        out.iter().map(|d| d.port).collect()
    }

    #[test]
    fn floods_until_it_learns_then_switches() {
        let mut f = Fabric::new(hosts(), 7);
        let mut out = Vec::new();
        f.route(0, &frame(BROADCAST, mac(0)), &mut out);
        assert_eq!(ports(&out), [1, 2], "a broadcast goes everywhere but back");
        f.route(0, &frame(mac(2), mac(0)), &mut out);
        assert_eq!(ports(&out), [1, 2], "unknown: flooded");
        f.route(2, &frame(mac(0), mac(2)), &mut out);
        assert_eq!(ports(&out), [0], "learned from the first frame");
        f.route(0, &frame(mac(2), mac(0)), &mut out);
        assert_eq!(ports(&out), [2], "learned from the answer");
        f.route(1, &frame(mac(1), mac(1)), &mut out);
        assert!(out.is_empty(), "a frame to its own port stays there");
        f.route(1, &[0u8; 5], &mut out);
        assert!(out.is_empty());
        assert_eq!(f.counts.malformed, 1);
    }

    #[test]
    fn a_cut_host_gets_and_sends_nothing_and_the_others_still_talk() {
        let mut f = Fabric::new(hosts(), 7);
        let mut links = Links::default();
        links.apply(&LinkCommand::Partition { host: "node-2".into(), from: vec![] }, &hosts()).expect("cut");
        f.set_links(&links);
        let mut out = Vec::new();
        f.route(0, &frame(BROADCAST, mac(0)), &mut out);
        assert_eq!(ports(&out), [1], "the broadcast reaches only the hosts still connected");
        f.route(2, &frame(BROADCAST, mac(2)), &mut out);
        assert!(out.is_empty(), "nothing leaves the cut host");
        assert_eq!(f.counts.cut, 3);
        links.apply(&LinkCommand::Heal { host: "node-2".into() }, &hosts()).expect("heal");
        f.set_links(&links);
        f.route(2, &frame(mac(0), mac(2)), &mut out);
        assert_eq!(ports(&out), [0]);
    }

    #[test]
    fn delay_and_loss_act_on_what_the_host_sends() {
        let mut f = Fabric::new(hosts(), 7);
        let mut links = Links::default();
        links.apply(&LinkCommand::Delay { host: "node-1".into(), ms: 80 }, &hosts()).expect("delay");
        links.apply(&LinkCommand::Loss { host: "node-2".into(), percent: 30.0 }, &hosts()).expect("loss");
        f.set_links(&links);
        let mut out = Vec::new();
        f.route(1, &frame(mac(0), mac(1)), &mut out);
        assert!(out.iter().all(|d| d.delay == Duration::from_millis(80)));
        f.route(0, &frame(mac(1), mac(0)), &mut out);
        assert_eq!(out, [Delivery { port: 1, delay: Duration::ZERO }], "frames to the slow host are not delayed");
        let mut delivered = 0;
        for _ in 0..10_000 {
            f.route(2, &frame(mac(0), mac(2)), &mut out);
            delivered += out.len();
        }
        // 30 % lost: 7,000 expected; 6 sigma of a binomial(10000, 0.3) is about 275.
        assert!((6_700..=7_300).contains(&delivered), "{delivered}");
        assert_eq!(f.counts.lost as usize, 10_000 - delivered);
    }
}
