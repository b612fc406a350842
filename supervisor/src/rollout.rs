//! The next step that takes a deployment from the instances it has to the ones its spec asks
//! for, as a pure function of what they are right now. It is asked again after every step,
//! so an instance that stops serving (or starts) meanwhile changes what comes next.
//!
//! The rules, in order:
//! 1. More instances than wanted (a surge instance is up, or the count went down): drain one.
//!    Old instances go before current ones, instances not serving before serving ones, and
//!    the newest first: capacity is only ever given up where there is none.
//! 2. Fewer current instances than wanted: add one (and wait until it is ready), so at most
//!    one surge instance is up at a time.
//! 3. Otherwise the deployment is as its spec asks.
//!
//! So a rolling update never drops below the serving capacity it had, and never leaves a
//! deployment that had a ready instance without one.

/// One instance as the rollout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub index: u32,
    /// Its container was made from the spec being applied.
    pub current: bool,
    /// It takes requests right now.
    pub serving: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start a new instance of the current spec and wait until it passes readiness.
    Add,
    /// Take this instance (by index) out of routing, let its requests finish, stop it.
    Drain(u32),
}

pub fn next(members: &[Member], wanted: usize) -> Option<Step> {
    if members.len() > wanted {
        // Worst first: old, then not serving, then newest.
        let worst = members.iter().max_by_key(|m| (!m.current, !m.serving, m.index))?;
        return Some(Step::Drain(worst.index));
    }
    let current = members.iter().filter(|m| m.current).count();
    (current < wanted).then_some(Step::Add)
}

#[cfg(test)]
mod tests {
    use super::Step::{Add, Drain};
    use super::*;

    fn old(index: u32, serving: bool) -> Member {
        Member { index, current: false, serving }
    }

    fn new(index: u32) -> Member {
        Member { index, current: true, serving: true }
    }

    /// Runs the rollout to its end, as the supervisor would with instances that become
    /// ready when added; returns the steps and the fewest serving instances seen after each.
    fn run(mut members: Vec<Member>, wanted: usize) -> (Vec<Step>, usize) {
        let mut steps = Vec::new();
        let mut least_serving = usize::MAX;
        while let Some(step) = next(&members, wanted) {
            match step {
                Add => {
                    let index = members.iter().map(|m| m.index + 1).max().unwrap_or(0);
                    members.push(new(index));
                }
                Drain(i) => members.retain(|m| m.index != i),
            }
            steps.push(step);
            least_serving = least_serving.min(members.iter().filter(|m| m.serving).count());
            assert!(steps.len() < 100, "the rollout ends");
        }
        (steps, least_serving)
    }

    #[test]
    fn a_new_spec_replaces_instances_one_at_a_time_new_before_old() {
        let (steps, least) = run(vec![old(0, true), old(1, true)], 2);
        assert_eq!(steps, [Add, Drain(1), Add, Drain(0)]);
        assert_eq!(least, 2, "capacity never drops");
    }

    #[test]
    fn an_instance_that_is_not_serving_is_drained_before_one_that_is() {
        // The outage this rule fixes: with the ready instance drained first, the deployment
        // was left with only the unready one.
        let (steps, least) = run(vec![old(0, true), old(1, false)], 2);
        assert_eq!(steps, [Add, Drain(1), Add, Drain(0)]);
        assert_eq!(least, 2, "draining the unready one first costs no capacity");
        let (steps, _) = run(vec![old(0, false), old(1, true)], 2);
        assert_eq!(steps, [Add, Drain(0), Add, Drain(1)]);
    }

    #[test]
    fn a_deployment_with_no_serving_instance_gets_a_new_one_before_losing_any() {
        let (steps, _) = run(vec![old(0, false)], 1);
        assert_eq!(steps, [Add, Drain(0)]);
    }

    #[test]
    fn a_replacement_that_also_scales_up_or_down() {
        assert_eq!(run(vec![old(0, true)], 3).0, [Add, Add, Add, Drain(0)]);
        assert_eq!(
            run(vec![old(3, true), old(4, true), old(5, true)], 1).0,
            [Drain(5), Drain(4), Add, Drain(3)]
        );
    }

    #[test]
    fn scaling_alone_keeps_the_instances_it_has_and_sheds_the_unready_first() {
        assert_eq!(run(vec![new(0), new(1)], 4).0, [Add, Add]);
        assert_eq!(run(vec![new(0), new(1), new(2)], 1).0, [Drain(2), Drain(1)]);
        let unready = Member { index: 0, current: true, serving: false };
        assert_eq!(run(vec![unready, new(1), new(2)], 2).0, [Drain(0)]);
        assert_eq!(run(vec![new(0), new(1)], 2).0, []);
    }

    #[test]
    fn a_surge_left_by_a_crash_mid_rollout_is_finished_not_restarted() {
        // A daemon killed after adding instance 2: two old, one current, two wanted.
        let (steps, least) = run(vec![old(0, true), old(1, true), new(2)], 2);
        assert_eq!(steps, [Drain(1), Add, Drain(0)]);
        assert_eq!(least, 2);
    }
}
