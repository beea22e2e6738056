//! Viewer ids: dense slots, reused, each use told apart by a generation (see [`ViewerId`]).

use crate::types::ViewerId;

/// Hands out viewer ids. The most recently freed slot is taken first, so replays of the same
/// inputs get the same ids.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    /// The generation of each slot's current owner (or of its next, while free).
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl Ids {
    pub(crate) fn take(&mut self) -> ViewerId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.generations.push(1);
                (self.generations.len() - 1) as u32
            }
        };
        let generation = self.generations.get(slot as usize).copied().unwrap_or(1);
        ViewerId((u64::from(generation) << 32) | u64::from(slot))
    }

    /// Frees the id's slot; the slot's generation moves on, so the id is never valid again
    /// (an id not handed out, or freed already, is ignored).
    pub(crate) fn give_back(&mut self, id: ViewerId) {
        if let Some(g) = self.generations.get_mut(id.slot()) {
            if u64::from(*g) == id.0 >> 32 {
                *g = g.wrapping_add(1).max(1);
                self.free.push(id.slot() as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_ids_are_not() {
        let mut ids = Ids::default();
        let a = ids.take();
        let b = ids.take();
        assert_eq!((a.slot(), b.slot()), (0, 1));
        ids.give_back(a);
        ids.give_back(a); // twice: ignored
        let c = ids.take();
        assert_eq!(c.slot(), 0);
        assert_ne!(c, a);
        assert_eq!(ids.take().slot(), 2);
        ids.give_back(a); // stale: slot 0 belongs to c now
        assert_eq!(ids.take().slot(), 3);
    }
}
