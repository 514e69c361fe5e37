//! The order a fine-tuning stage visits its examples in: every example once per epoch,
//! each epoch in a fresh seeded shuffle. The position is just the count drawn so far, so
//! a resumed run, starting from `step * examples per step`, draws what an unbroken one
//! would.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub struct Epochs {
    n: usize,
    seed: u64,
    drawn: u64,
    order: (u64, Vec<usize>),
}

impl Epochs {
    /// Indices into `n` examples (at least one), `drawn` of them already taken.
    pub fn new(n: usize, seed: u64, drawn: u64) -> Self {
        let n = n.max(1);
        let mut e = Self {
            n,
            seed,
            drawn,
            order: (0, Vec::new()),
        };
        e.order = (0, e.shuffled(0));
        e
    }

    fn shuffled(&self, epoch: u64) -> Vec<usize> {
        let mut o: Vec<usize> = (0..self.n).collect();
        o.shuffle(&mut ChaCha8Rng::seed_from_u64(
            self.seed.wrapping_add(epoch),
        ));
        o
    }

    /// The next example's index.
    pub fn next_index(&mut self) -> usize {
        let epoch = self.drawn / self.n as u64;
        if self.order.0 != epoch {
            self.order = (epoch, self.shuffled(epoch));
        }
        let i = self.order.1[(self.drawn % self.n as u64) as usize];
        self.drawn += 1;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_once_per_epoch_and_resumable() {
        let mut e = Epochs::new(5, 3, 0);
        let first: Vec<usize> = (0..10).map(|_| e.next_index()).collect();
        let mut a = first[..5].to_vec();
        a.sort();
        assert_eq!(a, vec![0, 1, 2, 3, 4]);
        assert_ne!(first[..5], first[5..], "each epoch is shuffled afresh");
        let mut resumed = Epochs::new(5, 3, 7);
        let rest: Vec<usize> = (0..3).map(|_| resumed.next_index()).collect();
        assert_eq!(rest, first[7..10]);
    }
}
