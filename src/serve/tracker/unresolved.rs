//! The writes of one batch whose answers were lost, until what is stored tells whether one of
//! them landed: the rule that a call is never answered as failed while its write may be stored.

use crate::core::guard::marker_records;

use super::bookkeeping::Settled;

/// One write sent without a usable answer: its id, and what it settles if it landed.
struct Sent {
    id: String,
    settled: Settled,
    /// The server answered (with an error): the request is over, so a read made after the
    /// answer shows whether it was applied. Without an answer (a timeout, a broken connection,
    /// a gateway's 502/504) the request may still be in flight, and only a later guarded
    /// write proves it never lands.
    ended: bool,
    /// Proven not applied, now and for ever.
    ruled_out: bool,
}

/// The lost writes of one batch. At most one of them can ever land: each write's guard pins
/// the marker annotation as read before it, and every write changes it.
#[derive(Default)]
pub(super) struct Unresolved {
    sent: Vec<Sent>,
}

impl Unresolved {
    /// A write was sent and its answer was lost (`ended`: the server answered an error).
    pub(super) fn sent(&mut self, id: String, settled: Settled, ended: bool) {
        self.sent.push(Sent {
            id,
            settled,
            ended,
            ruled_out: false,
        });
    }

    /// A read of the pod, made after every answer so far: the settled batch of the write it
    /// shows stored, if any; otherwise the writes that had ended are ruled out. Even a write
    /// ruled out before is looked for: checking costs nothing and a late landing is still
    /// caught.
    pub(super) fn read(&mut self, marker: Option<&str>) -> Option<(String, Settled)> {
        if let Some(landed) = self
            .sent
            .iter()
            .position(|write| marker_records(marker, std::slice::from_ref(&write.id)))
        {
            let write = self.sent.swap_remove(landed);
            self.sent.clear();
            return Some((write.id, write.settled));
        }
        for write in &mut self.sent {
            write.ruled_out |= write.ended;
        }
        None
    }

    /// A later guarded write was stored: since its guard pinned the marker, none of these
    /// writes landed before it, and none can land after it.
    pub(super) fn superseded(&mut self) -> usize {
        let lost = self.sent.len();
        self.sent.clear();
        lost
    }

    /// Whether some write may have been stored, as far as anyone can tell yet.
    pub(super) fn any(&self) -> bool {
        self.sent.iter().any(|write| !write.ruled_out)
    }

    /// How many writes are proven not applied (for the lost-answer metric when the batch ends).
    pub(super) fn ruled_out(&self) -> usize {
        self.sent.iter().filter(|write| write.ruled_out).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(after: i64) -> Settled {
        Settled {
            answers: vec![Ok(after)],
            before: after - 1,
            after,
            released: Vec::new(),
        }
    }

    #[test]
    fn a_read_that_shows_a_lost_write_settles_the_batch_with_its_answers() {
        let mut unresolved = Unresolved::default();
        unresolved.sent("a-1".into(), settled(1), false);
        unresolved.sent("a-2".into(), settled(1), true);
        let (id, landed) = unresolved.read(Some("x-9 a-1")).expect("a-1 landed");
        assert_eq!(id, "a-1");
        assert_eq!(landed.after, 1);
        assert!(
            !unresolved.any(),
            "nothing is left to resolve once one landed"
        );
    }

    #[test]
    fn a_read_rules_out_only_the_writes_the_server_answered() {
        let mut unresolved = Unresolved::default();
        unresolved.sent("a-1".into(), settled(1), true);
        assert!(unresolved.any());
        assert!(unresolved.read(Some("x-9")).is_none());
        assert!(!unresolved.any(), "answered 500, and not stored after it");
        assert_eq!(unresolved.ruled_out(), 1);
        unresolved.sent("a-2".into(), settled(1), false);
        assert!(unresolved.read(None).is_none());
        assert!(
            unresolved.any(),
            "a write without an answer may still be in flight"
        );
    }

    #[test]
    fn a_write_without_an_answer_is_still_found_when_it_lands_late() {
        let mut unresolved = Unresolved::default();
        unresolved.sent("a-1".into(), settled(4), false);
        assert!(unresolved.read(Some("x-1")).is_none());
        assert_eq!(
            unresolved
                .read(Some("x-1 a-1"))
                .map(|(id, _)| id)
                .as_deref(),
            Some("a-1")
        );
    }

    #[test]
    fn a_stored_guarded_write_resolves_every_lost_one() {
        let mut unresolved = Unresolved::default();
        unresolved.sent("a-1".into(), settled(1), false);
        unresolved.sent("a-2".into(), settled(1), true);
        assert_eq!(unresolved.superseded(), 2);
        assert!(!unresolved.any());
    }
}
