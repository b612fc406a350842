//! The steps that take a deployment from the instances it has to the ones its new spec asks
//! for, as a pure function. One surge instance at most: each new instance is ready before an
//! old one is drained, so serving capacity never drops below the smaller of the two counts.

/// One step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start a new instance and wait until it passes readiness.
    Add,
    /// Take this instance (by index) out of routing, let its requests finish, stop it.
    Drain(u32),
}

/// `current`: the indices of the running instances, in order. `same_shape`: the containers
/// need not change (only the count may), so current instances are kept.
pub fn steps(current: &[u32], wanted: usize, same_shape: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if same_shape {
        steps.extend((current.len()..wanted).map(|_| Step::Add));
        // Scale down from the newest.
        steps
            .extend(current.iter().rev().take(current.len().saturating_sub(wanted)).map(|&i| Step::Drain(i)));
        return steps;
    }
    for i in 0..current.len().max(wanted) {
        if i < wanted {
            steps.push(Step::Add);
        }
        if let Some(&old) = current.get(i) {
            steps.push(Step::Drain(old));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::Step::{Add, Drain};
    use super::*;

    #[test]
    fn a_new_image_replaces_instances_one_at_a_time_new_before_old() {
        assert_eq!(steps(&[0, 1], 2, false), [Add, Drain(0), Add, Drain(1)]);
    }

    #[test]
    fn a_replacement_that_also_scales_up_or_down() {
        assert_eq!(steps(&[0], 3, false), [Add, Drain(0), Add, Add]);
        assert_eq!(steps(&[3, 4, 5], 1, false), [Add, Drain(3), Drain(4), Drain(5)]);
    }

    #[test]
    fn scaling_alone_keeps_the_instances_it_has() {
        assert_eq!(steps(&[0, 1], 4, true), [Add, Add]);
        assert_eq!(steps(&[0, 1, 2], 1, true), [Drain(2), Drain(1)]);
        assert_eq!(steps(&[0, 1], 2, true), []);
    }
}
