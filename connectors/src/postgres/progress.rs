//! Which position the change feed may confirm: the end of the last
//! transaction whose events are all acked.
//!
//! Events are numbered as they are dispatched (the ledger's positions);
//! each commit remembers how many events came before it. When the ledger's
//! watermark passes that number, every event of the transaction is
//! durable and its end LSN can be confirmed to the server.

use std::collections::VecDeque;

use weir_engine::Checkpoint;

use super::lsn::Lsn;

/// Event numbering and confirmable positions of one stream.
#[derive(Debug, Default)]
pub struct Progress {
    /// Events numbered so far (the position after the last one).
    pub counter: u64,
    /// Events handed to the engine (`counter` minus those still gathering).
    pub dispatched: u64,
    /// Events acked (the ledger's watermark).
    pub acked: u64,
    /// `(events before the commit, end LSN)` of commits not yet confirmable.
    commits: VecDeque<(u64, Lsn)>,
    /// The position confirmed to the server.
    pub confirmed: Lsn,
    /// Inside a transaction (between `Begin` and `Commit`).
    pub in_txn: bool,
    /// The server's position from its last keepalive outside a transaction.
    idle_end: Lsn,
}

impl Progress {
    /// Starts at a confirmed position.
    pub fn new(confirmed: Lsn) -> Progress {
        Progress {
            confirmed,
            ..Progress::default()
        }
    }

    /// Numbers the next event; returns its number.
    pub fn next_event(&mut self) -> u64 {
        self.counter += 1;
        self.counter - 1
    }

    /// A transaction committed; its events are those numbered so far.
    pub fn commit(&mut self, end: Lsn) {
        self.in_txn = false;
        self.commits.push_back((self.counter, end));
    }

    /// A keepalive reported the server's position.
    pub fn keepalive(&mut self, wal_end: Lsn) {
        if !self.in_txn {
            self.idle_end = self.idle_end.max(wal_end);
        }
    }

    /// Takes moved watermarks; returns whether `confirmed` moved.
    pub fn acked(&mut self, checkpoints: &[Checkpoint], nothing_gathering: bool) -> bool {
        let before = self.confirmed;
        for cp in checkpoints {
            self.acked = self.acked.max(cp.position);
        }
        while let Some(&(events, end)) = self.commits.front() {
            if events > self.acked {
                break;
            }
            self.confirmed = self.confirmed.max(end);
            self.commits.pop_front();
        }
        // nothing of ours in flight: what the server skipped (other tables,
        // other databases) can be confirmed so it does not keep that WAL
        if self.commits.is_empty()
            && self.acked == self.counter
            && !self.in_txn
            && nothing_gathering
        {
            self.confirmed = self.confirmed.max(self.idle_end);
        }
        self.confirmed != before
    }

    /// The connection broke: events not dispatched are dropped (the server
    /// sends them again from the confirmed position).
    pub fn rewind(&mut self) {
        self.counter = self.dispatched;
        let dispatched = self.dispatched;
        self.commits.retain(|&(events, _)| events <= dispatched);
        self.in_txn = false;
        self.idle_end = self.confirmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(position: u64) -> Vec<Checkpoint> {
        vec![Checkpoint {
            partition: 0,
            position,
        }]
    }

    #[test]
    fn a_transaction_is_confirmed_only_when_all_its_events_are_acked() {
        let mut p = Progress::new(Lsn(10));
        p.in_txn = true;
        for _ in 0..3 {
            p.next_event();
        }
        p.commit(Lsn(100));
        p.in_txn = true;
        p.next_event();
        p.commit(Lsn(200));
        p.dispatched = 4;
        assert!(!p.acked(&cp(2), true));
        assert_eq!(p.confirmed, Lsn(10));
        assert!(p.acked(&cp(3), true));
        assert_eq!(p.confirmed, Lsn(100));
        assert!(p.acked(&cp(4), true));
        assert_eq!(p.confirmed, Lsn(200));
    }

    #[test]
    fn keepalives_move_an_idle_stream_but_not_one_with_events_in_flight() {
        let mut p = Progress::new(Lsn(10));
        p.keepalive(Lsn(50));
        assert!(p.acked(&[], true));
        assert_eq!(p.confirmed, Lsn(50));
        p.in_txn = true;
        p.next_event();
        p.keepalive(Lsn(90)); // inside a transaction: ignored
        p.commit(Lsn(80));
        p.keepalive(Lsn(120));
        assert!(!p.acked(&[], false));
        p.dispatched = 1;
        assert!(p.acked(&cp(1), true));
        assert_eq!(p.confirmed, Lsn(120));
    }

    #[test]
    fn rewind_forgets_what_was_not_dispatched() {
        let mut p = Progress::new(Lsn(10));
        p.next_event();
        p.commit(Lsn(20));
        p.dispatched = 1;
        p.next_event();
        p.commit(Lsn(30));
        p.in_txn = true;
        p.next_event();
        p.rewind();
        assert_eq!(p.counter, 1);
        assert!(!p.in_txn);
        assert!(p.acked(&cp(1), true));
        assert_eq!(p.confirmed, Lsn(20));
    }
}
