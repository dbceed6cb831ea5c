//! What the read routes compute, without HTTP: each answer is a plain async function taking the
//! pool, the project and typed parameters and returning a typed result, built from a few SQL reads
//! and pure functions (the funnel's fold, bitmap unions, cohort arithmetic, running totals) that
//! are tested here without a server. Everything is scoped to one project. `crate::routes` calls
//! these; nothing here knows about requests, extractors or the cache, so the dependency runs one
//! way.

pub mod activity;
pub mod courses;
pub mod funnel;
pub mod groups;
pub mod identities;
pub mod instructor;
pub mod metrics;
pub mod persons;
pub mod users;

/// `a ÷ b`, or `None` when `b` is not positive (a rate of nothing is unknown, not zero).
pub fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ratio_of_nothing_is_unknown() {
        assert_eq!(super::ratio(1, 4), Some(0.25));
        assert_eq!(super::ratio(3, 0), None);
        assert_eq!(super::ratio(0, -1), None);
    }
}
