//! Which members run a check: rendezvous (highest-random-weight) hashing.
//!
//! Every (check, member) pair gets a pseudo-random weight from a hash of both names; a
//! check runs on the `replicas` members of highest weight (per listed location), and the
//! first of its runners by weight is its notifier of record. Adding or removing one of
//! `n` members changes the top of only about `1/n` of the checks, and every agent that
//! sees the same members computes the same answer without talking to the others.

use super::config::Placement;

/// A live member as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Member name.
    pub name: String,
    /// Its location.
    pub location: String,
}

/// 64-bit weight of `member` for `check` (FNV-1a over both names, then a SplitMix64
/// finaliser so close names spread over the whole range).
pub fn weight(check: &str, member: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in check.bytes().chain([0xff]).chain(member.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The members that run `check`, notifier of record first: per location in
/// `placement.locations` (or over every member when it lists none) the `replicas`
/// highest-weight members, all of them ordered by weight.
pub fn runners<'a>(
    check: &str,
    placement: &Placement,
    default_replicas: u32,
    members: &'a [Candidate],
) -> Vec<&'a Candidate> {
    let replicas = placement.replicas.unwrap_or(default_replicas) as usize;
    let mut ranked: Vec<(u64, &Candidate)> = members
        .iter()
        .map(|m| (weight(check, &m.name), m))
        .collect();
    // Highest weight first; the name breaks the (astronomically unlikely) tie.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let mut out: Vec<(u64, &Candidate)> = Vec::new();
    if placement.locations.is_empty() {
        out.extend(ranked.into_iter().take(replicas));
    } else {
        for loc in &placement.locations {
            out.extend(
                ranked
                    .iter()
                    .filter(|(_, m)| &m.location == loc)
                    .take(replicas)
                    .copied(),
            );
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    }
    out.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                name: format!("agent-{i}"),
                location: if i % 2 == 0 { "eu" } else { "us" }.to_string(),
            })
            .collect()
    }

    fn owners(checks: usize, ms: &[Candidate]) -> Vec<String> {
        (0..checks)
            .map(|c| {
                runners(&format!("check-{c}"), &Placement::new(), 1, ms)[0]
                    .name
                    .clone()
            })
            .collect()
    }

    #[test]
    fn one_runner_each_spread_evenly() {
        let ms = members(3);
        let own = owners(3000, &ms);
        for m in &ms {
            let n = own.iter().filter(|o| **o == m.name).count();
            assert!((850..=1150).contains(&n), "{} owns {n} of 3000", m.name);
        }
    }

    #[test]
    fn adding_a_member_moves_about_one_in_n() {
        let before = owners(3000, &members(3));
        let after = owners(3000, &members(4));
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Ideal: 1/4 of 3000 = 750; every moved check moved to the new member.
        assert!((600..=900).contains(&moved), "moved {moved} of 3000");
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(b, "agent-3");
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_checks() {
        let all = members(4);
        let before = owners(2000, &all);
        let fewer: Vec<Candidate> = all
            .iter()
            .filter(|m| m.name != "agent-1")
            .cloned()
            .collect();
        let after = owners(2000, &fewer);
        for (a, b) in before.iter().zip(&after) {
            if a != "agent-1" {
                assert_eq!(a, b, "a check of a surviving member moved");
            }
        }
    }

    #[test]
    fn locations_get_their_own_replicas_ordered_by_weight() {
        let ms = members(6);
        let p = Placement {
            replicas: Some(2),
            locations: vec!["eu".into(), "us".into()],
            quorum: 2,
        };
        let r = runners("pbx", &p, 1, &ms);
        assert_eq!(r.len(), 4);
        assert_eq!(r.iter().filter(|m| m.location == "eu").count(), 2);
        let ws: Vec<u64> = r.iter().map(|m| weight("pbx", &m.name)).collect();
        assert!(ws.windows(2).all(|w| w[0] >= w[1]));
        // A location with no member contributes nobody.
        let only_eu: Vec<Candidate> = ms.iter().filter(|m| m.location == "eu").cloned().collect();
        assert_eq!(runners("pbx", &p, 1, &only_eu).len(), 2);
    }

    #[test]
    fn replicas_beyond_members_take_everyone() {
        let ms = members(2);
        let p = Placement {
            replicas: Some(5),
            ..Placement::new()
        };
        assert_eq!(runners("x", &p, 1, &ms).len(), 2);
        assert!(runners("x", &p, 1, &[]).is_empty());
    }
}
